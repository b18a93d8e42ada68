import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';

/**
 * RFC 3875 meta-variables for one request: exactly these, nothing of the
 * suite's own environment.
 */
export function metaVariables(r: {
  req: IncomingMessage;
  serverName: string;
  serverPort: number;
  scriptName: string;
  pathInfo: string;
  query: string;
  remote: string;
  bodyLength: number;
}): Record<string, string> {
  const { req } = r;
  const env: Record<string, string> = {
    GATEWAY_INTERFACE: 'CGI/1.1', // §4.1.4
    SERVER_NAME: r.serverName, // §4.1.14: the virtual host the request was for
    SERVER_PORT: String(r.serverPort),
    SERVER_PROTOCOL: `HTTP/${req.httpVersion}`,
    REQUEST_METHOD: req.method ?? 'GET',
    QUERY_STRING: r.query, // §4.1.7: URL-encoded, as received
    REMOTE_ADDR: r.remote,
    SCRIPT_NAME: r.scriptName,
    PATH_INFO: r.pathInfo, // §4.1.5: decoded
  };
  // Apache's conventions (not in RFC 3875): how the visitor reached us, so a handler can build a URL that works.
  const encrypted = (req.socket as TLSSocket).encrypted === true;
  env.REQUEST_SCHEME = encrypted ? 'https' : 'http';
  if (encrypted) env.HTTPS = 'on';
  const type = req.headers['content-type'];
  if (type !== undefined) env.CONTENT_TYPE = type;
  // §4.1.2: set only when there is a body; its length as read, not as claimed.
  if (r.bodyLength > 0) env.CONTENT_LENGTH = String(r.bodyLength);

  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    // §4.1.18: HTTP_<NAME> with "-" as "_". A name with "_" of its own
    // would collide with a "-" twin (a header smuggling trick), so only
    // letters, digits and "-" pass.
    if (!/^[A-Za-z0-9-]+$/.test(name)) continue;
    const key = `HTTP_${name.toUpperCase().replace(/-/g, '_')}`;
    // httpoxy (CVE-2016-5385): a client's "Proxy:" header must never
    // become HTTP_PROXY. Credentials are the server's business (§4.1.18),
    // and Content-Type/Length are already set above.
    if (key === 'HTTP_PROXY' || key === 'HTTP_AUTHORIZATION' || key === 'HTTP_PROXY_AUTHORIZATION') continue;
    if (key === 'HTTP_CONTENT_TYPE' || key === 'HTTP_CONTENT_LENGTH') continue;
    const value = raw[i + 1]!;
    const prev = env[key];
    env[key] = prev === undefined ? value : `${prev}${key === 'HTTP_COOKIE' ? '; ' : ', '}${value}`;
  }
  return env;
}

/** A handler's answer, checked and ready to send. */
export type CgiResponse =
  | { ok: true; status: number; headers: Array<[string, string]>; body: Buffer }
  | { ok: false; why: string };

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Header values: visible characters, space and tab (RFC 9110 §5.5); no CR, LF or NUL.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
// Set by the server, never by a handler.
const SERVER_OWNED = new Set([
  'connection',
  'content-length',
  'transfer-encoding',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'proxy-connection',
  'date',
  'server',
]);

// A Location is passed byte for byte: visible ASCII only. Browsers drop tabs and
// line breaks inside URLs (WHATWG URL "remove all ASCII tab or newline") and
// read "\" as "/", so "/\t/evil" or "/\\evil" would become "//evil".
const LOCATION_CHARS = /^[\x21-\x7e]+$/;
// Scheme, "//", a host (with an optional port), then the end or a path, query or fragment.
const ABSOLUTE = /^https?:\/\/[^/?#@]+(?:[/?#]|$)/i;

/**
 * Why a handler's Location is refused, or undefined when it may pass: a
 * path starting with exactly one "/" (not "//", no "\", not even encoded
 * as %2F or %5C right after it), or an absolute http(s) URL, without
 * credentials, on one of `domains` (the tenant's own).
 */
export function locationRefusal(location: string, domains: readonly string[]): string | undefined {
  if (!LOCATION_CHARS.test(location)) return 'Location holds a space, a control or a non-ASCII character';
  if (location.includes('\\') || /%5c/i.test(location)) return 'Location holds a backslash';
  if (location.startsWith('/')) {
    if (location.startsWith('//') || /^\/%2f/i.test(location)) return 'Location starts with two slashes (another host)';
    return undefined;
  }
  if (!ABSOLUTE.test(location)) return 'Location is neither a path starting with "/" nor an absolute http(s) URL';
  let url: URL;
  try {
    url = new URL(location);
  } catch {
    return 'Location is not a valid URL';
  }
  if (url.username || url.password) return 'Location carries credentials';
  if (!domains.includes(url.hostname.toLowerCase())) return `Location points to ${url.hostname}, not one of the site's own domains`;
  return undefined;
}

/**
 * Parses a handler's stdout (RFC 3875 §6): header fields, a blank line,
 * the body. `Status` sets the status; `Location` makes a redirect: an
 * absolute http(s) URL on one of `domains` (the tenant's own) is a client
 * redirect (302 unless Status says another 3xx, §6.2.3/§6.2.4); a local
 * path (exactly one leading "/", see {@link locationRefusal}) is a
 * local redirect (§6.2.2). The gateway cannot re-enter the HTTP router,
 * so a local redirect is answered as a 302 to that path on the same site;
 * for the GET a browser then makes, the result is the same page.
 * Anything malformed, and any other Location, is refused (the gateway
 * answers 502).
 */
export function parseCgiOutput(out: Buffer, domains: readonly string[]): CgiResponse {
  // The header block ends at the first empty line (LF or CRLF line ends, §6.3).
  let end = -1;
  let bodyStart = -1;
  for (let i = 0; i < out.length && i < 65536; i++) {
    if (out[i] !== 10) continue;
    if (i === 0 || (i === 1 && out[0] === 13)) return { ok: false, why: 'no header fields' };
    if (out[i - 1] === 10) {
      end = i - 1;
      bodyStart = i + 1;
      break;
    }
    if (out[i - 1] === 13 && out[i - 2] === 10) {
      end = i - 2;
      bodyStart = i + 1;
      break;
    }
  }
  if (end === -1) return { ok: false, why: out.length === 0 ? 'no output' : 'no blank line after the header fields' };
  const lines = out.subarray(0, end).toString('latin1').split(/\r?\n/);
  let status: number | undefined;
  let location: string | undefined;
  let contentType: string | undefined;
  const headers: Array<[string, string]> = [];
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon <= 0) return { ok: false, why: `malformed header line "${line.slice(0, 60)}"` };
    const name = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    if (!TOKEN.test(name)) return { ok: false, why: `bad header name "${name.slice(0, 60)}"` };
    if (!FIELD_VALUE.test(value)) return { ok: false, why: `control character in header ${name}` };
    const lower = name.toLowerCase();
    if (lower === 'status') {
      const m = /^([1-5]\d\d)(?: .*)?$/.exec(value);
      const code = m ? Number(m[1]) : NaN;
      if (!m || code < 200) return { ok: false, why: `bad Status "${value.slice(0, 60)}"` };
      status = code;
    } else if (lower === 'location') {
      location = value;
    } else if (lower === 'content-type') {
      contentType = value;
    } else if (!SERVER_OWNED.has(lower)) {
      headers.push([name, value]);
    }
  }
  const body = out.subarray(bodyStart);
  if (location !== undefined) {
    const refused = locationRefusal(location, domains);
    if (refused) return { ok: false, why: `${refused}: ${JSON.stringify(location.slice(0, 200))}` };
    if (status === undefined || status < 300 || status > 399) status = 302;
    headers.push(['Location', location]);
    if (contentType !== undefined) headers.push(['Content-Type', contentType]);
    return { ok: true, status, headers, body };
  }
  // §6.3.1: a document response names its media type.
  if (contentType === undefined) {
    if (body.length > 0) return { ok: false, why: 'a body without Content-Type' };
  } else {
    headers.push(['Content-Type', contentType]);
  }
  return { ok: true, status: status ?? 200, headers, body };
}
