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

/** The fields for one path of a tenant: per field the first entry that matches, then the defaults for fields none set. */
export function fieldsFor(tenant: Tenant | undefined, path: string, kind: AnswerKind): readonly Field[] {
  if (!tenant || tenant.config.headers.length === 0) return DEFAULTS;
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

/** Flat [name, value, ...] from the flat or pair form writeHead takes. */
function flat(list: readonly unknown[]): unknown[] {
  return list.length > 0 && Array.isArray(list[0]) ? (list as unknown[][]).flatMap((p) => [p[0], p[1]]) : [...list];
}

/** The head about to be written, with the fields applied. */
function merge(res: ServerResponse, status: number, given: Given, fields: readonly Field[], kind: AnswerKind): Given {
  const error = status >= 400;
  let list: unknown[] | undefined;
  let obj: OutgoingHttpHeaders | undefined;
  let givenNames: Set<string>;
  if (Array.isArray(given)) {
    list = flat(given);
    givenNames = new Set(list.filter((_, i) => i % 2 === 0).map((n) => String(n).toLowerCase()));
  } else if (given) {
    obj = { ...given };
    givenNames = new Set(Object.keys(obj).map((n) => n.toLowerCase()));
  } else {
    givenNames = new Set();
  }
  for (const f of fields) {
    if (error && !f.always) continue;
    const replace = f.fallback ? false : kind === 'own' || f.override;
    if (!replace && (givenNames.has(f.lower) || res.hasHeader(f.lower))) continue;
    if (replace) {
      res.removeHeader(f.lower);
      if (list && givenNames.has(f.lower)) {
        const kept: unknown[] = [];
        for (let i = 0; i < list.length; i += 2) if (String(list[i]).toLowerCase() !== f.lower) kept.push(list[i], list[i + 1]);
        list = kept;
      }
      if (obj && givenNames.has(f.lower)) for (const k of Object.keys(obj)) if (k.toLowerCase() === f.lower) delete obj[k];
    }
    if (f.value === '') continue;
    if (list) list.push(f.name, f.value);
    else if (obj) obj[f.name] = f.value;
    else res.setHeader(f.name, f.value);
  }
  return (list as OutgoingHttpHeader[] | undefined) ?? obj;
}

/** Applies the fields when the answer's head is written (explicitly, or by the first write or end). */
export function applyHeaders(res: ServerResponse, fields: readonly Field[], kind: AnswerKind): void {
  if (fields.length === 0) return;
  const writeHead = res.writeHead;
  res.writeHead = function (this: ServerResponse, status: number, ...rest: unknown[]) {
    const at = typeof rest[0] === 'string' ? 1 : 0;
    const merged = merge(this, status, rest[at] as Given, fields, kind);
    if (merged !== undefined) rest[at] = merged;
    return (writeHead as (...a: unknown[]) => ServerResponse).call(this, status, ...rest);
  } as typeof res.writeHead;
}

/** The kind of answer a route gives. */
export function answerKind(route: Route): AnswerKind {
  return route.kind === 'cgi' ? 'handler' : route.kind === 'proxy' ? 'proxied' : 'own';
}
