import type { OutgoingHttpHeader, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { DEFAULT_HEADERS } from '../core/config/headers.ts';
import type { Tenant } from '../core/registry.ts';
import { parseUrlPath } from '../lib/jail.ts';
import { splitTarget, type Route } from './route.ts';

/**
 * A tenant's response headers (`headers:` in its file), applied when an
 * answer's head is written, whoever writes it: the static files, the
 * suite's own pages, a handler or a proxied backend.
 *
 * - On the suite's own answers (files, redirects, error pages, list pages)
 *   the tenant's value replaces the suite's.
 * - On a handler's or a backend's answer their own value of a field wins,
 *   unless the entry says `override: true`; `proxied: false` leaves a
 *   backend's answers alone.
 * - As nginx's `add_header`, entries apply to 2xx and 3xx answers only,
 *   unless `always: true`; the defaults apply to every answer.
 * - "" sends no such field: it drops a default, or with `override` a
 *   handler's or backend's own value.
 */

/** Who wrote the answer: the suite itself, a handler, or a proxied backend. */
export type AnswerKind = 'own' | 'handler' | 'proxied';

interface Field {
  readonly name: string;
  readonly lower: string;
  /** "" drops the field. */
  readonly value: string;
  /** Replaces a handler's or backend's own value. */
  readonly override: boolean;
  /** Also on 4xx and 5xx answers. */
  readonly always: boolean;
  /** A default (never replaces a value anyone else set). */
  readonly fallback: boolean;
}

interface Rule {
  readonly re: RegExp;
  readonly proxied: boolean;
  readonly fields: readonly Field[];
}

const DEFAULTS: readonly Field[] = Object.entries(DEFAULT_HEADERS).map(([name, value]) => ({
  name,
  lower: name.toLowerCase(),
  value,
  override: false,
  always: true,
  fallback: true,
}));

/** `*` is any run of characters ("/" included); everything else is itself. */
export function globRegExp(pattern: string): RegExp {
  const body = pattern
    .split('*')
    .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  return new RegExp(`^${body}$`, 's');
}

const compiled = new WeakMap<Tenant, readonly Rule[]>();

function rulesOf(tenant: Tenant): readonly Rule[] {
  let rules = compiled.get(tenant);
  if (!rules) {
    rules = tenant.config.headers.map((e) => ({
      re: globRegExp(e.match),
      proxied: e.proxied,
      fields: Object.entries(e.set).map(([name, value]) => ({ name, lower: name.toLowerCase(), value, override: e.override, always: e.always, fallback: false })),
    }));
    compiled.set(tenant, rules);
  }
  return rules;
}

/** Per tenant, the fields already chosen for a kind and path (bounded: cleared when full). */
const chosenFor = new WeakMap<Tenant, Map<string, readonly Field[]>>();
const CHOSEN_MAX = 1024;

/**
 * The fields for one path of a tenant: per field the first entry that
 * matches, then the defaults for fields none set. The same path gives the
 * same list (the same object), so what is built from it can be kept.
 * `path` is only read when the tenant has entries of its own: pass a
 * function to compute it only then.
 */
export function fieldsFor(tenant: Tenant | undefined, path: string | (() => string), kind: AnswerKind): readonly Field[] {
  if (!tenant || tenant.config.headers.length === 0) return DEFAULTS;
  const p = typeof path === 'string' ? path : path();
  let memo = chosenFor.get(tenant);
  if (!memo) chosenFor.set(tenant, (memo = new Map()));
  const key = `${kind}\0${p}`;
  let fields = memo.get(key);
  if (!fields) {
    if (memo.size >= CHOSEN_MAX) memo.clear();
    fields = choose(tenant, p, kind);
    memo.set(key, fields);
  }
  return fields;
}

function choose(tenant: Tenant, path: string, kind: AnswerKind): readonly Field[] {
  const chosen = new Map<string, Field>();
  for (const rule of rulesOf(tenant)) {
    if (kind === 'proxied' && !rule.proxied) continue;
    if (!rule.re.test(path)) continue;
    for (const f of rule.fields) if (!chosen.has(f.lower)) chosen.set(f.lower, f);
  }
  for (const f of DEFAULTS) if (!chosen.has(f.lower)) chosen.set(f.lower, f);
  return [...chosen.values()];
}

/**
 * The path a tenant's patterns are matched against: decoded once, dot-segments
 * resolved (as the router sees it), within the tenant's site (a user page's
 * `/~id` left out). A path the router refused is matched as sent.
 */
export function sitePath(route: Route, url: string): string {
  if (route.kind === 'static') {
    return route.segments.length === 0 ? '/' : `/${route.segments.join('/')}${route.trailingSlash ? '/' : ''}`;
  }
  const rest = splitTarget(url, route.authority)?.rest ?? url;
  const q = rest.indexOf('?');
  const raw = q === -1 ? rest : rest.slice(0, q);
  const parsed = parseUrlPath(raw);
  if (!parsed.ok) return raw;
  return parsed.segments.length === 0 ? '/' : `/${parsed.segments.join('/')}${parsed.trailingSlash ? '/' : ''}`;
}

type Given = OutgoingHttpHeaders | OutgoingHttpHeader[] | undefined;

/** Position of a field in a flat [name, value, ...] list, by lower-case name; -1 when absent. */
function indexOf(list: readonly unknown[], lower: string): number {
  for (let i = 0; i < list.length; i += 2) {
    const name = String(list[i]);
    if (name.length === lower.length && name.toLowerCase() === lower) return i;
  }
  return -1;
}

/** The head about to be written, with the fields applied. The caller's list or object is never changed (the file cache shares its lists). */
function merge(res: ServerResponse, status: number, given: Given, fields: readonly Field[], kind: AnswerKind): Given {
  const error = status >= 400;
  let list: unknown[] | undefined;
  let owned = false;
  let obj: OutgoingHttpHeaders | undefined;
  if (Array.isArray(given)) {
    // Flat [name, value, ...], or [[name, value], ...] pairs.
    list = given.length > 0 && Array.isArray(given[0]) ? (given as unknown as unknown[][]).flatMap((p) => [p[0], p[1]]) : (given as unknown[]);
    owned = list !== given;
  } else if (given) {
    obj = given;
  }
  const objKey = (lower: string) => (obj ? Object.keys(obj).find((k) => k.toLowerCase() === lower) : undefined);
  for (const f of fields) {
    if (error && !f.always) continue;
    const replace = f.fallback ? false : kind === 'own' || f.override;
    const at = list ? indexOf(list, f.lower) : -1;
    const key = objKey(f.lower);
    if (!replace && (at !== -1 || key !== undefined || res.hasHeader(f.lower))) continue;
    if (replace) {
      res.removeHeader(f.lower);
      if (list && at !== -1) {
        const kept: unknown[] = [];
        for (let i = 0; i < list.length; i += 2) if (String(list[i]).toLowerCase() !== f.lower) kept.push(list[i], list[i + 1]);
        list = kept;
        owned = true;
      }
      if (obj && key !== undefined) {
        obj = { ...obj };
        for (const k of Object.keys(obj)) if (k.toLowerCase() === f.lower) delete obj[k];
      }
    }
    if (f.value === '') continue;
    if (list) {
      if (!owned) {
        list = list.slice();
        owned = true;
      }
      list.push(f.name, f.value);
    } else if (obj) {
      obj = obj === given ? { ...obj, [f.name]: f.value } : Object.assign(obj, { [f.name]: f.value });
    } else {
      res.setHeader(f.name, f.value);
    }
  }
  return (list as OutgoingHttpHeader[] | undefined) ?? obj;
}

/** A response with no headers of its own: what a precomputed head assumes. */
const BARE = { hasHeader: () => false, removeHeader: () => undefined, setHeader: () => undefined } as unknown as ServerResponse;

/**
 * A ready-made 200 head (a flat [name, value, ...] list, as the file cache
 * keeps them) with the suite's own-answer fields applied, as {@link applyHeaders}
 * would apply them to a response with no headers set beforehand. Kept
 * per list and fields by the caller, so a hit does no merging.
 */
export function ownHeadWith(list: readonly string[], fields: readonly Field[]): string[] {
  return merge(BARE, 200, list as string[], fields, 'own') as string[];
}

/** True when none of `fields` is already set on `res` (HSTS, Connection: close...), so a head from {@link ownHeadWith} is what applying them would give. */
export function noneSet(res: ServerResponse, fields: readonly Field[]): boolean {
  for (let i = 0; i < fields.length; i++) if (res.hasHeader(fields[i]!.lower)) return false;
  return true;
}

export type { Field as HeaderField };

const FIELDS = Symbol('tenant header fields');
const KIND = Symbol('answer kind');
type Decorated = ServerResponse & { [FIELDS]: readonly Field[]; [KIND]: AnswerKind };

/** One writeHead for every decorated response (no closure per request): the fields, then the class's own writeHead. */
function writeHeadWithFields(this: Decorated, status: number, ...rest: unknown[]): ServerResponse {
  const at = typeof rest[0] === 'string' ? 1 : 0;
  const merged = merge(this, status, rest[at] as Given, this[FIELDS], this[KIND]);
  if (merged !== undefined) rest[at] = merged;
  const own = (Object.getPrototypeOf(this) as { writeHead: (...a: unknown[]) => ServerResponse }).writeHead;
  return own.call(this, status, ...rest);
}

/** Applies the fields when the answer's head is written (explicitly, or by the first write or end). */
export function applyHeaders(res: ServerResponse, fields: readonly Field[], kind: AnswerKind): void {
  if (fields.length === 0) return;
  const d = res as Decorated;
  d[FIELDS] = fields;
  d[KIND] = kind;
  res.writeHead = writeHeadWithFields as unknown as ServerResponse['writeHead'];
}

/** The kind of answer a route gives. */
export function answerKind(route: Route): AnswerKind {
  return route.kind === 'cgi' ? 'handler' : route.kind === 'proxy' ? 'proxied' : 'own';
}
