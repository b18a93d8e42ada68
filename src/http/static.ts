import { constants as fsc } from 'node:fs';
import { open, realpath, type FileHandle } from 'node:fs/promises';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import mimeDb from 'mime-db';
import mime from 'mime-types';
import type { HttpOutcome } from '../core/contracts.ts';
import type { Logger } from '../core/log.ts';
import type { Tenant } from '../core/registry.ts';
import { resolveInJail } from '../lib/jail.ts';
import { CachedFile, FileCache, type FileStamp } from './cache.ts';
import { chooseEncoding, evaluatePreconditions, evaluateRange, type Coding, type Validators } from './conditional.ts';
import { errorPage } from './pages.ts';

export interface StaticRequest {
  req: IncomingMessage;
  res: ServerResponse;
  tenant: Tenant;
  /** Decoded, normalised path segments below the tenant root. */
  segments: string[];
  trailingSlash: boolean;
  /** Raw query string without "?", or "". */
  query: string;
  /** URL prefix the segments sit under: "" on a tenant's own host, "/~id" on the userdir host. */
  base: string;
  remote: string;
}

/** What was sent, for the access log and the traffic counters. */
export type Outcome = HttpOutcome;

const MIN_COMPRESS = 256;

function typeFor(name: string): { type: string; compressible: boolean } {
  const type = mime.contentType(name) || 'application/octet-stream';
  const essence = type.split(';')[0]!;
  const entry = (mimeDb as Record<string, { compressible?: boolean }>)[essence];
  // mime-db calls application/octet-stream compressible; unknown bytes are usually already packed.
  const compressible = essence !== 'application/octet-stream' && (entry?.compressible ?? (essence.startsWith('text/') || /\+(json|xml)$/.test(essence)));
  return { type, compressible };
}

function validatorsOf(stamp: FileStamp, coding: Coding): Validators {
  // Inode, size and mtime (in µs): an atomic replace changes the inode even
  // within one mtime tick, so the tag changes whenever the content can have.
  const base = `${stamp.ino.toString(36)}-${stamp.size.toString(36)}-${Math.round(stamp.mtimeMs * 1000).toString(36)}`;
  return {
    etag: coding === 'identity' ? `"${base}"` : `"${base}-${coding}"`,
    mtimeMs: stamp.mtimeMs,
    lastModified: new Date(stamp.mtimeMs).toUTCString(),
  };
}

function encodePath(segments: readonly string[]): string {
  return segments.map((s) => encodeURIComponent(s)).join('/');
}

/** Serves a tenant's static files, jailed to its root, with a memory cache for small files. */
export class StaticFiles {
  private realRoots = new Map<string, Promise<string | undefined>>();

  constructor(
    readonly cache: FileCache,
    private readonly log: Logger,
  ) {}

  /** Forgets what was learned about roots and files (after a reload). */
  reset(): void {
    this.realRoots.clear();
    this.cache.clear();
  }

  private realRoot(tenant: Tenant): Promise<string | undefined> {
    let p = this.realRoots.get(tenant.id);
    if (!p) {
      p = realpath(tenant.root).catch(() => undefined);
      this.realRoots.set(tenant.id, p);
      // A missing root may be created later (tenant add, first upload): do not remember the miss.
      void p.then((r) => {
        if (r === undefined) this.realRoots.delete(tenant.id);
      });
    }
    return p;
  }

  async serve(r: StaticRequest): Promise<Outcome> {
    const key = `${r.tenant.id}\0/${r.segments.join('/')}${r.trailingSlash ? '/' : ''}`;
    const name = r.segments.length === 0 || r.trailingSlash ? 'index.html' : r.segments[r.segments.length - 1]!;
    const hit = this.cache.get(key);
    if (hit) return this.sendFile(r, name, hit.stamp, hit, undefined);

    const root = await this.realRoot(r.tenant);
    if (root === undefined) return this.notFound(r);
    const found = await resolveInJail(root, r.segments);
    if (!found.ok) {
      if (found.reason === 'escape') return this.refuse(r, 'symlink leads outside the tenant root');
      return this.notFound(r);
    }
    let real = found.real;
    let fh = await this.openRegularOrDir(real);
    if (fh === 'dir') {
      if (!r.trailingSlash) return this.redirectToSlash(r);
      const index = await resolveInJail(root, [...r.segments, 'index.html']);
      if (!index.ok) {
        if (index.reason === 'escape') return this.refuse(r, 'index.html leads outside the tenant root');
        return this.notFound(r);
      }
      real = index.real;
      fh = await this.openRegularOrDir(real);
    } else if (fh !== undefined && r.trailingSlash) {
      await fh.close();
      return this.notFound(r);
    }
    if (fh === undefined || fh === 'dir') return this.notFound(r);
    return this.serveHandle(r, key, name, real, fh);
  }

  /** Opens without following a final symlink; answers 'dir' for folders and undefined for anything not a regular file. */
  private async openRegularOrDir(real: string): Promise<FileHandle | 'dir' | undefined> {
    let fh: FileHandle;
    try {
      fh = await open(real, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
    } catch {
      return undefined;
    }
    const st = await fh.stat();
    if (st.isFile()) return fh;
    await fh.close();
    return st.isDirectory() ? 'dir' : undefined;
  }

  private async serveHandle(r: StaticRequest, key: string | undefined, name: string, real: string, fh: FileHandle): Promise<Outcome> {
    let closed = false;
    const close = () => {
      if (!closed) {
        closed = true;
        void fh.close().catch(() => undefined);
      }
    };
    try {
      const st = await fh.stat();
      const stamp: FileStamp = { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
      if (st.size <= this.cache.maxFile) {
        const body = await fh.readFile();
        close();
        if (body.length !== st.size) return this.sendFile(r, name, { ...stamp, size: body.length }, undefined, undefined);
        const cached = new CachedFile(real, stamp, body);
        if (key !== undefined) this.cache.set(key, cached);
        return this.sendFile(r, name, stamp, cached, undefined);
      }
      closed = true; // the stream owns the handle now
      return await this.sendFile(r, name, stamp, undefined, fh);
    } finally {
      close();
    }
  }

  /** Sends one file: preconditions, range, compression, HEAD. */
  private async sendFile(r: StaticRequest, name: string, stamp: FileStamp, cached: CachedFile | undefined, fh: FileHandle | undefined, status = 200): Promise<Outcome> {
    const { req, res } = r;
    const { type, compressible } = typeFor(name);
    const wantsRange = status === 200 && req.headers.range !== undefined;
    const coding: Coding = compressible && stamp.size >= MIN_COMPRESS && !wantsRange ? chooseEncoding(req.headers['accept-encoding']) : 'identity';
    const v = validatorsOf(stamp, coding);
    const headers: OutgoingHttpHeaders = {
      'Content-Type': type,
      'Last-Modified': v.lastModified,
      ETag: v.etag,
      'Accept-Ranges': 'bytes',
      'X-Content-Type-Options': 'nosniff',
    };
    if (compressible) headers.Vary = 'Accept-Encoding';

    const closeFh = () => void fh?.close().catch(() => undefined);
    if (status === 200) {
      const pre = evaluatePreconditions(req.headers, v);
      if (pre !== 'proceed') {
        closeFh();
        if (pre === 'failed') return this.plain(res, 412, req.method === 'HEAD');
        res.writeHead(304, { ETag: v.etag, 'Last-Modified': v.lastModified, ...(compressible ? { Vary: 'Accept-Encoding' } : {}) });
        res.end();
        return { status: 304, bytes: 0 };
      }
    }

    let start = 0;
    let end = stamp.size - 1;
    if (wantsRange) {
      const range = evaluateRange(req.headers, stamp.size, v);
      if (range.kind === 'unsatisfiable') {
        closeFh();
        res.writeHead(416, { 'Content-Range': `bytes */${stamp.size}`, 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': errorPage(416).length });
        res.end(req.method === 'HEAD' ? undefined : errorPage(416));
        return { status: 416, bytes: req.method === 'HEAD' ? 0 : errorPage(416).length };
      }
      if (range.kind === 'partial') {
        status = 206;
        start = range.start;
        end = range.end;
        headers['Content-Range'] = `bytes ${start}-${end}/${stamp.size}`;
      }
    }
    const head = req.method === 'HEAD';

    if (cached) {
      let body = cached.body;
      if (coding !== 'identity') {
        body = await cached.variant(coding);
        headers['Content-Encoding'] = coding;
      } else if (status === 206) {
        body = body.subarray(start, end + 1);
      }
      headers['Content-Length'] = body.length;
      res.writeHead(status, headers);
      res.end(head ? undefined : body);
      return { status, bytes: head ? 0 : body.length };
    }

    // A large file: streamed from the open handle, compressed on the fly when asked.
    if (!fh) throw new Error('sendFile needs a cached body or an open file');
    if (coding === 'identity') headers['Content-Length'] = end - start + 1;
    else headers['Content-Encoding'] = coding;
    res.writeHead(status, headers);
    if (head || stamp.size === 0) {
      closeFh();
      res.end();
      return { status, bytes: 0 };
    }
    const source = fh.createReadStream({ start, end, autoClose: true });
    let bytes = 0;
    const counter = (chunk: Buffer | string) => {
      bytes += chunk.length;
    };
    try {
      if (coding === 'identity') {
        source.on('data', counter);
        await pipeline(source, res);
      } else {
        const z = coding === 'br' ? zlib.createBrotliCompress({ params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 4 } }) : zlib.createGzip({ level: 6 });
        z.on('data', counter);
        await pipeline(source, z, res);
      }
    } catch {
      // The client went away mid-transfer; the access log records what was sent.
      res.destroy();
    }
    return { status, bytes };
  }

  private plain(res: ServerResponse, status: number, head: boolean): Outcome {
    const page = errorPage(status);
    res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': page.length, 'X-Content-Type-Options': 'nosniff' });
    res.end(head ? undefined : page);
    return { status, bytes: head ? 0 : page.length };
  }

  /** 301 to the same folder with its slash. The Location is always one "/" followed by a path: never `//host`. */
  private redirectToSlash(r: StaticRequest): Outcome {
    const location = `${r.base}/${encodePath(r.segments)}/${r.query ? `?${r.query}` : ''}`;
    const body = Buffer.from(`<!doctype html><title>Moved</title><a href="${location.replace(/"/g, '%22')}">Moved here</a>\n`);
    r.res.writeHead(301, { Location: location, 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': body.length });
    r.res.end(r.req.method === 'HEAD' ? undefined : body);
    return { status: 301, bytes: r.req.method === 'HEAD' ? 0 : body.length };
  }

  private refuse(r: StaticRequest, why: string): Outcome {
    this.log.info({ tenant: r.tenant.id, remote: r.remote, url: r.req.url, why }, 'request refused');
    return this.plain(r.res, 403, r.req.method === 'HEAD');
  }

  /** 404 with the tenant's own /404.html when it has one (the status stays 404), else the suite's page. */
  async notFound(r: StaticRequest): Promise<Outcome> {
    const root = await this.realRoot(r.tenant);
    if (root !== undefined) {
      const page = await resolveInJail(root, ['404.html']);
      if (page.ok) {
        const fh = await this.openRegularOrDir(page.real);
        if (fh && fh !== 'dir') {
          try {
            const body = await fh.readFile();
            const head = r.req.method === 'HEAD';
            r.res.writeHead(404, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': body.length, 'X-Content-Type-Options': 'nosniff' });
            r.res.end(head ? undefined : body);
            return { status: 404, bytes: head ? 0 : body.length };
          } finally {
            await fh.close();
          }
        }
      }
    }
    return this.plain(r.res, 404, r.req.method === 'HEAD');
  }
}
