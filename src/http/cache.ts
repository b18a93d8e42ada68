import { statSync } from 'node:fs';
import zlib from 'node:zlib';
import mimeDb from 'mime-db';
import mime from 'mime-types';
import type { Coding, Validators } from './conditional.ts';

/** A file's identity at the time it was read: any change to it makes the entry stale. */
export interface FileStamp {
  ino: number;
  size: number;
  mtimeMs: number;
}

/** Bodies smaller than this are not worth compressing. */
export const MIN_COMPRESS = 256;

/** Content type (with charset for text) and whether compressing it pays, from a file name. */
export function typeFor(name: string): { type: string; compressible: boolean } {
  const type = mime.contentType(name) || 'application/octet-stream';
  const essence = type.split(';')[0]!;
  const entry = (mimeDb as Record<string, { compressible?: boolean }>)[essence];
  // mime-db calls application/octet-stream compressible; unknown bytes are usually already packed.
  const compressible = essence !== 'application/octet-stream' && (entry?.compressible ?? (essence.startsWith('text/') || /\+(json|xml)$/.test(essence)));
  return { type, compressible };
}

/** ETag and Last-Modified for a stamp and a content coding. */
export function validatorsOf(stamp: FileStamp, coding: Coding): Validators {
  // Size and mtime (in µs), never the inode: an inode tells the outside about
  // the filesystem (CVE-2003-1418; Apache 2.4 left it out of FileETag), and
  // identical bytes with the same mtime (a re-upload, a second node serving
  // a copy) must give one tag. Every upload through the suite sets a new
  // mtime, so a changed file gets a changed tag.
  const base = `${stamp.size.toString(36)}-${Math.round(stamp.mtimeMs * 1000).toString(36)}`;
  return {
    etag: coding === 'identity' ? `"${base}"` : `"${base}-${coding}"`,
    mtimeMs: stamp.mtimeMs,
    lastModified: new Date(stamp.mtimeMs).toUTCString(),
  };
}

interface Variant {
  body: Buffer;
  validators: Validators;
  /** Ready-made response headers for a plain 200 (flat name/value list, as writeHead takes it). */
  headers: string[];
  /** The same with a tenant's response headers applied, for the last field set used (static.ts makes it). */
  own?: { fields: object; head: string[] };
}

/**
 * A small file held in memory: its body, its compressed forms (made once,
 * off the event loop) and the response headers of each, so a hit costs no
 * formatting work.
 */
export class CachedFile {
  readonly type: string;
  readonly compressible: boolean;
  /** When the file was last checked against the disk (ms since the epoch). */
  checkedAt = Date.now();
  private readonly variants: Partial<Record<Coding, Variant>> = {};
  private readonly pending: Partial<Record<Coding, Promise<void>>> = {};

  constructor(
    readonly real: string,
    readonly stamp: FileStamp,
    readonly body: Buffer,
    name: string,
  ) {
    ({ type: this.type, compressible: this.compressible } = typeFor(name));
    this.variants.identity = this.makeVariant('identity', body);
  }

  /** The coding to answer with, given Accept-Encoding (identity for ranges). */
  codingFor(acceptEncoding: string | undefined, chooser: (ae: string | undefined) => Coding): Coding {
    return this.compressible && this.body.length >= MIN_COMPRESS ? chooser(acceptEncoding) : 'identity';
  }

  /** The variant if it is ready; otherwise starts making it and returns undefined. */
  variant(coding: Coding): Variant | undefined {
    const v = this.variants[coding];
    if (v || coding === 'identity') return v;
    void this.prepare(coding);
    return undefined;
  }

  /** Resolves once `coding`'s variant exists. */
  prepare(coding: Coding): Promise<void> {
    if (this.variants[coding]) return Promise.resolve();
    return (this.pending[coding] ??= new Promise<void>((resolve, reject) => {
      const done = (err: Error | null, out: Buffer) => {
        if (err) return reject(err);
        this.variants[coding] = this.makeVariant(coding, out);
        resolve();
      };
      if (coding === 'gzip') zlib.gzip(this.body, { level: 6 }, done);
      else
        zlib.brotliCompress(
          this.body,
          { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 6, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: this.body.length } },
          done,
        );
    }));
  }

  private makeVariant(coding: Coding, body: Buffer): Variant {
    const validators = validatorsOf(this.stamp, coding);
    const headers = [
      'Content-Type', this.type,
      'Last-Modified', validators.lastModified,
      'ETag', validators.etag,
      'Accept-Ranges', 'bytes',
      'X-Content-Type-Options', 'nosniff',
      'Content-Length', String(body.length),
    ];
    if (this.compressible) headers.push('Vary', 'Accept-Encoding');
    if (coding !== 'identity') headers.push('Content-Encoding', coding);
    return { body, validators, headers };
  }

  /** Bytes this entry may hold (body and compressed forms). */
  get weight(): number {
    return this.body.length * 2 + 512;
  }
}

/**
 * The static-file memory cache. Keys are `<tenant>\0<normalised path>`.
 * A hit is revalidated with one stat of the real path (inode, size, mtime)
 * when it was last checked more than `revalidateMs` ago (nginx's
 * open_file_cache_valid; 0 checks on every hit). Changes made through the
 * suite (FTP) call {@link dropTenant}, so they show on the very next
 * request. Eviction is oldest-first within a byte budget.
 */
function tenantOf(key: string): string {
  const i = key.indexOf('\0');
  return i === -1 ? '' : key.slice(0, i);
}

export class FileCache {
  private readonly entries = new Map<string, CachedFile>();
  /** Keys per tenant, so an upload forgets its tenant's entries without a walk over every tenant's. */
  private readonly byTenant = new Map<string, Set<string>>();
  private used = 0;

  constructor(
    readonly maxFile: number,
    private readonly budget: number,
    private readonly revalidateMs: number,
  ) {}

  get(key: string, now = Date.now()): CachedFile | undefined {
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    if (now - hit.checkedAt < this.revalidateMs) return hit;
    const st = statSync(hit.real, { throwIfNoEntry: false });
    if (st && st.ino === hit.stamp.ino && st.size === hit.stamp.size && st.mtimeMs === hit.stamp.mtimeMs && st.isFile()) {
      hit.checkedAt = now;
      return hit;
    }
    this.delete(key);
    return undefined;
  }

  /** Forgets every entry of one tenant. */
  dropTenant(tenantId: string): void {
    const keys = this.byTenant.get(tenantId);
    if (keys) for (const key of [...keys]) this.delete(key);
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
    const tenant = tenantOf(key);
    let keys = this.byTenant.get(tenant);
    if (!keys) this.byTenant.set(tenant, (keys = new Set()));
    keys.add(key);
  }

  delete(key: string): void {
    const e = this.entries.get(key);
    if (e) {
      this.entries.delete(key);
      this.used -= e.weight;
      const tenant = tenantOf(key);
      const keys = this.byTenant.get(tenant);
      keys?.delete(key);
      if (keys?.size === 0) this.byTenant.delete(tenant);
    }
  }

  clear(): void {
    this.entries.clear();
    this.byTenant.clear();
    this.used = 0;
  }

  get size(): number {
    return this.entries.size;
  }
}
