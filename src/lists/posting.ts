import type { InboxMail } from '../state/index.ts';
import { verpEncode } from '../core/listaddr.ts';
import { TOKEN_TTL_MS, type ListContext, type ListKit } from './kit.ts';
import { addressList, decodeWords, displayName, fieldValue, firstAddress, header, headerText, isAutomatic, isMailbox, mergeAddresses, phrase, plainText, splitMessage, type Field } from './message.ts';

/** Copies queued per step of a distribution; the inbox cursor moves after each step. */
const BATCH = 100;
/**
 * A distribution waits while the outbound queue holds more messages than
 * this: a 10,000-member list then never has all its copies in memory and
 * in the queue at once, and other mail is not stuck behind a whole list.
 */
const QUEUE_BACKLOG = 400;

/** A post to a list's address: the posting policy (held or refused), then distribution, digest and archive. */
export interface Posting {
  handlePost(c: ListContext, m: InboxMail, fields: Field[]): Promise<void>;
}

export function createPosting(kit: ListKit): Posting {
  const { log, now, store } = kit;

  async function hold(c: ListContext, m: InboxMail, fields: Field[], poster: string, reason: string): Promise<void> {
    const subject = decodeWords(header(fields, 'subject') ?? '(no subject)').slice(0, 200);
    const t = now();
    const heldId = store.hold({ tenant: c.tenant.id, list: c.name, poster, subject, reason, raw: m.raw, createdAt: t, expiresAt: t + TOKEN_TTL_MS });
    const token = kit.newToken(c, 'approve', c.cfg.owner, 'single', heldId);
    await kit.send(
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
          if (isMailbox(poster)) await kit.send(c, poster, `Your post to ${c.addr()} was not accepted`, `Only members may post to ${c.addr()}.\n`);
          return;
        }
        // Anyone can write a member's address into From:; only authentication aligned with its domain (checked at receipt) shows it is
        // theirs, and only for the domain the checks read there: a From: field another parser reads otherwise ("Ann <ann@x>" eve@y,
        // a comment holding an address) authenticates its other domain, never the member's.
        const posterDomain = poster.slice(poster.lastIndexOf('@') + 1);
        if (m.auth === 'none' || (m.auth !== null && m.authDomain !== posterDomain)) {
          l.info({ poster, authenticatedDomain: m.authDomain }, "member's post not authenticated: held");
          return hold(c, m, fields, poster, `it claims to be from the member ${poster}, but neither DKIM nor SPF authenticates ${poster.split('@')[1]} (it may be forged)`);
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

  /**
   * Whether the post goes out From: the list: always, never, or (`dmarc`)
   * when the domain of its From: publishes DMARC p=reject or p=quarantine,
   * since our copies cannot pass DMARC for that domain and its receivers
   * would refuse or junk them. A DNS failure: the From: is kept (logged).
   */
  async function mungeFrom(c: ListContext, m: InboxMail, fields: Field[]): Promise<boolean> {
    if (c.cfg.fromMunging !== 'dmarc') return c.cfg.fromMunging === 'always';
    const from = firstAddress(header(fields, 'from'));
    if (!kit.dmarc || !from) return false;
    const domain = from.slice(from.lastIndexOf('@') + 1);
    // A domain of ours: the copies are DKIM-signed with its own key (the From: domain's), so they pass its DMARC as they are.
    if (kit.registry.hostsDomain(domain)) return false;
    const who = { tenant: c.tenant.id, list: c.name, inbox: m.id, poster: from, domain };
    let policy: string | undefined;
    try {
      // What the inbound checks found for this very domain at receipt, when they found it; asked here otherwise.
      const found = m.authDmarc !== null && m.authDomain === domain.toLowerCase() ? m.authDmarc : undefined;
      policy = found !== undefined ? (found === 'absent' ? undefined : found) : await kit.dmarc.policy(domain);
    } catch (err) {
      log.warn({ ...who, err: (err as Error).message, code: (err as NodeJS.ErrnoException).code }, "post distributed with its From: unchanged: the DMARC policy of the poster's domain could not be looked up");
      return false;
    }
    if (policy !== 'reject' && policy !== 'quarantine') return false;
    log.info({ ...who, policy }, `From: rewritten to the list: the poster's domain publishes DMARC p=${policy}`);
    return true;
  }

  /** The post's header fields as every member gets them (without the per-member List-Unsubscribe); `munge`: From: the list (see mungeFrom). */
  function listHeaders(c: ListContext, fields: Field[], munge: boolean): string {
    const out: string[] = [];
    const fromField = fields.find((f) => f.name === 'from');
    const fromValue = header(fields, 'from') ?? '';
    const all = (name: string) => fields.filter((f) => f.name === name).flatMap((f) => addressList(fieldValue(f)));
    // Mailman's merge: the poster joins the post's own Reply-To, or its Cc when replies go to the list.
    const mergeInto = munge ? (c.cfg.replyTo === 'list' ? 'cc' : 'reply-to') : undefined;
    let hasSubject = false;
    for (const f of fields) {
      if (STRIP.has(f.name)) continue;
      if (f.name === 'subject' && c.cfg.subjectPrefix) {
        hasSubject = true;
        const v = fieldValue(f);
        out.push(v.includes(c.cfg.subjectPrefix) ? f.raw : `Subject: ${c.cfg.subjectPrefix} ${v}\r\n`);
        continue;
      }
      if (f.name === 'from' && munge) {
        const name = displayName(fromValue) || (firstAddress(fromValue) ?? 'someone').split('@')[0]!;
        const decoded = decodeWords(name);
        out.push(`From: ${phrase(`${decoded} via ${c.name}`)} <${c.addr()}>\r\n`);
        continue;
      }
      // The original From is ours to state: a poster's own X-Original-From does not pass.
      if (f.name === 'x-original-from' && munge) continue;
      if (f.name === 'reply-to' && (c.cfg.replyTo === 'list' || munge)) continue;
      if (f.name === mergeInto) continue;
      out.push(f.raw);
    }
    if (c.cfg.subjectPrefix && !hasSubject) out.push(`Subject: ${c.cfg.subjectPrefix}\r\n`);
    if (c.cfg.replyTo === 'list') out.push(`Reply-To: <${c.addr()}>\r\n`);
    if (munge) {
      // As written (folded, encoded words and all): the From that the list's From replaces.
      if (fromField) out.push(`X-Original-From:${fromField.raw.slice(fromField.raw.indexOf(':') + 1)}`);
      const merged = mergeAddresses(addressList(fromValue), all(mergeInto!));
      if (merged.length > 0) out.push(`${mergeInto === 'cc' ? 'Cc' : 'Reply-To'}: ${merged.join(',\r\n ')}\r\n`);
    }
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

  async function distribute(c: ListContext, m: InboxMail, fields: Field[], poster: string): Promise<void> {
    const { body } = splitMessage(m.raw);
    const common = Buffer.from(listHeaders(c, fields, await mungeFrom(c, m, fields)), 'latin1');
    // One ARC set per post (RFC 8617), over the post as members get it but for its per-member List-Unsubscribe, which the set does not cover.
    const head = Buffer.concat([await arcSet(c, common, body), common]);
    const sep = Buffer.from('\r\n');
    let cursor = m.cursor;
    let sent = 0;
    const t0 = now();
    for (;;) {
      // Bounded wait for the queue to drain below the backlog (polled: the queue offers no event, and a count is one indexed query).
      for (let i = 0; i < 6000 && !kit.stopped && kit.state.mailQueue.count() > QUEUE_BACKLOG; i++) await new Promise((r) => setTimeout(r, 10));
      const batch = store.deliveryBatch(c.tenant.id, c.name, cursor, BATCH);
      if (batch.length === 0) break;
      await Promise.all(
        batch.map((member) =>
          kit.mail.submit({
            from: c.addr(`-bounces+${verpEncode(member.address)}`),
            to: [member.address],
            raw: Buffer.concat([head, Buffer.from(kit.memberHeader(c, member.address)), sep, body]),
            tenant: c.tenant.id,
          }),
        ),
      );
      cursor = batch[batch.length - 1]!.id;
      // Progress is durable per batch: after a crash only the batch under way is queued again.
      store.inboxCursor(m.id, cursor);
      sent += batch.length;
      if (kit.stopped) return;
    }
    if (m.cursor === 0 && store.digestMembers(c.tenant.id, c.name).length > 0) store.addDigest(c.tenant.id, c.name, Buffer.concat([common, sep, body]), now());
    if (m.cursor === 0 && c.cfg.archive) archive(c, m, fields, poster);
    log.info({ tenant: c.tenant.id, list: c.name, inbox: m.id, poster, copies: sent, resumedAfter: m.cursor || undefined, ms: now() - t0 }, 'post distributed');
  }

  /** The ARC set for a post, or nothing (no sealer, or sealing failed: logged, and the post still goes). */
  async function arcSet(c: ListContext, head: Buffer, body: Buffer): Promise<Buffer> {
    if (!kit.sealer) return Buffer.alloc(0);
    try {
      return await kit.sealer.seal(Buffer.concat([head, Buffer.from('\r\n'), body]));
    } catch (err) {
      log.error({ tenant: c.tenant.id, list: c.name, err: (err as Error).message }, 'post distributed without an ARC seal: sealing failed');
      return Buffer.alloc(0);
    }
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


  return { handlePost };
}
