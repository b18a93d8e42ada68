import { statSync } from 'node:fs';
import { promisify } from 'node:util';
import zlib from 'node:zlib';

const gzip = promisify(zlib.gzip);
const brotli = promisify(zlib.brotliCompress);

/** A file's identity at the time it was read: any change to it makes the entry stale. */
export interface FileStamp {
  ino: number;
  size: number;
  mtimeMs: number;
}

/** A small file held in memory with its ready-made compressed variants. */
export class CachedFile {
  private gz: Promise<Buffer> | undefined;
  private br: Promise<Buffer> | undefined;

  constructor(
    readonly real: string,
    readonly stamp: FileStamp,
    readonly body: Buffer,
  ) {}

  /** The body in `coding`, compressed once and kept. */
  variant(coding: 'gzip' | 'br'): Promise<Buffer> {
    if (coding === 'gzip') return (this.gz ??= gzip(this.body, { level: 6 }));
    return (this.br ??= brotli(this.body, {
      params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 6, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: this.body.length },
    }));
  }

  /** Bytes this entry holds (body and finished variants). */
  get weight(): number {
    return this.body.length * 2 + 256;
  }
}

/**
 * The static-file memory cache. Keys are `<tenant>\0<normalised path>`.
 * Every hit is revalidated with one stat of the real path (inode, size,
 * mtime), so an upload over FTP, which replaces the file by rename, shows
 * on the very next request. Eviction is oldest-first within a byte budget.
 */
export class FileCache {
  private readonly entries = new Map<string, CachedFile>();
  private used = 0;

  constructor(
    readonly maxFile: number,
    private readonly budget: number,
  ) {}

  get(key: string): CachedFile | undefined {
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    const st = statSync(hit.real, { throwIfNoEntry: false });
    if (st && st.ino === hit.stamp.ino && st.size === hit.stamp.size && st.mtimeMs === hit.stamp.mtimeMs && st.isFile()) {
      return hit;
    }
    this.delete(key);
    return undefined;
  }

  set(key: string, file: CachedFile): void {
    if (file.body.length > this.maxFile) return;
    this.delete(key);
    while (this.used + file.weight > this.budget && this.entries.size > 0) {
      const oldest = this.entries.keys().next().value as string;
      this.delete(oldest);
    }
    if (file.weight > this.budget) return;
    this.entries.set(key, file);
    this.used += file.weight;
  }

  delete(key: string): void {
    const e = this.entries.get(key);
    if (e) {
      this.entries.delete(key);
      this.used -= e.weight;
    }
  }

  clear(): void {
    this.entries.clear();
    this.used = 0;
  }

  get size(): number {
    return this.entries.size;
  }
}
