import { timingSafeEqual } from 'node:crypto';
import type { ListToken, MemberMode } from '../state/index.ts';
import { sha256, type ListContext, type ListKit } from './kit.ts';
import { isMailbox, plainText, splitMessage } from './message.ts';

/** A second confirmation for the same address and action is not sent within this time (no mail bombs through the form). */
const RESEND_AFTER_MS = 24 * 3600_000;

/** Joining and leaving a list, and the owner's decisions on held posts: everything a token confirms. */
export interface Membership {
  requestSubscribe(c: ListContext, address: string, mode: MemberMode, via: string): Promise<void>;
  requestUnsubscribe(c: ListContext, address: string, via: string): Promise<void>;
  /** The live token behind `token` (not used up). */
  peek(c: ListContext, token: string): ListToken | undefined;
  /** Uses up a token: (un)subscribes, or approves/rejects a held post. Returns what was done, or undefined for a bad token. */
  confirm(c: ListContext, token: string, via: string, reject?: boolean): Promise<string | undefined>;
  unsubscribeSigned(c: ListContext, addressB64: string, sig: string, via: string): boolean | undefined;
  held(id: number): { poster: string; subject: string; text: string } | undefined;
}

/** `approved` is called when the owner approves a held post: the post is released into the inbox, which must be worked through again. */
export function createMembership(kit: ListKit, approved: () => void): Membership {
  const { log, now, store } = kit;

  async function requestSubscribe(c: ListContext, address: string, mode: MemberMode, via: string): Promise<void> {
    const l = log.child({ tenant: c.tenant.id, list: c.name, address, via });
    if (!isMailbox(address)) return l.info('subscribe request ignored: not a plain address');
    const m = store.member(c.tenant.id, c.name, address);
    if (m && m.mode === mode && !m.disabled) return l.info('subscribe request ignored: already a member');
    if (store.hasPending(c.tenant.id, c.name, 'subscribe', address, now() - RESEND_AFTER_MS, now())) {
      return l.info('subscribe request ignored: a confirmation was sent to this address less than a day ago');
    }
    const token = kit.newToken(c, 'subscribe', address, mode, null);
    await kit.send(
      c,
      address,
      `confirm ${token}`,
      `Someone (perhaps you) asked to subscribe ${address} to the list ${c.addr()}${mode === 'digest' ? ' (daily digest)' : ''}.\n\n` +
        `To confirm, reply to this message, or open this page and press the button:\n\n  ${c.web}confirm/${token}\n\n` +
        `If you did not ask for this, ignore this message: nothing happens without your confirmation.\nThe request expires in 7 days.\n`,
      [`Reply-To: ${c.addr(`-confirm+${token}`)}`],
    );
    l.info('confirmation sent for a subscription');
  }

  async function requestUnsubscribe(c: ListContext, address: string, via: string): Promise<void> {
    const l = log.child({ tenant: c.tenant.id, list: c.name, address, via });
    if (!isMailbox(address) || !store.member(c.tenant.id, c.name, address)) return l.info('unsubscribe request ignored: not a member');
    if (store.hasPending(c.tenant.id, c.name, 'unsubscribe', address, now() - RESEND_AFTER_MS, now())) {
      return l.info('unsubscribe request ignored: a confirmation was sent to this address less than a day ago');
    }
    const token = kit.newToken(c, 'unsubscribe', address, 'single', null);
    await kit.send(
      c,
      address,
      `confirm ${token}`,
      `Someone (perhaps you) asked to unsubscribe ${address} from the list ${c.addr()}.\n\n` +
        `To confirm, reply to this message, or open this page and press the button:\n\n  ${c.web}confirm/${token}\n\n` +
        `If you did not ask for this, ignore this message. The request expires in 7 days.\n`,
      [`Reply-To: ${c.addr(`-confirm+${token}`)}`],
    );
    l.info('confirmation sent for an unsubscription');
  }

  function peek(c: ListContext, token: string): ListToken | undefined {
    if (!/^[0-9a-f]{32}$/.test(token)) return undefined;
    return store.peekToken(sha256(token), c.tenant.id, c.name, now());
  }

  async function confirm(c: ListContext, token: string, via: string, reject = false): Promise<string | undefined> {
    const l = log.child({ tenant: c.tenant.id, list: c.name, via });
    const live = peek(c, token);
    // A reject needs an approval token; anything else must not be used up by a wrong command.
    if (!live || (reject && live.action !== 'approve')) {
      l.info({ token: token.slice(0, 8) }, 'confirmation refused: unknown, used or expired token');
      return undefined;
    }
    const t = store.takeToken(sha256(token), c.tenant.id, c.name, now());
    if (!t) {
      l.info({ token: token.slice(0, 8) }, 'confirmation refused: unknown, used or expired token');
      return undefined;
    }
    if (t.action === 'subscribe') {
      store.addMember(c.tenant.id, c.name, t.address, t.mode, now());
      l.info({ address: t.address, mode: t.mode }, 'member subscribed (confirmed)');
      await welcome(c, t.address, t.mode);
      return 'subscribed';
    }
    if (t.action === 'unsubscribe') {
      store.removeMember(c.tenant.id, c.name, t.address);
      l.info({ address: t.address }, 'member unsubscribed (confirmed)');
      await kit.send(c, t.address, `You have left ${c.addr()}`, `${t.address} is no longer subscribed to ${c.addr()}.\n`);
      return 'unsubscribed';
    }
    const h = t.heldId === null ? undefined : store.held(t.heldId);
    if (!h) {
      l.info({ held: t.heldId }, 'moderation ignored: the held post is gone');
      return undefined;
    }
    if (reject) {
      store.release(h, false, now());
      l.info({ held: h.id, poster: h.poster }, 'held post rejected by the owner');
      if (isMailbox(h.poster)) await kit.send(c, h.poster, `Your post to ${c.addr()} was not accepted`, `The list owner did not accept your post "${h.subject}".\n`);
      return 'rejected';
    }
    store.release(h, true, now());
    l.info({ held: h.id, poster: h.poster }, 'held post approved by the owner');
    approved();
    return 'approved';
  }

  async function welcome(c: ListContext, address: string, mode: MemberMode): Promise<void> {
    const url = kit.unsubscribeUrl(c, address);
    await kit.send(
      c,
      address,
      `Welcome to ${c.addr()}`,
      `Welcome! ${address} is now subscribed to ${c.addr()}${mode === 'digest' ? ' and gets one digest a day' : ''}.\n` +
        (c.cfg.description ? `\n${c.cfg.description}\n` : '') +
        `\nTo post, write to ${c.addr()}.\nTo leave, open ${url}\nor write "unsubscribe" to ${c.addr('-request')}.\n`,
      [`List-Unsubscribe: <mailto:${c.addr('-request')}?subject=unsubscribe>, <${url}>`],
    );
  }

  function unsubscribeSigned(c: ListContext, addressB64: string, sig: string, via: string): boolean | undefined {
    const address = Buffer.from(addressB64, 'base64url').toString('utf8');
    const want = Buffer.from(kit.sign(c, address));
    const got = Buffer.from(sig);
    if (!isMailbox(address) || want.length !== got.length || !timingSafeEqual(want, got)) {
      log.info({ tenant: c.tenant.id, list: c.name, via }, 'one-click unsubscribe refused: bad signature');
      return undefined;
    }
    const was = store.removeMember(c.tenant.id, c.name, address);
    log.info({ tenant: c.tenant.id, list: c.name, address, via, was }, was ? 'member unsubscribed (one-click)' : 'one-click unsubscribe: not a member');
    return was;
  }

  function held(id: number): { poster: string; subject: string; text: string } | undefined {
    const h = store.held(id);
    if (!h) return undefined;
    return { poster: h.poster, subject: h.subject, text: plainText(splitMessage(h.raw)).slice(0, 20_000) };
  }

  return { requestSubscribe, requestUnsubscribe, peek, confirm, unsubscribeSigned, held };
}
