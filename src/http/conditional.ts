import type { IncomingHttpHeaders } from 'node:http';

/** What a representation offers for conditional and range evaluation. */
export interface Validators {
  etag: string;
  /** Last modification time, ms since the epoch. */
  mtimeMs: number;
  lastModified: string;
}

export type Precondition = 'proceed' | 'not-modified' | 'failed';

function tagList(value: string): string[] {
  return value.split(',').map((t) => t.trim()).filter(Boolean);
}

const weakless = (t: string) => (t.startsWith('W/') ? t.slice(2) : t);

function httpDateSeconds(value: string | undefined): number | undefined {
  if (!value) return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : Math.floor(ms / 1000);
}

/**
 * RFC 9110 §13.2.2 precondition order for GET/HEAD: If-Match, then
 * If-Unmodified-Since (only without If-Match), then If-None-Match, then
 * If-Modified-Since (only without If-None-Match).
 */
export function evaluatePreconditions(h: IncomingHttpHeaders, v: Validators): Precondition {
  const mtime = Math.floor(v.mtimeMs / 1000);
  const ifMatch = h['if-match'];
  if (ifMatch !== undefined) {
    // Strong comparison: a weak tag never matches.
    const ok = ifMatch.trim() === '*' || tagList(ifMatch).some((t) => !t.startsWith('W/') && t === v.etag);
    if (!ok) return 'failed';
  } else {
    const ius = httpDateSeconds(h['if-unmodified-since']);
    if (ius !== undefined && mtime > ius) return 'failed';
  }
  const inm = h['if-none-match'];
  if (inm !== undefined) {
    // Weak comparison (§8.8.3.2); If-None-Match wins over If-Modified-Since.
    const match = inm.trim() === '*' || tagList(inm).some((t) => weakless(t) === weakless(v.etag));
    return match ? 'not-modified' : 'proceed';
  }
  const ims = httpDateSeconds(h['if-modified-since']);
  if (ims !== undefined && mtime <= ims) return 'not-modified';
  return 'proceed';
}

export type RangeResult =
  | { kind: 'full' }
  | { kind: 'partial'; start: number; end: number }
  | { kind: 'unsatisfiable' };

/**
 * One byte range per RFC 9110 §14. A header we cannot parse, or one that
 * asks for several ranges, is ignored (a full 200 is always a valid answer);
 * a syntactically valid range that starts past the end is unsatisfiable.
 * If-Range must match the current validator exactly, or the range is ignored.
 */
export function evaluateRange(h: IncomingHttpHeaders, size: number, v: Validators): RangeResult {
  const header = h.range;
  if (header === undefined) return { kind: 'full' };
  const ifRange = h['if-range'];
  if (typeof ifRange === 'string') {
    const ir = ifRange.trim();
    if (ir.startsWith('"') || ir.startsWith('W/')) {
      if (ir !== v.etag) return { kind: 'full' };
    } else if (httpDateSeconds(ir) !== Math.floor(v.mtimeMs / 1000)) {
      return { kind: 'full' };
    }
  }
  const m = /^bytes=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m || (m[1] === '' && m[2] === '')) return { kind: 'full' };
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return { kind: 'unsatisfiable' };
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return { kind: 'full' };
  }
  if (start >= size || size === 0) return { kind: 'unsatisfiable' };
  return { kind: 'partial', start, end };
}

export type Coding = 'br' | 'gzip' | 'identity';

/** Picks br, then gzip, among the codings Accept-Encoding allows with q > 0. */
export function chooseEncoding(acceptEncoding: string | undefined): Coding {
  if (!acceptEncoding) return 'identity';
  let br = false;
  let gzip = false;
  for (const part of acceptEncoding.split(',')) {
    const [name, ...params] = part.trim().toLowerCase().split(';');
    const q = params.map((p) => /^\s*q=([0-9.]+)\s*$/.exec(p)).find(Boolean);
    if (q && Number(q[1]) === 0) continue;
    if (name === 'br') br = true;
    else if (name === 'gzip' || name === 'x-gzip') gzip = true;
    else if (name === '*') {
      br = true;
      gzip = true;
    }
  }
  return br ? 'br' : gzip ? 'gzip' : 'identity';
}
