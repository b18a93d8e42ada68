import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HttpOutcome, ListPageRequest, ListPages } from '../core/contracts.ts';
import type { Logger } from '../core/log.ts';
import { replyCode } from '../core/errors.ts';
import { clientFields, clientKey } from '../lib/peers.ts';
import type { ListActions } from './index.ts';
import type { ListContext } from './kit.ts';
import { isMailbox } from './message.ts';

/** Largest form body we read (an address and two flags). */
const MAX_BODY = 8 * 1024;
/**
 * Subscribe/unsubscribe form requests one client address may make per hour:
 * each one makes the list mail an address of the client's choosing, so the
 * form must not become a way to send confirmations in bulk.
 */
export const FORM_PER_IP_PER_HOUR = 10;
const HOUR_MS = 3600_000;

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
/** Escapes text for HTML element content and quoted attribute values. */
export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESC[c]!);
}

function page(res: ServerResponse, status: number, title: string, bodyHtml: string, head: boolean): HttpOutcome {
  const html = Buffer.from(
    `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${esc(title)}</title>` +
      `<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em;color:#222}pre{white-space:pre-wrap;background:#f4f4f4;padding:1em}</style>` +
      `</head><body><h1>${esc(title)}</h1>${bodyHtml}</body></html>\n`,
  );
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': html.length,
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    // The URLs carry tokens: they must not leak to other sites through Referer, and nothing but our own forms runs here.
    'Referrer-Policy': 'no-referrer',
    'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
  });
  res.end(head ? undefined : html);
  return { status, bytes: head ? 0 : html.length };
}

/** Reads an application/x-www-form-urlencoded body (or any body, as text) up to MAX_BODY; undefined when larger. */
async function readForm(req: IncomingMessage): Promise<URLSearchParams | undefined> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > MAX_BODY) return undefined;
    chunks.push(c);
  }
  const body = Buffer.concat(chunks).toString('utf8');
  // RFC 8058 §3.1 allows multipart/form-data too; its part for the key is found by the plain text match below.
  if (/^multipart\/form-data/i.test(req.headers['content-type'] ?? '')) {
    const params = new URLSearchParams();
    if (/name="List-Unsubscribe"\r\n\r\nOne-Click\r\n/.test(body)) params.set('List-Unsubscribe', 'One-Click');
    return params;
  }
  return new URLSearchParams(body);
}

/**
 * Hides e-mail addresses from harvesters: `ann@remote.test` becomes
 * `ann (at) r…` (the domain is cut, so nothing can be turned back into an address).
 */
export function obfuscate(text: string): string {
  return text.replace(/([A-Za-z0-9._%+=-]+)@([A-Za-z0-9])[A-Za-z0-9.-]*/g, '$1 (at) $2…');
}

/** The list pages on the tenant's site: subscribe form, confirm page, one-click unsubscribe, moderation. */
export function createListPages(lists: ListActions, rootLog: Logger, now: () => number = Date.now): ListPages {
  const log = rootLog.child({ svc: 'lists' });
  /** Client key (an IPv6 client by its /64) → form requests in the current hour (entries older than an hour are dropped as the map is used). */
  const perIp = new Map<string, { start: number; n: number }>();
  function allowed(ip: string): boolean {
    const t = now();
    const key = clientKey(ip);
    let w = perIp.get(key);
    if (!w || t - w.start >= HOUR_MS) {
      if (perIp.size > 10_000) for (const [k, v] of perIp) if (t - v.start >= HOUR_MS) perIp.delete(k);
      w = { start: t, n: 0 };
      perIp.set(key, w);
    }
    return ++w.n <= FORM_PER_IP_PER_HOUR;
  }

  async function front(r: ListPageRequest, c: ListContext, head: boolean): Promise<HttpOutcome> {
    if (r.req.method === 'POST') {
      const form = await readForm(r.req);
      if (!form) return page(r.res, replyCode('TOO_LARGE', 'http'), 'Too large', '<p>The form was larger than this page accepts.</p>', false);
      const address = (form.get('email') ?? '').trim().toLowerCase();
      const action = form.get('action');
      if (!isMailbox(address) || (action !== 'subscribe' && action !== 'unsubscribe')) {
        log.info({ tenant: c.tenant.id, list: c.name, remote: r.remote }, 'list form refused: not an address or no action');
        return page(r.res, 400, 'Please check the form', `<p>That is not an e-mail address.</p><p><a href="./">Back</a></p>`, false);
      }
      const via = `web ${r.remote}`;
      if (!allowed(r.remote)) {
        log.info({ tenant: c.tenant.id, list: c.name, ...clientFields(r.remote), limit: FORM_PER_IP_PER_HOUR }, 'list form refused: too many requests from this address this hour');
        r.res.setHeader('Retry-After', '3600');
        return page(r.res, replyCode('RATE_LIMITED', 'http'), 'Too many requests', '<p>Too many requests from your address; please try again in an hour.</p>', false);
      }
      if (action === 'subscribe') await lists.requestSubscribe(c, address, form.get('digest') ? 'digest' : 'single', via);
      else await lists.requestUnsubscribe(c, address, via);
      // The same answer whatever the state of the address: the page tells no one who is a member.
      return page(
        r.res,
        200,
        'Check your mail',
        `<p>If this request can be carried out, a message asking for confirmation was sent to <b>${esc(address)}</b>. Nothing changes until it is confirmed.</p>`,
        false,
      );
    }
    const desc = c.cfg.description ? `<p>${esc(c.cfg.description)}</p>` : '';
    return page(
      r.res,
      200,
      c.addr(),
      `${desc}<form method="post" action="./"><p><label>E-mail address <input type="email" name="email" required></label></p>` +
        `<p><label><input type="checkbox" name="digest" value="1"> one digest a day instead of every message</label></p>` +
        `<p><button name="action" value="subscribe">Subscribe</button> <button name="action" value="unsubscribe">Unsubscribe</button></p></form>` +
        `<p>Either way you get a message asking you to confirm.</p>`,
      head,
    );
  }

  async function confirmPage(r: ListPageRequest, c: ListContext, token: string, head: boolean): Promise<HttpOutcome> {
    const gone = () => page(r.res, 404, 'Link not valid', '<p>This link is unknown, was already used, or has expired.</p>', head);
    const t = lists.peek(c, token);
    if (r.req.method === 'POST') {
      await readForm(r.req);
      const done = await lists.confirm(c, token, `web ${r.remote}`);
      if (!done) return gone();
      return page(r.res, 200, 'Done', `<p>${done === 'subscribed' ? `You are now subscribed to ${esc(c.addr())}.` : done === 'unsubscribed' ? `You have left ${esc(c.addr())}.` : 'Done.'}</p>`, false);
    }
    // GET only shows the button: mail scanners follow links, and must not confirm anything (Mailman does the same).
    if (!t || t.action === 'approve') return gone();
    const what = t.action === 'subscribe' ? `subscribe <b>${esc(t.address)}</b> to` : `unsubscribe <b>${esc(t.address)}</b> from`;
    return page(r.res, 200, 'Please confirm', `<p>Press the button to ${what} ${esc(c.addr())}.</p><form method="post"><button>Confirm</button></form>`, head);
  }

  async function unsubscribePage(r: ListPageRequest, c: ListContext, who: string, sig: string, head: boolean): Promise<HttpOutcome> {
    if (r.req.method === 'POST') {
      const form = await readForm(r.req);
      // RFC 8058 §3.1: the POST body is "List-Unsubscribe=One-Click".
      if (!form || form.get('List-Unsubscribe') !== 'One-Click') {
        return page(r.res, 400, 'Not understood', '<p>This address takes the one-click unsubscribe request (RFC 8058) only.</p>', false);
      }
      const done = lists.unsubscribeSigned(c, who, sig, `web ${r.remote}`);
      if (done === undefined) return page(r.res, 403, 'Link not valid', '<p>This unsubscribe link is not valid.</p>', false);
      return page(r.res, 200, 'Unsubscribed', `<p>You will get no more mail from ${esc(c.addr())}.</p>`, false);
    }
    return page(
      r.res,
      200,
      `Leave ${c.addr()}`,
      `<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button>Unsubscribe</button></form>`,
      head,
    );
  }

  async function moderatePage(r: ListPageRequest, c: ListContext, token: string, head: boolean): Promise<HttpOutcome> {
    const gone = () => page(r.res, 404, 'Link not valid', '<p>This link is unknown, was already used, or has expired.</p>', head);
    const t = lists.peek(c, token);
    if (!t || t.action !== 'approve') {
      if (r.req.method === 'POST') await readForm(r.req);
      return gone();
    }
    if (r.req.method === 'POST') {
      const form = await readForm(r.req);
      const action = form?.get('action');
      if (action !== 'approve' && action !== 'reject') return page(r.res, 400, 'Not understood', '<p>Choose approve or reject.</p>', false);
      const done = await lists.confirm(c, token, `web ${r.remote}`, action === 'reject');
      if (!done) return gone();
      return page(r.res, 200, done === 'approved' ? 'Approved' : 'Rejected', `<p>The post was ${esc(done)}.</p>`, false);
    }
    const h = t.heldId === null ? undefined : lists.held(t.heldId);
    if (!h) return gone();
    // The post is shown as escaped text only: a poster's HTML never runs on the owner's site.
    return page(
      r.res,
      200,
      'Held post',
      `<p>From: ${esc(h.poster)}<br>Subject: ${esc(h.subject)}</p><pre>${esc(h.text)}</pre>` +
        `<form method="post"><button name="action" value="approve">Approve</button> <button name="action" value="reject">Reject</button></form>`,
      head,
    );
  }

  /** The archive: months, then threads of a month, then one post; escaped text only, addresses obfuscated. */
  function archivePage(r: ListPageRequest, c: ListContext, month: string | undefined, id: string | undefined, head: boolean): HttpOutcome {
    const notFound = () => page(r.res, 404, 'Not found', '<p>Nothing is published at this address.</p>', head);
    if (!c.cfg.archive) return notFound();
    if (r.req.method === 'POST') {
      r.res.setHeader('Allow', 'GET, HEAD');
      return page(r.res, 405, 'Method not allowed', '', false);
    }
    const base = `/lists/${encodeURIComponent(c.name)}/archive/`;
    if (month === undefined) {
      const months = lists.archiveMonths(c);
      const items = months.map((m) => `<li><a href="${base}${esc(m.month)}/">${esc(m.month)}</a> (${m.n})</li>`).join('');
      return page(r.res, 200, `Archive of ${c.addr()}`, months.length ? `<ul>${items}</ul>` : '<p>No posts yet.</p>', head);
    }
    if (!/^\d{4}-\d{2}$/.test(month)) return notFound();
    if (id === undefined) {
      const posts = lists.archiveMonth(c, month);
      if (posts.length === 0) return notFound();
      const threads = new Map<string, typeof posts>();
      for (const p of posts) threads.set(p.thread, [...(threads.get(p.thread) ?? []), p]);
      const html = [...threads.values()]
        .map((t) => `<li>${t.map((p) => `<a href="${base}${month}/${p.id}">${esc(obfuscate(p.subject))}</a> <small>${esc(obfuscate(p.poster))}, ${new Date(p.at).toISOString().slice(0, 10)}</small>`).join('<br>')}</li>`)
        .join('');
      return page(r.res, 200, `${c.addr()}, ${month}`, `<p><a href="${base}">All months</a></p><ul>${html}</ul>`, head);
    }
    const p = /^\d{1,15}$/.test(id) ? lists.archived(c, Number(id)) : undefined;
    if (!p || p.month !== month) return notFound();
    return page(
      r.res,
      200,
      obfuscate(p.subject),
      `<p><a href="${base}${month}/">${esc(month)}</a></p><p>From: ${esc(obfuscate(p.poster))}<br>Date: ${new Date(p.at).toUTCString()}</p><pre>${esc(obfuscate(p.text))}</pre>`,
      head,
    );
  }

  return {
    async handle(r: ListPageRequest): Promise<HttpOutcome> {
      const head = r.req.method === 'HEAD';
      const c = lists.context(r.tenant.id, r.list);
      if (!c) return page(r.res, 404, 'Not found', '<p>No such list.</p>', head);
      if (r.req.method !== 'GET' && r.req.method !== 'HEAD' && r.req.method !== 'POST') {
        r.res.setHeader('Allow', 'GET, HEAD, POST');
        return page(r.res, 405, 'Method not allowed', '', false);
      }
      const [a, b, x, extra] = r.segments;
      if (a === undefined) return front(r, c, head);
      if (a === 'confirm' && b && x === undefined) return confirmPage(r, c, b, head);
      if (a === 'moderate' && b && x === undefined) return moderatePage(r, c, b, head);
      if (a === 'unsubscribe' && b && x && extra === undefined) return unsubscribePage(r, c, b, x, head);
      if (a === 'archive' && extra === undefined) return archivePage(r, c, b, x, head);
      return page(r.res, 404, 'Not found', '<p>Nothing is published at this address.</p>', head);
    },
  };
}
