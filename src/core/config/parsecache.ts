import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * Parsed tenant files, keyed by a hash of their text: a file whose text is
 * unchanged is not parsed again. With 10,000 tenants, parsing YAML is most
 * of a start and of every reload; a reload after one tenant's edit parses
 * that one file. Every file is still read on every load (reading is cheap;
 * a key made of the file's text cannot miss an edit the way one made of
 * sizes and times can, when two writes fall in the same clock tick). Kept
 * in memory by the server and, between starts, in a file under `<data>`; a
 * cache that cannot be read or written is a miss, never an error.
 *
 * Only the YAML parse is cached: validation and every cross-check run on
 * each load, so a changed schema or a clash between files is still found.
 */
export class ParseCache {
  private entries = new Map<string, { id: string; value: unknown }>();
  /** Bumped by every change; a file is written again only when it holds an older one. */
  private version = 0;
  private readonly written = new Map<string, number>();

  /** `file`: read now ({@link load}) and the one {@link save} writes when given none. */
  constructor(private readonly file?: string) {
    if (file) this.load(file);
  }

  /** Takes in what `file` holds (a missing or damaged file holds nothing). */
  load(file: string): void {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      // None yet (first start) or unreadable: every file is parsed once and the cache written anew.
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
    for (const [f, e] of Object.entries(s.entries as Record<string, { id?: unknown; value?: unknown } | null>)) {
      if (typeof e?.id === 'string') this.entries.set(f, { id: e.id, value: e.value });
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

  /** Remembers a parse; a value JSON cannot carry unchanged (`.inf`, `.nan`) is not cached. */
  set(file: string, id: string, value: unknown): void {
    if (!jsonSafe(value)) {
      this.entries.delete(file);
      return;
    }
    this.entries.set(file, { id, value });
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
  const tmp = `${file}.${process.pid}.tmp`;
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, file);
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
