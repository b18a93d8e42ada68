import { constants as fsc } from 'node:fs';
import { open, realpath, type FileHandle } from 'node:fs/promises';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import type { HttpOutcome } from '../core/contracts.ts';
import type { Logger } from '../core/log.ts';
import type { Tenant } from '../core/registry.ts';
import { resolveInJail } from '../lib/jail.ts';
import { CachedFile, FileCache, typeFor, validatorsOf, type FileStamp } from './cache.ts';
import { chooseEncoding, evaluatePreconditions, evaluateRange, type Coding, type Validators } from './conditional.ts';
import { applyHeaders, noneSet, ownHeadWith, type HeaderField } from './headers.ts';
import { localLocation } from './location.ts';
import { errorPage } from './pages.ts';
import type { StaticRoute } from './route.ts';

/** A static route's request, with what answering it needs. */
export interface StaticRequest extends Omit<StaticRoute, 'kind'> {
  req: IncomingMessage;
  res: ServerResponse;
  remote: string;
  /**
   * The tenant's response headers when they are not yet applied to `res`:
   * a plain 200 from the cache takes a head made once with them, anything
   * else applies them first (and clears this).
   */
  fields?: readonly HeaderField[] | undefined;
}

/** What was sent, for the access log and the traffic counters. */
export type Outcome = HttpOutcome;

type Decision = { kind: 'send'; status: 200 | 206; start: number; end: number } | { kind: 'status'; status: 304 | 412 | 416 };

/** Preconditions, then range, for a representation of `size` bytes (RFC 9110 §13.2.2, §14). */
function decide(h: IncomingHttpHeaders, v: Validators, size: number): Decision {
  if (h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined || h['if-match'] !== undefined || h['if-unmodified-since'] !== undefined) {
    const pre = evaluatePreconditions(h, v);
    if (pre === 'failed') return { kind: 'status', status: 412 };
    if (pre === 'not-modified') return { kind: 'status', status: 304 };
  }
  if (h.range !== undefined) {
    const range = evaluateRange(h, size, v);
    if (range.kind === 'unsatisfiable') return { kind: 'status', status: 416 };
    if (range.kind === 'partial') return { kind: 'send', status: 206, start: range.start, end: range.end };
  }
  return { kind: 'send', status: 200, start: 0, end: size - 1 };
}

const codingCache = new Map<string, Coding>();
/** chooseEncoding, remembered per distinct Accept-Encoding value (browsers send a handful). */
function chooseEncodingCached(ae: string | undefined): Coding {
  if (ae === undefined) return 'identity';
  let c = codingCache.get(ae);
  if (c === undefined) {
    c = chooseEncoding(ae);
    if (codingCache.size < 256) codingCache.set(ae, c);
  }
  return c;
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
      // A root that does not exist yet serves nothing (404), as an empty site would.
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
    const key = r.fileKey;
    const name = r.segments.length === 0 || r.trailingSlash ? 'index.html' : r.segments[r.segments.length - 1]!;
    const hit = this.cache.get(key);
    if (hit) return this.sendCachedAsync(r, hit);

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
      // Gone since it was resolved, a link, or not ours to read: answered as not found.
      return undefined;
    }
    const st = await fh.stat();
    if (st.isFile()) return fh;
    await fh.close();
    return st.isDirectory() ? 'dir' : undefined;
  }

  private async serveHandle(r: StaticRequest, key: string, name: string, real: string, fh: FileHandle): Promise<Outcome> {
    let streaming = false;
    try {
      const st = await fh.stat();
      const stamp: FileStamp = { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
      if (st.size <= this.cache.maxFile) {
        const body = await fh.readFile();
        const file = new CachedFile(real, { ...stamp, size: body.length }, body, name);
        // A file that changed while it was read is served as read, but not kept.
        if (body.length === st.size) this.cache.set(key, file);
        return await this.sendCachedAsync(r, file);
      }
      streaming = true; // the stream owns the handle now
      return await this.sendStream(r, name, stamp, fh);
    } finally {
      // Not awaited: the answer is sent, and its access-log line and traffic count should not wait for a close.
      if (!streaming) void fh.close().catch(() => undefined);
    }
  }

  /**
   * Answers from the memory cache without waiting for anything, when it can:
   * the hot path. Undefined when the caller must take the async path (not
   * cached, or a compressed form not made yet).
   */
  trySync(r: StaticRequest): Outcome | undefined {
    const hit = this.cache.get(r.fileKey);
    return hit ? this.sendCached(r, hit) : undefined;
  }

  private async sendCachedAsync(r: StaticRequest, file: CachedFile): Promise<Outcome> {
    const sent = this.sendCached(r, file);
    if (sent) return sent;
    await file.prepare(file.codingFor(r.req.headers['accept-encoding'], chooseEncodingCached));
    return this.sendCached(r, file)!;
  }

  private sendCached(r: StaticRequest, file: CachedFile): Outcome | undefined {
    const { req, res } = r;
    const h = req.headers;
    const coding = h.range !== undefined ? 'identity' : file.codingFor(h['accept-encoding'], chooseEncodingCached);
    const v = file.variant(coding);
    if (!v) return undefined;
    const head = req.method === 'HEAD';
    const d = decide(h, v.validators, v.body.length);
    const fields = r.fields;
    if (fields) {
      r.fields = undefined;
      if (d.status === 200 && noneSet(res, fields)) {
        // The head with the tenant's fields, made once per file, coding and field set.
        let own = v.own;
        if (own?.fields !== fields) own = v.own = { fields, head: ownHeadWith(v.headers, fields) };
        res.writeHead(200, own.head);
        res.end(head ? undefined : v.body);
        return { status: 200, bytes: head ? 0 : v.body.length };
      }
      applyHeaders(res, fields, 'own');
    }
    if (d.kind === 'status') return this.statusOnly(r, d.status, v.validators, file.compressible, v.body.length);
    if (d.status === 200) {
      res.writeHead(200, v.headers);
      res.end(head ? undefined : v.body);
      return { status: 200, bytes: head ? 0 : v.body.length };
    }
    const part = v.body.subarray(d.start, d.end + 1);
    const headers: string[] = [];
    for (let i = 0; i < v.headers.length; i += 2) {
      if (v.headers[i] !== 'Content-Length') headers.push(v.headers[i]!, v.headers[i + 1]!);
    }
    headers.push('Content-Length', String(part.length), 'Content-Range', `bytes ${d.start}-${d.end}/${v.body.length}`);
    res.writeHead(206, headers);
    res.end(head ? undefined : part);
    return { status: 206, bytes: head ? 0 : part.length };
  }

  /** 304, 412 or 416: no body of the file. */
  private statusOnly(r: StaticRequest, status: 304 | 412 | 416, v: Validators, compressible: boolean, size: number): Outcome {
    if (status === 304) {
      r.res.writeHead(304, { ETag: v.etag, 'Last-Modified': v.lastModified, ...(compressible ? { Vary: 'Accept-Encoding' } : {}) });
      r.res.end();
      return { status: 304, bytes: 0 };
    }
    return this.plain(r.res, status, r.req.method === 'HEAD', status === 416 ? { 'Content-Range': `bytes */${size}` } : {});
  }

  /** A large file: streamed from the open handle, compressed on the fly when asked. */
  private async sendStream(r: StaticRequest, name: string, stamp: FileStamp, fh: FileHandle): Promise<Outcome> {
    const { req, res } = r;
    const { type, compressible } = typeFor(name);
    const coding: Coding = compressible && req.headers.range === undefined ? chooseEncodingCached(req.headers['accept-encoding']) : 'identity';
    const v = validatorsOf(stamp, coding);
    const d = decide(req.headers, v, stamp.size);
    if (d.kind === 'status') {
      // Only read from: a failing close loses nothing.
      await fh.close().catch(() => undefined);
      return this.statusOnly(r, d.status, v, compressible, stamp.size);
    }
    const headers: OutgoingHttpHeaders = {
      'Content-Type': type,
      'Last-Modified': v.lastModified,
      ETag: v.etag,
      'Accept-Ranges': 'bytes',
      'X-Content-Type-Options': 'nosniff',
    };
    if (compressible) headers.Vary = 'Accept-Encoding';
    if (coding !== 'identity') headers['Content-Encoding'] = coding;
    else headers['Content-Length'] = d.end - d.start + 1;
    if (d.status === 206) headers['Content-Range'] = `bytes ${d.start}-${d.end}/${stamp.size}`;
    res.writeHead(d.status, headers);
    if (req.method === 'HEAD') {
      // Only read from: a failing close loses nothing.
      await fh.close().catch(() => undefined);
      res.end();
      return { status: d.status, bytes: 0 };
    }
    const source = fh.createReadStream({ start: d.start, end: d.end, autoClose: true });
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
    return { status: d.status, bytes };
  }

  private plain(res: ServerResponse, status: number, head: boolean, extra: OutgoingHttpHeaders = {}): Outcome {
    const page = errorPage(status);
    res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': page.length, 'X-Content-Type-Options': 'nosniff', ...extra });
    res.end(head ? undefined : page);
    return { status, bytes: head ? 0 : page.length };
  }

  /** 301 to the same folder with its slash; {@link localLocation} keeps it a local path (never `//host`). */
  private redirectToSlash(r: StaticRequest): Outcome {
    const location = localLocation(`${r.base}/${encodePath(r.segments)}/`, r.query);
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
    const page = await this.notFoundPage(r.tenant);
    if (!page) return this.plain(r.res, 404, r.req.method === 'HEAD');
    const head = r.req.method === 'HEAD';
    r.res.writeHead(404, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': page.length, 'X-Content-Type-Options': 'nosniff' });
    r.res.end(head ? undefined : page);
    return { status: 404, bytes: head ? 0 : page.length };
  }

  /** The tenant's /404.html through the jail, held in the memory cache like any small file (a scanner's 404s cost no I/O). */
  private async notFoundPage(tenant: Tenant): Promise<Buffer | undefined> {
    const key = `${tenant.id}\0:404`; // normal keys have a "/" after the NUL: no clash
    const hit = this.cache.get(key);
    if (hit) return hit.body;
    const root = await this.realRoot(tenant);
    if (root === undefined) return undefined;
    const found = await resolveInJail(root, ['404.html']);
    if (!found.ok) return undefined;
    const fh = await this.openRegularOrDir(found.real);
    if (!fh || fh === 'dir') return undefined;
    try {
      const st = await fh.stat();
      const body = await fh.readFile();
      if (body.length === st.size) this.cache.set(key, new CachedFile(found.real, { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs }, body, '404.html'));
      return body;
    } finally {
      await fh.close();
    }
  }
}
