import { randomBytes } from 'node:crypto';
import { verpEncode } from '../core/listaddr.ts';
import type { ListKit } from './kit.ts';
import { messageId, rfcDate } from './message.ts';

/** Sends the digest of every list with posts waiting to its digest members, as one multipart/digest each (RFC 2046 §5.1.5). */
export function digestSender(kit: ListKit): () => Promise<void> {
  const { log, now, store } = kit;

  return async function sendDigests(): Promise<void> {
    for (const { tenant, list } of store.digestLists()) {
      const c = kit.context(tenant, list);
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
          await kit.mail.submit({
            from: c.addr(`-bounces+${verpEncode(member)}`),
            to: [member],
            raw: Buffer.concat([Buffer.from(head), Buffer.from(kit.memberHeader(c, member)), Buffer.from('\r\n'), tail]),
            tenant,
          });
        }
        log.info({ tenant, list, posts: posts.length, members: members.length }, 'digest sent');
      }
      store.dropDigest(tenant, list, last);
    }
  };
}
