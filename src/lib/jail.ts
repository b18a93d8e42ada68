import { realpathSync } from 'node:fs';
import { realpath } from 'node:fs/promises';
import path from 'node:path';

/** Why a path was refused; callers map this to their protocol (HTTP 400/403/404, FTP 550). */
export type JailRefusal =
  | 'bad-encoding' // malformed %-escape
  | 'bad-char' // NUL, backslash, or an encoded "/" or "\"
  | 'escape' // ".." above the root
  | 'hidden'; // a dotfile or dot-folder

export type ParsedPath =
  | {
      ok: true;
      segments: string[];
      trailingSlash: boolean;
      /** True when the path had no empty, "." or ".." segments: its raw form is already normal. */
      clean: boolean;
    }
  | { ok: false; refusal: JailRefusal };

/** Dot-names that are public by convention (RFC 8615). */
const PUBLIC_DOT_NAMES = new Set(['.well-known']);

/**
 * Turns the path part of a URL (no query) into safe path segments relative
 * to a jail root. Decodes exactly once; never "cleans up" a hostile path:
 * it is refused instead.
 *
 * - `%2f`, `%5c` (encoded separators), `%00`, a raw `\` or NUL: bad-char.
 * - `..` that climbs above the root: escape; `..` inside it is resolved.
 * - any segment starting with "." (but `.well-known`): hidden.
 * - double encoding (`%252e`) stays literal: it names a file called `%2e`.
 */
export function parseUrlPath(rawPath: string): ParsedPath {
  if (rawPath.includes('\\') || rawPath.includes('\0')) return { ok: false, refusal: 'bad-char' };
  if (/%(?:2f|5c|00)/i.test(rawPath)) return { ok: false, refusal: 'bad-char' };
  let decoded: string;
  try {
    decoded = rawPath.includes('%') ? decodeURIComponent(rawPath) : rawPath;
  } catch {
    return { ok: false, refusal: 'bad-encoding' };
  }
  return splitSegments(decoded);
}

/**
 * Splits an already-decoded path ("/a/b/../c", as an FTP client sends it)
 * into segments, with the same refusals as {@link parseUrlPath}.
 */
export function splitSegments(decoded: string): ParsedPath {
  if (decoded.includes('\0') || decoded.includes('\\')) return { ok: false, refusal: 'bad-char' };
  const segments: string[] = [];
  const parts = decoded.split('/');
  let clean = true;
  for (let i = 0; i < parts.length; i++) {
    const seg = parts[i]!;
    if (seg === '' || seg === '.') {
      // A leading "/" and a trailing "/" are the only empty segments a normal path has.
      if (seg === '.' || (i !== 0 && i !== parts.length - 1)) clean = false;
      continue;
    }
    if (seg === '..') {
      clean = false;
      if (segments.length === 0) return { ok: false, refusal: 'escape' };
      segments.pop();
      continue;
    }
    segments.push(seg);
  }
  if (segments.some((s) => s.charCodeAt(0) === 46 /* . */ && !PUBLIC_DOT_NAMES.has(s))) {
    return { ok: false, refusal: 'hidden' };
  }
  return { ok: true, segments, trailingSlash: decoded.endsWith('/'), clean };
}

/** True when `real` is `root` or lies below it (both absolute and already real). */
export function isInside(root: string, real: string): boolean {
  return real === root || (real.startsWith(root) && real.charCodeAt(root.length) === 47 /* / */);
}

export type Resolved = { ok: true; real: string } | { ok: false; reason: 'missing' | 'escape' };

/**
 * Resolves `segments` under `realRoot` (itself a real path) following
 * symlinks, and accepts the result only if its real path stays inside
 * `realRoot`. A symlink whose target is outside, even one that exists, is
 * an escape. A path that does not exist is `missing`.
 */
export async function resolveInJail(realRoot: string, segments: readonly string[]): Promise<Resolved> {
  try {
    return judge(realRoot, await realpath(candidateOf(realRoot, segments)));
  } catch (err) {
    return missing(err);
  }
}

/**
 * {@link resolveInJail} without the thread pool, for callers that resolve
 * a path per command: a cached lookup done in place costs ~2 µs of the
 * event loop, while an awaited one costs it ~20 µs (the hand-off to and
 * from a pool thread) and the command twice that in latency. A lookup
 * that misses the kernel's caches blocks the loop for a disk read; nginx
 * makes the same trade for its open() and stat().
 */
export function resolveInJailSync(realRoot: string, segments: readonly string[]): Resolved {
  try {
    return judge(realRoot, realpathSync.native(candidateOf(realRoot, segments)));
  } catch (err) {
    return missing(err);
  }
}

function candidateOf(realRoot: string, segments: readonly string[]): string {
  return segments.length === 0 ? realRoot : path.join(realRoot, ...segments);
}

function judge(realRoot: string, real: string): Resolved {
  return isInside(realRoot, real) ? { ok: true, real } : { ok: false, reason: 'escape' };
}

function missing(err: unknown): Resolved {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP' || code === 'ENAMETOOLONG') return { ok: false, reason: 'missing' };
  throw err;
}
