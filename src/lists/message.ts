import { randomBytes } from 'node:crypto';
import { isMailbox } from '../core/listaddr.ts';

export { isMailbox };

/**
 * Just enough RFC 5322 / MIME handling for a list manager: split a message
 * into header fields and body without touching bytes we pass on, read a
 * field, find the poster's address, read command text, compose notices.
 */

/** One header field as received (name, and the raw field with its folding and CRLF). */
export interface Field {
  /** Lower-cased field name. */
  name: string;
  raw: string;
}

export interface SplitMessage {
  fields: Field[];
  /** Everything after the blank line (CRLF CRLF excluded). */
  body: Buffer;
}

/** Splits at the first empty line. Header bytes are read as latin1 so that they go out again unchanged. */
export function splitMessage(raw: Buffer): SplitMessage {
  let end = raw.indexOf('\r\n\r\n');
  let headEnd = end + 2;
  let bodyStart = end + 4;
  if (raw.subarray(0, 2).toString() === '\r\n') {
    end = 0;
    headEnd = 0;
    bodyStart = 2;
  } else if (end === -1) {
    headEnd = raw.length;
    bodyStart = raw.length;
  }
  const head = raw.subarray(0, headEnd).toString('latin1');
  const fields: Field[] = [];
  for (const line of head.split(/(?<=\r\n)/)) {
    if (line === '') continue;
    if ((line.startsWith(' ') || line.startsWith('\t')) && fields.length > 0) {
      fields[fields.length - 1]!.raw += line;
      continue;
    }
    const colon = line.indexOf(':');
    fields.push({ name: (colon > 0 ? line.slice(0, colon) : line).trim().toLowerCase(), raw: line.endsWith('\r\n') ? line : `${line}\r\n` });
  }
  return { fields, body: raw.subarray(bodyStart) };
}

/** The unfolded value of a field (RFC 5322 §2.2.3), without the name. */
export function fieldValue(f: Field): string {
  return f.raw.slice(f.raw.indexOf(':') + 1).replace(/\r\n(?=[ \t])/g, '').replace(/\r\n$/, '').trim();
}

/** The unfolded value of the first field called `name` (lower case), or undefined. */
export function header(fields: readonly Field[], name: string): string | undefined {
  const f = fields.find((x) => x.name === name);
  return f && fieldValue(f);
}

/** The first mailbox of an address field (`"Name" <a@b>` or `a@b`), lower-cased; undefined if there is none. */
export function firstAddress(value: string | undefined): string | undefined {
  if (!value) return undefined;
  const m = /<\s*([^<>\s]+@[^<>\s]+?)\s*>/.exec(value) ?? /([^\s<>"(),;:]+@[^\s<>"(),;:]+)/.exec(value);
  const a = m?.[1]?.toLowerCase();
  return a && isMailbox(a) ? a : undefined;
}

/**
 * The entries of an address-list field value (RFC 5322 §3.4), as written
 * and trimmed: split at the commas that are outside quoted strings,
 * comments and angle brackets; groups are not taken apart.
 */
export function addressList(value: string | undefined): string[] {
  if (!value) return [];
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  let depth = 0;
  let angle = false;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i]!;
    if (quoted && ch === '\\') {
      cur += ch + (value[i + 1] ?? '');
      i++;
      continue;
    }
    if (ch === '"' && depth === 0) quoted = !quoted;
    else if (!quoted && ch === '(') depth++;
    else if (!quoted && ch === ')' && depth > 0) depth--;
    else if (!quoted && depth === 0 && ch === '<') angle = true;
    else if (!quoted && depth === 0 && ch === '>') angle = false;
    else if (!quoted && depth === 0 && !angle && ch === ',') {
      if (cur.trim()) out.push(cur.trim());
      cur = '';
      continue;
    }
    cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

/**
 * `first` and then `rest` as one address list, each mailbox once (by its
 * address, any case): Mailman's merge of the poster into Reply-To or Cc.
 */
export function mergeAddresses(first: readonly string[], rest: readonly string[]): string[] {
  const seen = new Set<string>();
  return [...first, ...rest].filter((entry) => {
    const a = firstAddress(entry) ?? entry.toLowerCase();
    if (seen.has(a)) return false;
    seen.add(a);
    return true;
  });
}

/** The display name of an address field, as written (quotes removed), or "". */
export function displayName(value: string | undefined): string {
  if (!value) return '';
  const lt = value.indexOf('<');
  if (lt <= 0) return '';
  return value
    .slice(0, lt)
    .trim()
    .replace(/^"(.*)"$/, '$1')
    .replace(/\\(.)/g, '$1');
}

/**
 * True for mail no person wrote on purpose: a null sender (bounces),
 * RFC 3834 `Auto-Submitted` other than `no`, `Precedence: bulk|junk|list`,
 * and the vacation responders' own markers.
 */
export function isAutomatic(sender: string, fields: readonly Field[]): string | undefined {
  if (sender === '') return 'null envelope sender';
  const auto = header(fields, 'auto-submitted');
  if (auto && !/^no\b/i.test(auto)) return `Auto-Submitted: ${auto}`;
  const prec = header(fields, 'precedence');
  if (prec && /^(bulk|junk|list)\b/i.test(prec)) return `Precedence: ${prec}`;
  if (fields.some((f) => f.name === 'x-autoreply' || f.name === 'x-autorespond')) return 'auto-responder header';
  return undefined;
}

function decodeTransfer(body: Buffer, cte: string | undefined): string {
  const enc = (cte ?? '').toLowerCase();
  if (enc === 'base64') return Buffer.from(body.toString('latin1').replace(/[^A-Za-z0-9+/=]/g, ''), 'base64').toString('utf8');
  if (enc === 'quoted-printable') {
    const bytes = body
      .toString('latin1')
      .replace(/=\r\n/g, '')
      .replace(/=([0-9A-Fa-f]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
    return Buffer.from(bytes, 'latin1').toString('utf8');
  }
  return body.toString('utf8');
}

/**
 * The text of a message a person wrote (for commands and web display):
 * a text/plain body decoded, or the first text/plain part of a multipart
 * one (one level deep); "" when there is none.
 */
export function plainText(msg: SplitMessage, depth = 0): string {
  const ctype = header(msg.fields, 'content-type') ?? 'text/plain';
  const cte = header(msg.fields, 'content-transfer-encoding');
  if (/^text\/plain\b/i.test(ctype) || !/^\s*[a-z]+\//i.test(ctype)) return decodeTransfer(msg.body, cte);
  const b = /boundary\s*=\s*"?([^";]+)"?/i.exec(ctype)?.[1];
  if (!/^multipart\//i.test(ctype) || !b || depth > 2) return '';
  const parts = msg.body.toString('latin1').split(`--${b}`);
  for (const part of parts.slice(1)) {
    if (part.startsWith('--')) break;
    const text = plainText(splitMessage(Buffer.from(part.replace(/^\r\n/, ''), 'latin1')), depth + 1);
    if (text) return text;
  }
  return '';
}

/** Decodes RFC 2047 encoded-words for display (B and Q, UTF-8 and Latin-1). */
export function decodeWords(s: string): string {
  return s.replace(/=\?([^?]+)\?([bBqQ])\?([^?]*)\?=(?:\s+(?==\?))?/g, (_m, charset: string, enc: string, text: string) => {
    const bytes = enc.toLowerCase() === 'b' ? Buffer.from(text, 'base64') : Buffer.from(text.replace(/_/g, ' ').replace(/=([0-9A-Fa-f]{2})/g, (_x, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
    return /^utf-?8$/i.test(charset) ? bytes.toString('utf8') : bytes.toString('latin1');
  });
}

/** A header value safe to write: ASCII as is, anything else as RFC 2047 B-encoded UTF-8 words (at most 75 characters each). */
export function headerText(s: string): string {
  const clean = s.replace(/[\x00-\x1f\x7f]/g, ' ');
  if (/^[\x20-\x7e]*$/.test(clean)) return clean;
  const out: string[] = [];
  let bytes: Buffer[] = [];
  let n = 0;
  const flush = () => {
    if (n > 0) out.push(`=?UTF-8?B?${Buffer.concat(bytes).toString('base64')}?=`);
    bytes = [];
    n = 0;
  };
  for (const ch of clean) {
    const b = Buffer.from(ch);
    if (n + b.length > 45) flush();
    bytes.push(b);
    n += b.length;
  }
  flush();
  return out.join('\r\n ');
}

/** A quoted-string display name (RFC 5322 §3.2.4) or encoded-words when it is not ASCII. */
export function phrase(name: string): string {
  if (/^[\x20-\x7e]*$/.test(name)) return `"${name.replace(/["\\]/g, '\\$&')}"`;
  return headerText(name);
}

/** A Message-ID under our domain. */
export function messageId(domain: string): string {
  return `<${Date.now().toString(36)}.${randomBytes(9).toString('hex')}@${domain}>`;
}

/** RFC 5322 §3.3 date in UTC. */
export function rfcDate(now: number): string {
  return new Date(now).toUTCString().replace('GMT', '+0000');
}

export interface Notice {
  from: string;
  to: string;
  subject: string;
  text: string;
  domain: string;
  now: number;
  /** Extra header lines, each `Name: value` without CRLF. */
  headers?: string[];
}

/** A plain-text message from the list (confirmations, welcome, notices), marked RFC 3834 auto-replied. */
export function composeNotice(n: Notice): Buffer {
  const lines = [
    `From: ${n.from}`,
    `To: ${n.to}`,
    `Subject: ${headerText(n.subject)}`,
    `Date: ${rfcDate(n.now)}`,
    `Message-ID: ${messageId(n.domain)}`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    'Auto-Submitted: auto-replied',
    ...(n.headers ?? []),
  ];
  const body = n.text.replace(/\r?\n/g, '\r\n');
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n${body.endsWith('\r\n') ? body : `${body}\r\n`}`);
}
