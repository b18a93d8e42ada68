import { createHash } from 'node:crypto';
import { mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { readNoLink, replaceFile } from '../../lib/ownfile.ts';

/**
 * Parsed tenant files, keyed by a hash of their text: a file whose text is
 * unchanged is not parsed again. With 10,000 tenants, parsing YAML is most
 * of a start and of every reload; a reload after one tenant's edit parses
 * that one file. Kept in memory by the server and, between starts, in a
 * file under `<data>`; a cache that cannot be read or written is a miss,
 * never an error.
 *
 * A file is not even read again when its `stat` says it is the one read
 * before ({@link unchanged}: device, inode, size, modification and change
 * times to the nanosecond) and it had not changed for {@link RACY_MS}
 * before it was read. That margin is git's answer to "racily clean" files:
 * file times come from a clock that moves in ticks (milliseconds here, a
 * second or two on some file systems), so two writes of the same size within
 * one tick look alike; a file changed that recently is read and hashed on
 * every load until it is older. The change time cannot be set by anyone
 * (`touch` and `utimes` set it to now), so an edit with the old modification
 * time put back is seen too.
 *
 * Only the YAML parse is cached: validation and every cross-check run on
 * each load, so a changed schema or a clash between files is still found.
 */
export class ParseCache {
  private entries = new Map<string, { id: string; value: unknown; stat?: string; seen?: number }>();
  /** Bumped by every change; a file is written again only when it holds an older one. */
  private version = 0;
  private readonly written = new Map<string, number>();

  /**
   * `file`: read now ({@link load}) and the one {@link save} writes when given none.
   * `racyMs`: how long a file must have been unchanged, when it was read, to be known again by its `stat`.
   */
  constructor(
    private readonly file?: string,
    private readonly racyMs = RACY_MS,
  ) {
    if (file) this.load(file);
  }

  /**
   * The cached parse of `file` when its `stat` is the one recorded with it
   * and it was old enough then to tell (see the class); else undefined, and
   * the file is read and looked up by its text ({@link get}). `stat`, given
   * on a miss, is recorded by the {@link set} or {@link seen} that follows.
   */
  unchanged(file: string): { value: unknown } | { stat: string; at: number } | undefined {
    let st;
    try {
      st = statSync(file, { bigint: true });
    } catch {
      return undefined; // gone or unreachable: reading it says why
    }
    const stat = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    const e = this.entries.get(file);
    if (e && e.stat === stat && e.seen !== undefined && Number((st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs) / 1_000_000n) < e.seen - this.racyMs) return { value: e.value };
    return { stat, at: Date.now() };
  }

  /**
   * Records that `file`, found in the cache by its text, had this `stat` when it was read (see {@link unchanged}):
   * the latest such reading, so a file that was racy when first read is known by its stat once it is old enough.
   */
  seen(file: string, at: { stat: string; at: number }): void {
    const e = this.entries.get(file);
    if (!e || (e.stat === at.stat && e.seen === at.at)) return;
    e.stat = at.stat;
    e.seen = at.at;
    this.version++;
  }

  /** Takes in what `file` holds (a missing or damaged file holds nothing). */
  load(file: string): void {
    let text: string;
    try {
      // Never through a link (a start as root reads this in <data>, the service user's), never waiting on a FIFO.
      text = readNoLink(file).toString('utf8');
    } catch {
      // None yet (first start), a link, not a regular file, or unreadable: every file is parsed once and the cache written anew.
      return;
    }
    this.loadText(text);
  }

  /** Takes in the text of a saved cache (one that is damaged or of another format holds nothing). */
  loadText(text: string): void {
    let saved: unknown;
    try {
      saved = JSON.parse(text);
    } catch {
      // Cut short or not ours: every file is parsed once and the cache written anew.
      return;
    }
    const s = saved as { format?: unknown; entries?: unknown } | null;
    if (!s || typeof s !== 'object' || s.format !== FORMAT || !s.entries || typeof s.entries !== 'object') return;
    for (const [f, e] of Object.entries(s.entries as Record<string, { id?: unknown; value?: unknown; stat?: unknown; seen?: unknown } | null>)) {
      if (typeof e?.id !== 'string') continue;
      const known = typeof e.stat === 'string' && typeof e.seen === 'number' ? { stat: e.stat, seen: e.seen } : {};
      this.entries.set(f, { id: e.id, value: e.value, ...known });
    }
  }

  /** The key of a file's text. */
  static identity(text: string): string {
    return createHash('sha256').update(text).digest('base64');
  }

  /** The parsed value of `file` if it was cached under this identity. */
  get(file: string, id: string): { value: unknown } | undefined {
    const e = this.entries.get(file);
    return e && e.id === id ? { value: e.value } : undefined;
  }

  /** Remembers a parse (with the file's `stat` when read, see {@link unchanged}); a value JSON cannot carry unchanged (`.inf`, `.nan`) is not cached. */
  set(file: string, id: string, value: unknown, at?: { stat: string; at: number }): void {
    if (!jsonSafe(value)) {
      this.entries.delete(file);
      return;
    }
    this.entries.set(file, { id, value, ...(at ? { stat: at.stat, seen: at.at } : {}) });
    this.version++;
  }

  /** Drops every file not in `files` (removed tenants). */
  keepOnly(files: ReadonlySet<string>): void {
    for (const f of this.entries.keys()) {
      if (!files.has(f)) {
        this.entries.delete(f);
        this.version++;
      }
    }
  }

  /**
   * Writes `file` if anything changed since it was last written; returns why
   * it could not, if it could not. `write` puts the text in place (by default
   * atomically, mode 0600, the folder made if missing).
   */
  save(file = this.file, write: (file: string, text: string) => void = writeAtomic): string | undefined {
    if (!file || this.written.get(file) === this.version) return undefined;
    try {
      write(file, JSON.stringify({ format: FORMAT, entries: Object.fromEntries(this.entries) }));
      this.written.set(file, this.version);
      return undefined;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err));
    }
  }
}

function writeAtomic(file: string, text: string): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  // Never through a link: <data> is the service user's, and a start as root writes this before the drop to it.
  replaceFile(file, text, 0o600);
}

let shared: ParseCache | undefined;

/**
 * The process's cache, in memory (the server also loads and saves it under
 * `<data>`, naming the file each time): keyed by the text parsed, it serves every
 * caller and config folder alike, so the checks of a panel or CLI edit
 * (which load the whole folder with one file changed) parse that one file.
 */
export function sharedParseCache(): ParseCache {
  return (shared ??= new ParseCache());
}

/** The cache's file under `<data>`. */
export const PARSE_CACHE_FILE = 'config-cache.json';

/** Bumped whenever what is cached changes meaning (the YAML options of the loader, say). */
const FORMAT = 2;

/**
 * How long a file must have been unchanged when it was read for its `stat` to stand for its text later: well
 * over the tick of any file system's clock (a few ms on ext4 and tmpfs, 1 s on ext3, 2 s on FAT).
 */
export const RACY_MS = 3_000;

/** True if JSON gives `v` back exactly: plain objects and arrays of strings, finite numbers, booleans and null. */
export function jsonSafe(v: unknown): boolean {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return true;
  if (typeof v === 'number') return Number.isFinite(v) && !Object.is(v, -0);
  if (Array.isArray(v)) return v.every(jsonSafe);
  if (typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    return Object.keys(v).every((k) => k !== '__proto__' && jsonSafe((v as Record<string, unknown>)[k]));
  }
  return false;
}
