import { lingerOnBody } from '../lib/linger.ts';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HttpOutcome } from '../core/contracts.ts';
import { CSP } from './html.ts';

/** Largest form body the panel reads (a few fields). */
export const MAX_FORM = 16 * 1024;

/** The session cookie's name: the `__Host-` prefix (RFC 6265bis §4.1.3.2: Secure, Path=/, no Domain) on HTTPS. */
export function cookieName(base: string, secure: boolean): string {
  return secure ? `__Host-${base}` : base;
}

/** A Set-Cookie value: HttpOnly, SameSite=Strict, Path=/, Secure on HTTPS; `maxAge` 0 deletes it. */
export function setCookie(name: string, value: string, secure: boolean, maxAge?: number): string {
  return `${name}=${value}; Path=/; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}${maxAge !== undefined ? `; Max-Age=${maxAge}` : ''}`;
}

/** The value of cookie `name` in the request, if sent (the first one, as browsers send the most specific first). */
export function readCookie(req: IncomingMessage, name: string): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Reads an application/x-www-form-urlencoded body up to {@link MAX_FORM}.
 * Undefined for another content type or a larger body (the rest is not read).
 */
export async function readForm(req: IncomingMessage): Promise<URLSearchParams | undefined> {
  if (!/^application\/x-www-form-urlencoded\s*(;|$)/i.test(req.headers['content-type'] ?? '')) return undefined;
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > MAX_FORM) return undefined;
    chunks.push(c);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/** Sends an HTML page with the panel's security headers. */
export function sendHtml(req: IncomingMessage, res: ServerResponse, status: number, html: string, headers: Record<string, string | string[]> = {}): HttpOutcome {
  const body = Buffer.from(html);
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': body.length,
    // Pages show a customer's settings: never kept by a cache, never framed, never sniffed as something else.
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'same-origin',
    'Content-Security-Policy': CSP,
    ...headers,
  });
  const head = req.method === 'HEAD';
  res.end(head ? undefined : body);
  return { status, bytes: head ? 0 : body.length };
}

/**
 * An answer sent before the request's body was read (a refused upload): the
 * rest of the body is read and dropped for a while so that a client still
 * sending reads the answer, then the connection is closed ({@link lingerOnBody}).
 */
export function refusedBody(req: IncomingMessage, outcome: HttpOutcome): HttpOutcome {
  lingerOnBody(req);
  return outcome;
}

/** 303 See Other to a path of the panel (after a POST: the browser asks for it with GET). */
export function redirect(res: ServerResponse, location: string, headers: Record<string, string | string[]> = {}): HttpOutcome {
  res.writeHead(303, { Location: location, 'Content-Length': 0, 'Cache-Control': 'no-store', ...headers });
  res.end();
  return { status: 303, bytes: 0 };
}
