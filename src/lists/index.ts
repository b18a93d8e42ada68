import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ListInbox, ListMail, ListPages, MailSubmitter } from '../core/contracts.ts';
import type { Job, Service } from '../core/lifecycle.ts';
import type { Logger } from '../core/log.ts';
import { verpDecode, verpEncode } from '../core/listaddr.ts';
import type { ListConfig, Registry, Tenant } from '../core/registry.ts';
import type { ArchivedPost, InboxMail, ListToken, MemberMode, State } from '../state/index.ts';
import {
  composeNotice,
  decodeWords,
  displayName,
  fieldValue,
  firstAddress,
  header,
  headerText,
  isAutomatic,
  isMailbox,
  messageId,
  phrase,
  plainText,
  rfcDate,
  splitMessage,
  type Field,
} from './message.ts';
import { createListPages } from './pages.ts';

export interface ListsDeps {
  registry: Registry;
  state: State;
  log: Logger;
  /** The durable outbound queue: every copy and notice goes out through it. */
  mail: MailSubmitter;
  /** The clock (token expiry, bounce days); tests move it. */
  now?: () => number;
}

/** Tokens (confirmations, approvals) are good for 7 days. */
export const TOKEN_TTL_MS = 7 * 24 * 3600_000;
/** A second confirmation for the same address and action is not sent within this time (no mail bombs through the form). */
const RESEND_AFTER_MS = 24 * 3600_000;
/** Copies queued per step of a distribution; the inbox cursor moves after each step. */
const BATCH = 100;
/**
 * A distribution waits while the outbound queue holds more messages than
 * this: a 10,000-member list then never has all its copies in memory and
 * in the queue at once, and other mail is not stuck behind a whole list.
 */
const QUEUE_BACKLOG = 400;
/** Mailman's bounce_info_stale_after: a score older than this starts again from zero. */
const BOUNCE_STALE_MS = 7 * 24 * 3600_000;
const MAX_COMMAND_LINES = 10;

/** Everything about one list that its messages need, from config. */
export interface ListContext {
  tenant: Tenant;
  name: string;
  cfg: ListConfig;
  /** The tenant's first domain: the list's addresses and List-Id use it. */
  domain: string;
  /** `news@example.test`, `news-request@example.test`... */
  addr(suffix?: string): string;
  /** `<news.example.test>` (RFC 2919). */
  listId: string;
  /** `https://example.test/lists/news/` */
  web: string;
}

/** What the pages module may ask of the list service. */
export interface ListActions {
  context(tenantId: string, name: string): ListContext | undefined;
  requestSubscribe(c: ListContext, address: string, mode: MemberMode, via: string): Promise<void>;
  requestUnsubscribe(c: ListContext, address: string, via: string): Promise<void>;
  /** The live token behind `token` (not used up). */
  peek(c: ListContext, token: string): ListToken | undefined;
  /** Uses up a token: (un)subscribes, or approves/rejects a held post. Returns what was done, or undefined for a bad token. */
  confirm(c: ListContext, token: string, via: string, reject?: boolean): Promise<string | undefined>;
  unsubscribeSigned(c: ListContext, addressB64: string, sig: string, via: string): boolean | undefined;
  held(id: number): { poster: string; subject: string; text: string } | undefined;
  archiveMonths(c: ListContext): Array<{ month: string; n: number }>;
  archiveMonth(c: ListContext, month: string): ArchivedPost[];
  archived(c: ListContext, id: number): ArchivedPost | undefined;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** The HMAC key for signed unsubscribe URLs: 32 random bytes in `<data>/lists.key`, made on first start (mode 0600). */
function openKey(dataDir: string): Buffer {
  const file = path.join(dataDir, 'lists.key');
  try {
    return readFileSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  mkdirSync(dataDir, { recursive: true });
  try {
    writeFileSync(file, randomBytes(32), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return readFileSync(file);
}

/** The lists service and the interfaces main.ts wires into mail and http. */
export interface Lists {
  service: Service;
  inbox: ListInbox;
  pages: ListPages;
  actions: ListActions;
  /** Sends the digests of every list with posts waiting (the daily job; tests call it directly). */
  sendDigests(): Promise<void>;
}

/**
 * Mailing lists: commands and confirmations by mail and on the web, posting
 * policy with held posts, distribution through the durable queue with VERP
 * and the RFC 2369/2919/8058 headers, bounce scoring and daily digests.
 * Mail arrives through {@link ListInbox} (stored before the SMTP 250, acted
 * on in order afterwards); pages through {@link ListPages}.
 */
export function createListsService(d: ListsDeps): Lists {
  const log = d.log.child({ svc: 'lists' });
  const now = d.now ?? Date.now;
  const store = d.state.lists;
  let registry = d.registry;
  const key = openKey(registry.config.main.dataDir);
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = true;

  function context(tenantId: string, name: string): ListContext | undefined {
    const tenant = registry.tenants.get(tenantId);
    const cfg = tenant && registry.listConfig(tenant, name);
    if (!tenant || !cfg) return undefined;
    const domain = tenant.domains[0]!;
    const origin = cfg.webUrl ? new URL(cfg.webUrl).origin : `https://${domain}`;
    return {
      tenant,
      name,
      cfg,
      domain,
      addr: (suffix = '') => `${name}${suffix}@${domain}`,
      listId: `<${name}.${domain}>`,
      web: `${origin}/lists/${encodeURIComponent(name)}/`,
    };
  }

  function sign(c: ListContext, address: string): string {
    return createHmac('sha256', key).update(`unsubscribe\n${c.tenant.id}\n${c.name}\n${address}`).digest('base64url').slice(0, 22);
  }

  /** The per-member one-click URL (RFC 8058 §3.1: it must identify the member without any other state). */
  function unsubscribeUrl(c: ListContext, address: string): string {
    return `${c.web}unsubscribe/${Buffer.from(address).toString('base64url')}/${sign(c, address)}`;
  }

  async function send(c: ListContext, to: string, subject: string, text: string, headers: string[] = []): Promise<void> {
    const raw = composeNotice({ from: c.addr('-request'), to, subject, text, domain: c.domain, now: now(), headers: [`List-Id: ${c.listId}`, ...headers] });
    // Notices leave with the list's bounce address: a bounce of a confirmation is not a member's bounce.
    const qid = await d.mail.submit({ from: c.addr('-bounces'), to: [to], raw, tenant: c.tenant.id });
    log.debug({ tenant: c.tenant.id, list: c.name, to, subject, qid }, 'notice queued');
  }

  function newToken(c: ListContext, action: ListToken['action'], address: string, mode: MemberMode, heldId: number | null): string {
    const token = randomBytes(16).toString('hex');
    const t = now();
    store.addToken(sha256(token), { tenant: c.tenant.id, list: c.name, action, address, mode, heldId, createdAt: t, expiresAt: t + TOKEN_TTL_MS });
    return token;
  }

  async function requestSubscribe(c: ListContext, address: string, mode: MemberMode, via: string): Promise<void> {
    const l = log.child({ tenant: c.tenant.id, list: c.name, address, via });
    if (!isMailbox(address)) return l.info('subscribe request ignored: not a plain address');
    const m = store.member(c.tenant.id, c.name, address);
    if (m && m.mode === mode && !m.disabled) return l.info('subscribe request ignored: already a member');
    if (store.hasPending(c.tenant.id, c.name, 'subscribe', address, now() - RESEND_AFTER_MS, now())) {
      return l.info('subscribe request ignored: a confirmation was sent to this address less than a day ago');
    }
    const token = newToken(c, 'subscribe', address, mode, null);
    await send(
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
    const token = newToken(c, 'unsubscribe', address, 'single', null);
    await send(
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
      await send(c, t.address, `You have left ${c.addr()}`, `${t.address} is no longer subscribed to ${c.addr()}.\n`);
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
      if (isMailbox(h.poster)) await send(c, h.poster, `Your post to ${c.addr()} was not accepted`, `The list owner did not accept your post "${h.subject}".\n`);
      return 'rejected';
    }
    store.release(h, true, now());
    l.info({ held: h.id, poster: h.poster }, 'held post approved by the owner');
    kick();
    return 'approved';
  }

  async function welcome(c: ListContext, address: string, mode: MemberMode): Promise<void> {
    await send(
      c,
      address,
      `Welcome to ${c.addr()}`,
      `Welcome! ${address} is now subscribed to ${c.addr()}${mode === 'digest' ? ' and gets one digest a day' : ''}.\n` +
        (c.cfg.description ? `\n${c.cfg.description}\n` : '') +
        `\nTo post, write to ${c.addr()}.\nTo leave, open ${unsubscribeUrl(c, address)}\nor write "unsubscribe" to ${c.addr('-request')}.\n`,
      [`List-Unsubscribe: <mailto:${c.addr('-request')}?subject=unsubscribe>, <${unsubscribeUrl(c, address)}>`],
    );
  }

  function unsubscribeSigned(c: ListContext, addressB64: string, sig: string, via: string): boolean | undefined {
    const address = Buffer.from(addressB64, 'base64url').toString('utf8');
    const want = Buffer.from(sign(c, address));
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

  // ---- mail handling ----

  /** Commands of a -request mail: the Subject, else the first lines of the text. */
  function commands(fields: Field[], text: string): string[][] {
    const subject = decodeWords(header(fields, 'subject') ?? '')
      .replace(/^\s*((re|aw|fwd?|sv)\s*:\s*)+/i, '')
      .trim();
    const parse = (line: string) => line.trim().toLowerCase().split(/\s+/);
    const known = (w: string[]) => ['subscribe', 'unsubscribe', 'help', 'confirm', 'reject'].includes(w[0] ?? '');
    if (subject && known(parse(subject))) return [parse(subject)];
    const out: string[][] = [];
    for (const line of text.split(/\r?\n/)) {
      if (line.trim() === '') continue;
      const w = parse(line);
      if (!known(w) || out.length >= MAX_COMMAND_LINES) break;
      out.push(w);
    }
    return out;
  }

  async function handleRequest(c: ListContext, m: InboxMail, fields: Field[], who: string): Promise<void> {
    const l = log.child({ tenant: c.tenant.id, list: c.name, inbox: m.id, from: who });
    const cmds = commands(fields, plainText(splitMessage(m.raw)));
    if (cmds.length === 0) return l.info('request ignored: no command in the subject or the first lines');
    for (const [cmd, arg] of cmds) {
      if (cmd === 'subscribe') await requestSubscribe(c, who, arg === 'digest' ? 'digest' : 'single', 'mail');
      else if (cmd === 'unsubscribe') await requestUnsubscribe(c, who, 'mail');
      else if (cmd === 'confirm' || cmd === 'reject') await confirm(c, arg ?? '', 'mail', cmd === 'reject');
      else if (cmd === 'help') {
        await send(
          c,
          who,
          `Help for ${c.addr()}`,
          `${c.cfg.description ? `${c.cfg.description}\n\n` : ''}Commands, in the Subject of a message to ${c.addr('-request')}:\n` +
            `  subscribe          join the list\n  subscribe digest   join, one digest a day\n  unsubscribe        leave the list\n  help               this text\n\n` +
            `Or use the page ${c.web}\n`,
        );
        l.info('help sent');
      }
    }
  }

  async function handleBounce(c: ListContext, m: InboxMail): Promise<void> {
    const l = log.child({ tenant: c.tenant.id, list: c.name, inbox: m.id });
    const address = m.param ? verpDecode(m.param) : undefined;
    const member = address ? store.member(c.tenant.id, c.name, address) : undefined;
    if (!address || !member) return l.info({ param: m.param }, 'bounce ignored: not for a member of this list');
    // RFC 3464 §2.3.4: the Status of a recipient in the delivery-status part; 5.x.x is permanent, 4.x.x transient.
    const status = /^Status:\s*([45])\.\d{1,3}\.\d{1,3}/im.exec(m.raw.toString('latin1'))?.[1];
    if (!status) return l.info({ address }, 'bounce ignored: no delivery status in it');
    const t = now();
    const day = new Date(t).toISOString().slice(0, 10);
    if (member.bounceDay === day) return l.info({ address, score: member.bounceScore }, 'bounce not scored: this member already had one counted today');
    const stale = member.bounceDay !== null && t - Date.parse(`${member.bounceDay}T00:00:00Z`) > BOUNCE_STALE_MS;
    const score = (stale ? 0 : member.bounceScore) + (status === '5' ? 1 : 0.5);
    const disable = score >= c.cfg.bounceThreshold;
    store.setBounce(member.id, score, day, disable || member.disabled);
    l.info({ address, kind: status === '5' ? 'hard' : 'soft', score, threshold: c.cfg.bounceThreshold }, 'bounce scored');
    if (disable && !member.disabled) {
      l.warn({ address, score }, 'member disabled: too many bounces');
      await send(
        c,
        c.cfg.owner,
        `${address} disabled on ${c.addr()}`,
        `Mail to ${address} kept bouncing (score ${score}, threshold ${c.cfg.bounceThreshold}); delivery to it is stopped.\n` +
          `It stays a member; "makewaves list add ${address} ${c.addr()} --no-confirm" enables it again.\n`,
      );
    }
  }

  async function hold(c: ListContext, m: InboxMail, fields: Field[], poster: string, reason: string): Promise<void> {
    const subject = decodeWords(header(fields, 'subject') ?? '(no subject)').slice(0, 200);
    const t = now();
    const heldId = store.hold({ tenant: c.tenant.id, list: c.name, poster, subject, reason, raw: m.raw, createdAt: t, expiresAt: t + TOKEN_TTL_MS });
    const token = newToken(c, 'approve', c.cfg.owner, 'single', heldId);
    await send(
      c,
      c.cfg.owner,
      `confirm ${token}`,
      `A post to ${c.addr()} is held for your approval (${reason}).\n\n  From: ${poster}\n  Subject: ${subject}\n\n` +
        `To approve it, reply to this message. To see it, approve it or reject it, open:\n\n  ${c.web}moderate/${token}\n\n` +
        `You can also write "reject ${token}" to ${c.addr('-request')}. Without a decision it is dropped in 7 days.\n`,
      [`Reply-To: ${c.addr(`-confirm+${token}`)}`],
    );
    log.info({ tenant: c.tenant.id, list: c.name, inbox: m.id, held: heldId, poster, reason }, 'post held for the owner');
  }

  async function handlePost(c: ListContext, m: InboxMail, fields: Field[]): Promise<void> {
    const l = log.child({ tenant: c.tenant.id, list: c.name, inbox: m.id });
    // A post that already went through this list (a member's forward back to it, an auto-reply quoting it). RFC 2919 §3 makes List-Id the list's stable identity; like Mailman and mlmmj we take our own one on an incoming post as a loop.
    if (fields.some((f) => f.name === 'list-id' && fieldValue(f).toLowerCase().includes(c.listId.toLowerCase()))) {
      return l.warn({ sender: m.sender }, 'post dropped: it already carries this list\'s List-Id (a loop)');
    }
    const poster = firstAddress(header(fields, 'from')) ?? m.sender.toLowerCase();
    if (!m.approved) {
      const auto = isAutomatic(m.sender, fields);
      if (auto) return l.info({ sender: m.sender, why: auto }, 'post dropped: automatic mail (bounce or auto-reply) to the posting address');
      const policy = c.cfg.posting;
      if (policy === 'moderated') return hold(c, m, fields, poster, 'the list is moderated');
      if (policy === 'members') {
        const member = store.member(c.tenant.id, c.name, poster);
        if (!member) {
          if (c.cfg.nonMembers === 'hold') return hold(c, m, fields, poster, `${poster} is not a member`);
          l.info({ poster }, 'post refused: not a member');
          if (isMailbox(poster)) await send(c, poster, `Your post to ${c.addr()} was not accepted`, `Only members may post to ${c.addr()}.\n`);
          return;
        }
      }
    }
    await distribute(c, m, fields, poster);
  }

  /** Fields we set or that must not pass through a list (RFC 2369 and 2919 fields of another list, a moderation password). */
  const STRIP = new Set([
    'list-id',
    'list-post',
    'list-help',
    'list-subscribe',
    'list-unsubscribe',
    'list-unsubscribe-post',
    'list-archive',
    'list-owner',
    'precedence',
    'approved',
    'approve',
    'return-path',
  ]);

  /** The post's header fields as every member gets them (without the per-member List-Unsubscribe). */
  function listHeaders(c: ListContext, fields: Field[]): string {
    const out: string[] = [];
    const fromValue = header(fields, 'from') ?? '';
    const posterReplyTo = header(fields, 'reply-to');
    let hasSubject = false;
    for (const f of fields) {
      if (STRIP.has(f.name)) continue;
      if (f.name === 'subject' && c.cfg.subjectPrefix) {
        hasSubject = true;
        const v = fieldValue(f);
        out.push(v.includes(c.cfg.subjectPrefix) ? f.raw : `Subject: ${c.cfg.subjectPrefix} ${v}\r\n`);
        continue;
      }
      if (f.name === 'from' && c.cfg.fromMunging === 'always') {
        const name = displayName(fromValue) || (firstAddress(fromValue) ?? 'someone').split('@')[0]!;
        const decoded = decodeWords(name);
        out.push(`From: ${phrase(`${decoded} via ${c.name}`)} <${c.addr()}>\r\n`);
        continue;
      }
      if (f.name === 'reply-to' && (c.cfg.replyTo === 'list' || c.cfg.fromMunging === 'always')) continue;
      out.push(f.raw);
    }
    if (c.cfg.subjectPrefix && !hasSubject) out.push(`Subject: ${c.cfg.subjectPrefix}\r\n`);
    if (c.cfg.replyTo === 'list') out.push(`Reply-To: <${c.addr()}>\r\n`);
    else if (c.cfg.fromMunging === 'always') out.push(`Reply-To: ${posterReplyTo ?? fromValue}\r\n`);
    const desc = c.cfg.description ? `${headerText(c.cfg.description).includes('=?') ? headerText(c.cfg.description) : phrase(c.cfg.description)} ` : '';
    out.push(
      `List-Id: ${desc}${c.listId}\r\n`,
      `List-Post: <mailto:${c.addr()}>\r\n`,
      `List-Help: <mailto:${c.addr('-request')}?subject=help>\r\n`,
      `List-Subscribe: <mailto:${c.addr('-request')}?subject=subscribe>, <${c.web}>\r\n`,
      `List-Owner: <mailto:${c.addr('-owner')}>\r\n`,
      ...(c.cfg.archive ? [`List-Archive: <${c.web}archive/>\r\n`] : []),
      'Precedence: list\r\n',
      'List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n',
    );
    return out.join('');
  }

  function memberHeader(c: ListContext, address: string): string {
    return `List-Unsubscribe: <mailto:${c.addr('-request')}?subject=unsubscribe>,\r\n <${unsubscribeUrl(c, address)}>\r\n`;
  }

  async function distribute(c: ListContext, m: InboxMail, fields: Field[], poster: string): Promise<void> {
    const { body } = splitMessage(m.raw);
    const head = Buffer.from(listHeaders(c, fields), 'latin1');
    const sep = Buffer.from('\r\n');
    let cursor = m.cursor;
    let sent = 0;
    const t0 = now();
    for (;;) {
      // Bounded wait for the queue to drain below the backlog (polled: the queue offers no event, and a count is one indexed query).
      for (let i = 0; i < 6000 && !stopped && d.state.mailQueue.count() > QUEUE_BACKLOG; i++) await new Promise((r) => setTimeout(r, 10));
      const batch = store.deliveryBatch(c.tenant.id, c.name, cursor, BATCH);
      if (batch.length === 0) break;
      await Promise.all(
        batch.map((member) =>
          d.mail.submit({
            from: c.addr(`-bounces+${verpEncode(member.address)}`),
            to: [member.address],
            raw: Buffer.concat([head, Buffer.from(memberHeader(c, member.address)), sep, body]),
            tenant: c.tenant.id,
          }),
        ),
      );
      cursor = batch[batch.length - 1]!.id;
      // Progress is durable per batch: after a crash only the batch under way is queued again.
      store.inboxCursor(m.id, cursor);
      sent += batch.length;
      if (stopped) return;
    }
    if (m.cursor === 0 && store.digestMembers(c.tenant.id, c.name).length > 0) store.addDigest(c.tenant.id, c.name, Buffer.concat([head, sep, body]), now());
    if (m.cursor === 0 && c.cfg.archive) archive(c, m, fields, poster);
    log.info({ tenant: c.tenant.id, list: c.name, inbox: m.id, poster, copies: sent, resumedAfter: m.cursor || undefined, ms: now() - t0 }, 'post distributed');
  }

  async function handle(m: InboxMail): Promise<void> {
    const c = context(m.tenant, m.list);
    if (!c) return log.warn({ tenant: m.tenant, list: m.list, inbox: m.id }, 'mail for a list that is no longer configured; dropped');
    const { fields } = splitMessage(m.raw);
    if (m.role === 'post') return handlePost(c, m, fields);
    if (m.role === 'bounces') return handleBounce(c, m);
    const who = firstAddress(header(fields, 'from')) ?? (isMailbox(m.sender.toLowerCase()) ? m.sender.toLowerCase() : undefined);
    const auto = isAutomatic(m.sender, fields);
    if (auto || !who) {
      return log.info({ tenant: c.tenant.id, list: c.name, inbox: m.id, role: m.role, sender: m.sender, why: auto ?? 'no sender address' }, 'command mail ignored');
    }
    if (m.role === 'subscribe') return requestSubscribe(c, who, 'single', 'mail');
    if (m.role === 'unsubscribe') return requestUnsubscribe(c, who, 'mail');
    if (m.role === 'confirm') {
      await confirm(c, m.param, 'mail');
      return;
    }
    return handleRequest(c, m, fields, who);
  }

  /** Works through the inbox in order; a message leaves it once handled. One that fails is logged and kept, and tried again when the next list mail arrives or at the next start. */
  function kick(): void {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = (async () => {
      const failed = new Set<number>();
      do {
        again = false;
        for (const id of store.inboxIds()) {
          if (stopped) return;
          if (failed.has(id)) continue;
          const m = store.inboxGet(id);
          if (!m) continue;
          try {
            await handle(m);
            if (stopped && m.role === 'post') {
              // A distribution cut short by stop keeps its row and cursor.
              const left = store.inboxGet(id);
              if (left && store.deliveryBatch(m.tenant, m.list, left.cursor, 1).length > 0) return;
            }
            store.inboxDone(id);
          } catch (err) {
            failed.add(id);
            log.error({ inbox: id, tenant: m.tenant, list: m.list, err: (err as Error).message }, 'list mail could not be handled; kept and tried again with the next list mail or start');
          }
        }
      } while (again);
    })().finally(() => {
      running = undefined;
    });
  }

  /** Keeps a distributed post for the archive pages: decoded text only (no HTML part is ever kept). */
  function archive(c: ListContext, m: InboxMail, fields: Field[], poster: string): void {
    const subject = decodeWords(header(fields, 'subject') ?? '').slice(0, 300) || '(no subject)';
    const thread = subject
      .replace(/^\s*((re|aw|fwd?|sv)\s*:\s*|\[[^\]]*\]\s*)+/i, '')
      .trim()
      .toLowerCase();
    const at = now();
    store.archive(c.tenant.id, c.name, { month: new Date(at).toISOString().slice(0, 7), at, poster, subject, thread, text: plainText(splitMessage(m.raw)).slice(0, 100_000) });
  }

  // ---- digests ----

  async function sendDigests(): Promise<void> {
    for (const { tenant, list } of store.digestLists()) {
      const c = context(tenant, list);
      const posts = store.digestPosts(tenant, list);
      const last = posts[posts.length - 1]?.id ?? 0;
      const members = c ? store.digestMembers(tenant, list) : [];
      if (c && members.length > 0 && posts.length > 0) {
        const boundary = `digest-${randomBytes(12).toString('hex')}`;
        // RFC 2046 §5.1.5: in multipart/digest each part is message/rfc822 by default.
        const parts = posts.map((p) => Buffer.concat([Buffer.from(`--${boundary}\r\n\r\n`), p.raw, Buffer.from('\r\n')]));
        const date = new Date(now()).toISOString().slice(0, 10);
        const head =
          `From: ${c.addr()}\r\nTo: ${c.addr()}\r\nSubject: ${c.cfg.subjectPrefix ? `${c.cfg.subjectPrefix} ` : ''}${c.name} digest, ${date}, ${posts.length} message${posts.length === 1 ? '' : 's'}\r\n` +
          `Date: ${rfcDate(now())}\r\nMessage-ID: ${messageId(c.domain)}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/digest; boundary="${boundary}"\r\n` +
          `List-Id: ${c.listId}\r\nList-Post: <mailto:${c.addr()}>\r\nList-Help: <mailto:${c.addr('-request')}?subject=help>\r\nPrecedence: list\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n`;
        const tail = Buffer.concat([...parts, Buffer.from(`--${boundary}--\r\n`)]);
        for (const member of members) {
          await d.mail.submit({
            from: c.addr(`-bounces+${verpEncode(member)}`),
            to: [member],
            raw: Buffer.concat([Buffer.from(head), Buffer.from(memberHeader(c, member)), Buffer.from('\r\n'), tail]),
            tenant,
          });
        }
        log.info({ tenant, list, posts: posts.length, members: members.length }, 'digest sent');
      }
      store.dropDigest(tenant, list, last);
    }
  }

  const actions: ListActions = {
    context,
    requestSubscribe,
    requestUnsubscribe,
    peek,
    confirm,
    unsubscribeSigned,
    held,
    archiveMonths: (c) => store.archiveMonths(c.tenant.id, c.name),
    archiveMonth: (c, month) => store.archiveMonth(c.tenant.id, c.name, month),
    archived: (c, id) => store.archived(c.tenant.id, c.name, id),
  };

  return {
    actions,
    inbox: {
      async receive(m: ListMail): Promise<void> {
        const id = store.receive(m, now());
        log.debug({ inbox: id, tenant: m.tenant, list: m.list, role: m.role }, 'list mail stored');
        kick();
      },
    },
    pages: createListPages(actions, log, now),
    service: {
      name: 'lists',
      async start() {
        stopped = false;
        const left = store.inboxIds().length;
        if (left > 0) log.info({ waiting: left }, 'resuming list mail received before the last stop');
        kick();
        return [];
      },
      async stop(graceMs) {
        stopped = true;
        if (running) {
          let t: NodeJS.Timeout | undefined;
          await Promise.race([running, new Promise<void>((resolve) => (t = setTimeout(resolve, graceMs)))]);
          clearTimeout(t);
        }
      },
      reload(next) {
        registry = next;
      },
      jobs(): Job[] {
        return [
          {
            name: 'expire list tokens',
            schedule: '23 * * * *',
            run: () => {
              const n = store.expire(now());
              if (n.tokens || n.held) log.info(n, 'expired list tokens and held posts removed');
            },
          },
          { name: 'send list digests', schedule: '0 6 * * *', run: sendDigests },
        ];
      },
    },
    sendDigests,
  };
}
