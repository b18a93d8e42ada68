import { isIPv6 } from 'node:net';

/** A request's Host: the value to route by ("" when none was sent), or why it is refused (a 400). */
export type HostField = { ok: true; value: string } | { ok: false; why: string };

// Host names, IPv4 literals and the internal names some networks use ("_" included).
const REG_NAME = /^[A-Za-z0-9._-]+$/;
const PORT = /^[0-9]{1,5}$/;

/**
 * True when `authority` is `host[:port]` as an HTTP server accepts it
 * (RFC 3986 §3.2.2, narrowed to what names a site): a name of letters,
 * digits, `.`, `-` and `_`, or a bracketed IPv6 literal, then optionally a
 * port of 1 to 5 digits between 1 and 65535. No userinfo, no percent
 * escapes, no spaces, no second colon, no empty port.
 */
export function isValidAuthority(authority: string): boolean {
  let host = authority;
  let port: string | undefined;
  if (host.charCodeAt(0) === 91 /* [ */) {
    const end = host.indexOf(']');
    if (end === -1 || !isIPv6(host.slice(1, end))) return false;
    const after = host.slice(end + 1);
    if (after !== '') {
      if (after.charCodeAt(0) !== 58 /* : */) return false;
      port = after.slice(1);
    }
    host = host.slice(0, end + 1);
  } else {
    const colon = host.indexOf(':');
    if (colon !== -1) {
      port = host.slice(colon + 1);
      host = host.slice(0, colon);
    }
    if (!REG_NAME.test(host)) return false;
  }
  if (port === undefined) return true;
  if (!PORT.test(port)) return false;
  const n = Number(port);
  return n >= 1 && n <= 65535;
}

/**
 * The Host field of a request, from its raw header list (Node keeps only
 * the first of several Host lines in `req.headers`). RFC 9112 §3.2: a
 * request with more than one Host line, or an invalid value, gets a 400.
 * No Host at all (HTTP/1.0) and an empty one route as "no host". In
 * HTTP/2 the `:authority` pseudo-header is the Host.
 */
export function hostField(rawHeaders: readonly string[]): HostField {
  let value: string | undefined;
  let authority: string | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host') {
      if (value !== undefined) return { ok: false, why: 'more than one Host header' };
      value = rawHeaders[i + 1]!;
    } else if (name === ':authority') {
      authority = rawHeaders[i + 1]!;
    }
  }
  if (authority !== undefined) {
    // RFC 9113 §8.3.1: in HTTP/2 :authority names the host; a Host beside it that names another is malformed.
    if (value !== undefined && value.toLowerCase() !== authority.toLowerCase()) return { ok: false, why: 'Host differs from :authority' };
    value = authority;
  }
  if (value === undefined || value === '') return { ok: true, value: '' };
  return isValidAuthority(value) ? { ok: true, value } : { ok: false, why: 'invalid Host header' };
}
