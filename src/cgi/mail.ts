import { randomBytes } from 'node:crypto';
import type { MailSubmitter } from '../core/contracts.ts';
import type { Logger } from '../core/log.ts';
import type { Tenant } from '../core/registry.ts';
import { clientFields, clientKey } from '../lib/peers.ts';

/** What a handler gets back from `cgi.mail(...)`. */
export type MailAnswer =
  | { ok: true; id: string; to: string[] }
  | { ok: false; code: 'recipient' | 'header' | 'invalid' | 'rate' | 'unavailable' | 'failed'; message: string };

export interface MailLimits {
  perTenantPerHour: number;
  perIpPerHour: number;
}

/** Who asked, for limits and logs. */
export interface MailContext {
  tenant: Tenant;
  remote: string;
  handler: string;
}

/** A handler-sent message after every check, as it went to the queue. */
export interface SentForm {
  tenant: string;
  remote: string;
  handler: string;
  to: string[];
  subject: string;
  text: string;
  queueId: string;
}

const ADDRESS = /^[^\s@<>()",;:\\[\]]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$/;
// Any control character in a header value: CR and LF above all (header
// injection, CVE-2002-1771), but also NUL, tab tricks and DEL.
const CONTROL = /[\x00-\x1f\x7f]/;
const MAX_TEXT = 256 * 1024;
const MAX_SUBJECT = 200;
const MAX_PER_RUN = 5;
const HOUR = 3600_000;

/** True when `s` is a plain e-mail address (no display name, no comments). */
export function isAddress(s: string): boolean {
  return s.length <= 254 && ADDRESS.test(s);
}

class Window {
  private readonly counts = new Map<string, { start: number; n: number }>();
  /** Counts one hit for `key`; false when the hour's allowance is used up. */
  take(key: string, limit: number, now: number): boolean {
    let c = this.counts.get(key);
    if (!c || now - c.start >= HOUR) {
      if (this.counts.size > 10_000) for (const [k, v] of this.counts) if (now - v.start >= HOUR) this.counts.delete(k);
      c = { start: now, n: 0 };
      this.counts.set(key, c);
    }
    if (c.n >= limit) return false;
    c.n++;
    return true;
  }
  peek(key: string, limit: number, now: number): boolean {
    const c = this.counts.get(key);
    return !c || now - c.start >= HOUR || c.n < limit;
  }
}

/** RFC 2047 encoded-words for a non-ASCII header value (or one holding "=?"), each at most 75 characters. */
function encodeWords(s: string): string {
  // Plain ASCII goes as it is, unless it holds "=?", which a reader would decode as an encoded word of its own (a line break, a Bcc: line).
  if (/^[\x20-\x7e]*$/.test(s) && !s.includes('=?')) return s;
  const words: string[] = [];
  let chunk = '';
  for (const ch of s) {
    if (Buffer.byteLength(chunk + ch) > 45) {
      words.push(chunk);
      chunk = '';
    }
    chunk += ch;
  }
  if (chunk) words.push(chunk);
  return words.map((w) => `=?UTF-8?B?${Buffer.from(w).toString('base64')}?=`).join('\r\n ');
}

/** Quoted-printable (RFC 2045 §6.7) with CRLF line ends and soft breaks under 76 characters. */
function quotedPrintable(text: string): string {
  const out: string[] = [];
  for (const line of text.replace(/\r\n?/g, '\n').split('\n')) {
    let enc = '';
    const bytes = Buffer.from(line, 'utf8');
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!;
      const last = i === bytes.length - 1;
      const plain = (b >= 33 && b <= 126 && b !== 61) || ((b === 32 || b === 9) && !last);
      enc += plain ? String.fromCharCode(b) : `=${b.toString(16).toUpperCase().padStart(2, '0')}`;
    }
    while (enc.length > 75) {
      let cut = 75;
      // Never split an =XX escape.
      const eq = enc.lastIndexOf('=', cut - 1);
      if (eq > cut - 3) cut = eq;
      out.push(`${enc.slice(0, cut)}=`);
      enc = enc.slice(cut);
    }
    out.push(enc);
  }
  return out.join('\r\n');
}

/** The site address mail from a tenant's handlers comes from. */
export function formsSender(tenant: Tenant): string {
  return `forms@${tenant.domains[0]}`;
}

/**
 * The mail channel of handlers. Whatever a handler asks, the suite decides:
 * recipients only from the tenant's `forms.recipients` (nms FormMail's
 * server-side allow-list: the form never names an arbitrary recipient), no
 * control characters in anything that becomes a header, hourly limits per
 * tenant and per visitor IP, and the message built here, not by the handler.
 */
export class HandlerMail {
  private readonly perTenant = new Window();
  private readonly perIp = new Window();

  constructor(
    private readonly submitter: MailSubmitter | undefined,
    private limits: MailLimits,
    private readonly log: Logger,
    private readonly onSent?: (sent: SentForm) => void,
  ) {}

  setLimits(limits: MailLimits): void {
    this.limits = limits;
  }

  /** A fresh per-run guard (a run may send at most a few messages). */
  forRun(ctx: MailContext): (message: unknown) => Promise<MailAnswer> {
    let sent = 0;
    return async (message) => {
      if (++sent > MAX_PER_RUN) return this.refuse(ctx, 'rate', `at most ${MAX_PER_RUN} messages per request`);
      return this.send(ctx, message);
    };
  }

  private refuse(ctx: MailContext, code: Exclude<MailAnswer, { ok: true }>['code'], message: string): MailAnswer {
    this.log.info({ tenant: ctx.tenant.id, ...clientFields(ctx.remote), handler: ctx.handler, code, why: message }, 'handler mail refused');
    return { ok: false, code, message };
  }

  async send(ctx: MailContext, message: unknown): Promise<MailAnswer> {
    const { tenant } = ctx;
    if (typeof message !== 'object' || message === null) return this.refuse(ctx, 'invalid', 'the message must be an object');
    const m = message as Record<string, unknown>;
    const allowed = tenant.config.forms?.recipients ?? [];
    if (allowed.length === 0) return this.refuse(ctx, 'recipient', 'this site has no form recipients configured');

    let to: string[];
    if (m.to === undefined) to = [allowed[0]!];
    else if (typeof m.to === 'string') to = [m.to];
    else if (Array.isArray(m.to) && m.to.length > 0 && m.to.every((a) => typeof a === 'string')) to = m.to as string[];
    else return this.refuse(ctx, 'invalid', '"to" must be an address or a list of addresses');
    for (const a of to) {
      if (CONTROL.test(a)) return this.refuse(ctx, 'header', 'a recipient contains a line break or control character');
      if (!allowed.includes(a.trim().toLowerCase())) return this.refuse(ctx, 'recipient', `${a.slice(0, 100)} is not one of this site's form recipients`);
    }
    to = [...new Set(to.map((a) => a.trim().toLowerCase()))];

    const subject = m.subject === undefined ? `Form submission on ${tenant.domains[0]}` : m.subject;
    if (typeof subject !== 'string') return this.refuse(ctx, 'invalid', '"subject" must be text');
    if (CONTROL.test(subject)) return this.refuse(ctx, 'header', 'the subject contains a line break or control character');
    if (subject.length > MAX_SUBJECT) return this.refuse(ctx, 'invalid', `the subject is longer than ${MAX_SUBJECT} characters`);

    let replyTo: string | undefined;
    if (m.replyTo !== undefined) {
      if (typeof m.replyTo !== 'string') return this.refuse(ctx, 'invalid', '"replyTo" must be an address');
      if (CONTROL.test(m.replyTo)) return this.refuse(ctx, 'header', 'the reply address contains a line break or control character');
      if (!isAddress(m.replyTo)) return this.refuse(ctx, 'invalid', 'the reply address is not an e-mail address');
      replyTo = m.replyTo;
    }
    if (typeof m.text !== 'string') return this.refuse(ctx, 'invalid', '"text" must be text');
    if (m.text.length > MAX_TEXT) return this.refuse(ctx, 'invalid', 'the text is too long');
    const unknown = Object.keys(m).filter((k) => !['to', 'subject', 'replyTo', 'text'].includes(k));
    if (unknown.length > 0) return this.refuse(ctx, 'invalid', `unknown field ${unknown[0]!.slice(0, 40)}`);

    if (!this.submitter) return this.refuse(ctx, 'unavailable', 'sending mail is not available on this server');
    const now = Date.now();
    if (!this.perTenant.peek(tenant.id, this.limits.perTenantPerHour, now)) return this.refuse(ctx, 'rate', 'this site has sent its hourly allowance of form mail');
    // A visitor is its client key: an IPv6 one by its /64.
    if (!this.perIp.take(`${tenant.id}\0${clientKey(ctx.remote)}`, this.limits.perIpPerHour, now)) {
      return this.refuse(ctx, 'rate', 'too many submissions from this address; try again later');
    }
    this.perTenant.take(tenant.id, this.limits.perTenantPerHour, now);

    const from = formsSender(tenant);
    const domain = tenant.domains[0]!;
    const head = [
      `From: ${encodeWords(`${domain} forms`)} <${from}>`,
      `To: ${to.join(', ')}`,
      ...(replyTo ? [`Reply-To: ${replyTo}`] : []),
      `Subject: ${encodeWords(subject)}`,
      `Date: ${new Date(now).toUTCString().replace('GMT', '+0000')}`,
      `Message-ID: <${randomBytes(12).toString('hex')}@${domain}>`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: quoted-printable',
      'Auto-Submitted: auto-generated',
      `X-Makewaves-Form: ${ctx.handler} from ${ctx.remote}`,
    ];
    const raw = Buffer.from(`${head.join('\r\n')}\r\n\r\n${quotedPrintable(m.text)}\r\n`, 'utf8');
    let queueId: string;
    try {
      queueId = await this.submitter.submit({ from, to, raw, tenant: tenant.id });
    } catch (err) {
      this.log.error({ tenant: tenant.id, remote: ctx.remote, handler: ctx.handler, err: (err as Error).message }, 'form mail could not be queued');
      return { ok: false, code: 'failed', message: 'the message could not be queued; try again later' };
    }
    this.log.info({ tenant: tenant.id, remote: ctx.remote, handler: ctx.handler, to, queueId }, 'form mail queued');
    try {
      this.onSent?.({ tenant: tenant.id, remote: ctx.remote, handler: ctx.handler, to, subject, text: m.text, queueId });
    } catch (err) {
      // The mail is queued; only the form log missed it.
      this.log.error({ tenant: tenant.id, queueId, err: (err as Error).message }, 'form submission not recorded in the form log');
    }
    return { ok: true, id: queueId, to };
  }
}
