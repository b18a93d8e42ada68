import type http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { replyCode } from '../core/errors.ts';
import { normalizeHost } from '../lib/hostname.ts';
import { httpsLocation } from './location.ts';
import { errorPage, suspendedPage } from './pages.ts';
import { splitTarget, type Route } from './route.ts';
import type { Outcome } from './static.ts';

/** The service's own answers: an error page, the redirect to HTTPS, a suspended site's page. */
export function sendPage(req: IncomingMessage, res: ServerResponse, status: number, headers: http.OutgoingHttpHeaders = {}, ref?: string): Outcome {
  const page = errorPage(status, ref);
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': page.length, 'X-Content-Type-Options': 'nosniff', ...headers });
  const head = req.method === 'HEAD';
  res.end(head ? undefined : page);
  return { status, bytes: head ? 0 : page.length };
}

/**
 * 308 to the same host and path on HTTPS. The host is the one that matched
 * the tenant (lower-cased, port stripped): never a name the client made up.
 * With an absolute-form target that is its authority, not the Host header.
 */
export function redirectToHttps(req: IncomingMessage, res: ServerResponse, port: number, route: Route): Outcome {
  const target = splitTarget(req.url ?? '/', route.authority)?.rest ?? '/';
  const q = target.indexOf('?');
  const host = normalizeHost(route.authority);
  return sendPage(req, res, 308, { Location: q === -1 ? httpsLocation(host, port, target) : httpsLocation(host, port, target.slice(0, q), target.slice(q + 1)) });
}

export function sendSuspended(req: IncomingMessage, res: ServerResponse): Outcome {
  const page = suspendedPage();
  // RFC 9110 §15.6.4: 503 is temporary; no-store so caches do not keep the page once the site is back.
  const status = replyCode('SUSPENDED', 'http');
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': page.length, 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' });
  res.end(req.method === 'HEAD' ? undefined : page);
  return { status, bytes: req.method === 'HEAD' ? 0 : page.length };
}
