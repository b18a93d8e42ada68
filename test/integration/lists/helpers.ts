import nodemailer from 'nodemailer';
import { rawRequest, type RawResponse } from '../../helpers/http.ts';
import type { MailSink, SunkMessage } from '../../helpers/mailsink.ts';
import { waitFor, type TestSuite } from '../../helpers/suite.ts';

/** Sends `raw` over real SMTP to the suite with the given envelope; resolves with the server's reply. */
export async function sendMail(port: number, from: string, to: string | string[], raw: string): Promise<string> {
  const c = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true, name: 'client.test' });
  try {
    const info = await c.sendMail({ envelope: { from, to: Array.isArray(to) ? to : [to] }, raw });
    return info.response;
  } finally {
    c.close();
  }
}

/** A plain message from `from` with a Subject and body. */
export function msg(from: string, to: string, subject: string, body = 'hello\r\n', extra = ''): string {
  return `From: ${from}\r\nTo: ${to}\r\nSubject: ${subject}\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@client.test>\r\n${extra}\r\n${body}`;
}

/** The header section of a sunk message, unfolded, as name (lower case) → values. */
export function headersOf(m: SunkMessage): Map<string, string[]> {
  const text = m.raw.toString('latin1');
  const head = text.slice(0, text.indexOf('\r\n\r\n')).replace(/\r\n[ \t]+/g, ' ');
  const out = new Map<string, string[]>();
  for (const line of head.split('\r\n')) {
    const i = line.indexOf(':');
    const k = line.slice(0, i).toLowerCase();
    out.set(k, [...(out.get(k) ?? []), line.slice(i + 1).trim()]);
  }
  return out;
}

export function subjectOf(m: SunkMessage): string {
  return headersOf(m).get('subject')?.[0] ?? '';
}

/** Waits for the first message in the sink, after index `from`, to `rcpt` whose subject matches. */
export function mailTo(sink: MailSink, rcpt: string, subject: RegExp, from = 0, ms = 5_000): Promise<SunkMessage> {
  return waitFor(() => sink.messages.slice(from).find((m) => m.to.includes(rcpt) && subject.test(subjectOf(m))), ms, `mail to ${rcpt} with subject ${subject}`);
}

/** The token of a `confirm TOKEN` message. */
export function tokenOf(m: SunkMessage): string {
  const t = /confirm ([0-9a-f]{32})/.exec(subjectOf(m))?.[1];
  if (!t) throw new Error(`no token in ${subjectOf(m)}`);
  return t;
}

/** An HTTP request to the suite for `host` (Host header) and `path`. */
export function web(t: TestSuite, host: string, path: string, method = 'GET', body?: string, type = 'application/x-www-form-urlencoded'): Promise<RawResponse> {
  const headers: Record<string, string> = { Host: host };
  if (body !== undefined) headers['Content-Type'] = type;
  return rawRequest(t.http, path, headers, method, body);
}

/** Waits until a log line with this message (and these fields) appeared. */
export function logged(t: TestSuite, msg: string, fields: Record<string, unknown> = {}, ms = 5_000): Promise<Record<string, unknown>> {
  return waitFor(() => t.logs().find((l) => l.msg === msg && Object.entries(fields).every(([k, v]) => l[k] === v)), ms, `log line "${msg}"`);
}
