import type { ProxyRoute, Registry, Tenant } from '../core/registry.ts';
import { JAIL_REFUSALS, replyCode } from '../core/errors.ts';
import { parseUrlPath } from '../lib/jail.ts';
import { isValidAuthority, type HostField } from './host.ts';
import { localLocation } from './location.ts';


/** Where a request goes, decided from Host and path before anything is read from disk. */
/** A file of a tenant's site: what the static path needs to find and answer it. */
export interface StaticRoute {
  kind: 'static';
  tenant: Tenant;
  /** Decoded, normalised path segments below the tenant root. */
  segments: string[];
  trailingSlash: boolean;
  /** Raw query string without "?", or "". */
  query: string;
  /** URL prefix the segments sit under: "" on a tenant's own host, "/~id" on the userdir host. */
  base: string;
  /** The file's key in the memory cache ({@link fileKey}), made with the route: a memoized route hands it on unchanged. */
  fileKey: string;
}

export type Route = (
  | { kind: 'error'; status: number; tenant: Tenant | undefined; why?: string; location?: string; allow?: string }
  | { kind: 'suspended'; tenant: Tenant }
  | StaticRoute
  | { kind: 'proxy'; tenant: Tenant; route: ProxyRoute; path: string }
  | { kind: 'cgi'; tenant: Tenant; name: string; pathInfo: string; query: string }
  | { kind: 'list'; tenant: Tenant; list: string; segments: string[]; query: string }
  /** The control panel's host: every path is the panel's (it belongs to no tenant). */
  | { kind: 'panel'; tenant: undefined }
  /** `OPTIONS *`: about the server as a whole (the tenant, when the Host names one, is for the access log). */
  | { kind: 'server-options'; tenant: Tenant | undefined }
) & {
  /** The authority the request was routed by, as sent (port kept): the Host a backend is given. "" when none. */
  authority: string;
};

type Decided = Route extends infer R ? (R extends unknown ? Omit<R, 'authority'> : never) : never;

/**
 * The host a request is for and its path with query. RFC 9112 §3.2.2: an
 * absolute-form target's authority replaces Host. Undefined for a target
 * that is neither origin-form nor absolute-form, or whose authority is not
 * a valid `host[:port]` (userinfo, a bad port, none at all).
 */
export function splitTarget(target: string, hostHeader: string | undefined): { host: string | undefined; rest: string } | undefined {
  if (target.charCodeAt(0) === 47 /* / */) return { host: hostHeader, rest: target };
  const m = /^https?:\/\/([^/?#]*)([^#]*)$/i.exec(target);
  if (!m || !isValidAuthority(m[1]!)) return undefined;
  return { host: m[1], rest: m[2] || '/' };
}

// RFC 3986 §3.3: sub-delims, ":" and "@" are allowed in a path segment as they are.
const PCHAR_ESCAPES = /%(?:24|26|2B|2C|3B|3D|3A|40)/g;

/**
 * One decoded segment in its canonical encoded form: unreserved characters,
 * sub-delims, ":" and "@" as they are, everything else percent-encoded with
 * upper-case hex. `v%32`, `%76%32` and `v2` all come out as `v2`.
 */
export function canonicalSegment(segment: string): string {
  const e = encodeURIComponent(segment);
  return e.includes('%') ? e.replace(PCHAR_ESCAPES, (x) => String.fromCharCode(parseInt(x.slice(1), 16))) : e;
}

/** The canonical form of a parsed path: "/", segments in canonical encoding, a final "/" when there was one. */
export function canonicalPath(segments: readonly string[], trailingSlash: boolean): string {
  if (segments.length === 0) return '/';
  return `/${segments.map(canonicalSegment).join('/')}${trailingSlash ? '/' : ''}`;
}

const canonicalPrefixes = new WeakMap<ProxyRoute, string>();
/** A proxy route's prefix in the same canonical form as request paths (a configured `%xx` matches its decoded form). */
function canonicalPrefix(route: ProxyRoute): string {
  let p = canonicalPrefixes.get(route);
  if (p === undefined) {
    const parsed = parseUrlPath(route.prefix);
    p = parsed.ok ? canonicalPath(parsed.segments, true) : route.prefix;
    canonicalPrefixes.set(route, p);
  }
  return p;
}

/**
 * Decides the route for a request target and Host. Pure apart from the
 * registry lookup, so it is shared by normal requests and WebSocket upgrades.
 */
export function routeRequest(reg: Registry, target: string, hostField: HostField): Route {
  if (!hostField.ok) return { kind: 'error', status: 400, tenant: undefined, why: hostField.why, authority: '' };
  if (target === '*') return { kind: 'server-options', tenant: reg.tenantForHost(hostField.value), authority: hostField.value };
  // Neither a valid Host nor a request target holds a space: the key is unambiguous.
  const key = target.length <= MEMO_TARGET_MAX ? `${hostField.value} ${target}` : undefined;
  let memo = decided.get(reg);
  if (key !== undefined) {
    const hit = memo?.get(key);
    if (hit) return hit;
  }
  const split = splitTarget(target, hostField.value);
  if (!split) return { kind: 'error', status: 400, tenant: undefined, why: 'bad request target', authority: '' };
  const authority = split.host ?? '';
  const route = decide(reg, split.rest, authority) as Route;
  route.authority = authority;
  if (key !== undefined && (route.kind === 'static' || route.kind === 'proxy')) {
    if (!memo) decided.set(reg, (memo = new Map()));
    if (memo.size >= MEMO_MAX) memo.clear();
    if (route.kind === 'static') Object.freeze(route.segments);
    memo.set(key, Object.freeze(route));
  }
  return route;
}

/**
 * Routes already decided, per registry (a reload makes a new one, so a
 * change of tenants, domains, proxies or suspensions is never answered from
 * here): Host and target to the route, which is a pure function of the
 * three. Only files and proxied paths are kept (what a site serves again and
 * again; a scanner's misses are not), frozen since they are shared, up to
 * {@link MEMO_MAX} of them (then the memo starts over).
 */
const decided = new WeakMap<Registry, Map<string, Route>>();
const MEMO_MAX = 4096;
const MEMO_TARGET_MAX = 512;

/** The methods a static path answers. */
export const STATIC_METHODS = 'GET, HEAD, OPTIONS';
/** The methods proxied paths, handlers and list pages are given: every method but TRACE (CONNECT is never routed). */
export const FORWARDED_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS';

/**
 * RFC 9110 §9.3.8: TRACE echoes the request back, cookies and credentials
 * included, to any script that can send one. It is answered 405 with Allow
 * wherever a request would be served, and never reaches a backend or a
 * handler; other routes (an error, a suspended site) are left as they are.
 * A method other than OPTIONS with the `*` target is a 400.
 */
export function refuseByMethod(route: Route, method: string | undefined): Route {
  if (route.kind === 'server-options' && method !== 'OPTIONS') {
    // RFC 9112 §3.2.4: the asterisk form is only for OPTIONS.
    return { kind: 'error', status: 400, tenant: route.tenant, why: `${method} *`, authority: route.authority };
  }
  if (method !== 'TRACE' || route.kind === 'error' || route.kind === 'suspended' || route.kind === 'server-options') return route;
  if (route.kind === 'panel') return { kind: 'error', status: 405, tenant: undefined, why: 'TRACE is not answered', allow: 'GET, HEAD, POST', authority: route.authority };
  const allow = route.kind === 'static' ? STATIC_METHODS : FORWARDED_METHODS;
  return { kind: 'error', status: 405, tenant: route.tenant, why: 'TRACE is not answered', allow, authority: route.authority };
}

/**
 * RFC 9110 §15.5.20: a request on a TLS connection whose server name (SNI)
 * is one tenant's while its Host (or absolute-form authority) is another
 * tenant's is answered 421, as Caddy and Apache do: the certificate the
 * client checked was not the site's. A TLS name that is no tenant's (an
 * address, the default certificate) and a Host that is no tenant's are
 * left to the usual rules.
 */
export function refuseMisdirected(reg: Registry, route: Route, tlsName: string | false | null | undefined): Route {
  if (!tlsName || route.kind === 'error') return route;
  const named = reg.tenantForHost(tlsName);
  const asked = reg.tenantForHost(route.authority);
  if (!named || !asked || named.id === asked.id) return route;
  return { kind: 'error', status: 421, tenant: asked, why: `TLS name ${tlsName} is another tenant than the Host`, authority: route.authority };
}

function decide(reg: Registry, rest: string, host: string): Decided {
  const q = rest.indexOf('?');
  let rawPath = q === -1 ? rest : rest.slice(0, q);
  const query = q === -1 ? '' : rest.slice(q + 1);

  if (reg.isPanelHost(host)) return { kind: 'panel', tenant: undefined };
  let tenant = reg.tenantForHost(host);
  let base = '';
  if (!tenant) {
    if (!reg.isUserdirHost(host)) return { kind: 'error', status: 404, tenant: undefined, why: 'unknown host' };
    const m = /^\/~([a-z0-9.-]+)(\/.*)?$/i.exec(rawPath);
    tenant = m ? reg.tenants.get(m[1]!.toLowerCase()) : undefined;
    if (!m || !tenant) return { kind: 'error', status: 404, tenant: undefined, why: 'no such user page' };
    base = `/~${tenant.id}`;
    if (m[2] === undefined) return { kind: 'error', status: 301, tenant, location: localLocation(`${base}/`, query) };
    rawPath = m[2];
  }
  // Every path of a suspended tenant, static, proxied or handler alike.
  if (tenant.suspended) return { kind: 'suspended', tenant };

  const parsed = parseUrlPath(rawPath);
  if (!parsed.ok) return { kind: 'error', status: replyCode(JAIL_REFUSALS[parsed.refusal], 'http'), tenant, why: parsed.refusal };

  if (base === '' && tenant.proxy.length > 0) {
    // Matching and rewriting use one path: decoded once, dot-segments and empty segments resolved,
    // re-encoded canonically. `/v%32/x` is `/v2/x` for both, so the prefix is cut where it matched.
    const normal = canonicalPath(parsed.segments, parsed.trailingSlash);
    for (const route of tenant.proxy) {
      const prefix = canonicalPrefix(route);
      if (normal.startsWith(prefix)) {
        const p = route.replace === undefined ? normal : route.replace + normal.slice(prefix.length);
        return { kind: 'proxy', tenant, route, path: query ? `${p}?${query}` : p };
      }
      if (`${normal}/` === prefix) {
        return { kind: 'error', status: 301, tenant, location: localLocation(prefix, query) };
      }
    }
  }
  if (parsed.segments[0] === 'cgi-bin') {
    // Handlers run; their sources are never served as files.
    const name = parsed.segments[1];
    if (name === undefined || base !== '') return { kind: 'error', status: 404, tenant, why: 'cgi-bin is not static' };
    const pathInfo = parsed.segments.length > 2 || parsed.trailingSlash ? `/${parsed.segments.slice(2).join('/')}${parsed.trailingSlash && parsed.segments.length > 2 ? '/' : ''}` : '';
    return { kind: 'cgi', tenant, name, pathInfo, query };
  }
  const listName = parsed.segments[1];
  if (parsed.segments[0] === 'lists' && listName !== undefined && base === '' && reg.listConfig(tenant, listName)) {
    // Only lists that exist take their path: a tenant without lists keeps its whole URL space.
    if (parsed.segments.length === 2 && !parsed.trailingSlash) return { kind: 'error', status: 301, tenant, location: localLocation(`/lists/${encodeURIComponent(listName)}/`, query) };
    return { kind: 'list', tenant, list: listName, segments: parsed.segments.slice(2), query };
  }
  return { kind: 'static', tenant, segments: parsed.segments, trailingSlash: parsed.trailingSlash, query, base, fileKey: fileKey(tenant.id, parsed.segments, parsed.trailingSlash) };
}

/**
 * A file's key in the static cache: tenant and path below its root (the
 * same file by its own host and by the userdir one). Made once per route;
 * the route memo hands the same string to every request for that target, so
 * the cache lookup neither builds nor hashes a new one.
 */
export function fileKey(tenantId: string, segments: readonly string[], trailingSlash: boolean): string {
  return `${tenantId}\0/${segments.join('/')}${trailingSlash ? '/' : ''}`;
}

