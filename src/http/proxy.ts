import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Http2ServerRequest } from 'node:http2';
import type { Socket } from 'node:net';
import type { ProxyServer } from 'http-proxy-3';
import type { Dispatcher, Pool } from 'undici';
import { errorRef, replyCode } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { ProxyRoute } from '../core/registry.ts';
import { isHttp2 } from './h2.ts';
import { errorPage } from './pages.ts';

// RFC 9110 §7.6.1: hop-by-hop fields, meaningful for one connection only.
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-authenticate'];

/** The field names a Connection field lists (lower-case). */
function connectionTokens(value: string | string[]): string[] {
  return String(value)
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
}

/** Removes hop-by-hop fields, including those the Connection field names. `keepUpgrade` keeps what a WebSocket handshake needs. */
export function stripHopByHop(headers: IncomingHttpHeaders, keepUpgrade = false): void {
  const named = String(headers.connection ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
  for (const name of [...HOP_BY_HOP, ...named]) {
    if (keepUpgrade && (name === 'connection' || name === 'upgrade')) continue;
    delete headers[name];
  }
}

/**
 * Fields some backends read the client's address from, and that only a
 * proxy in front may set: the suite sets X-Forwarded-For, X-Real-IP and
 * True-Client-IP from the connection and drops the others (and Forwarded,
 * whose for= a client would write), so a client cannot name its own address.
 */
const CLIENT_ADDRESS_FIELDS = ['x-client-ip', 'x-cluster-client-ip', 'cf-connecting-ip', 'fastly-client-ip', 'x-originating-ip', 'client-ip', 'forwarded'];

/** What never goes to a backend from the client's own fields (we set X-Forwarded-*, the address fields and Host ourselves). */
const DROP_FORWARD = new Set([
  ...HOP_BY_HOP,
  // Framing is per connection: undici sets its own, and refuses these.
  'transfer-encoding',
  'expect',
  ...CLIENT_ADDRESS_FIELDS,
  'x-forwarded-for',
  'x-real-ip',
  'true-client-ip',
  'x-forwarded-proto',
  'host',
  'x-forwarded-host',
]);

/** Fields of a backend's answer that are not passed on: hop-by-hop, and framing (Node sets its own). */
const DROP_BACK = new Set([...HOP_BY_HOP, 'transfer-encoding']);

export interface ProxyTarget {
  route: ProxyRoute;
  /** Path and query to request upstream. */
  path: string;
  remote: string;
  /**
   * The authority the request was routed by (an absolute-form target's, else
   * the Host line): the Host the upstream gets, also sent as X-Forwarded-Host.
   */
  host: string;
  proto: 'http' | 'https';
}

export interface ProxyOutcome {
  status: number;
  bytes: number;
}

/**
 * Reverse proxy for tenant routes. Plain requests go through undici pools
 * (one per upstream origin, keep-alive, no pipelining, at most 128
 * connections each), driven by a dispatch handler ({@link Forward}): on this
 * machine undici carried 1.75× the requests per second of http-proxy-3 with a
 * keep-alive agent. WebSocket upgrades go through http-proxy-3, the
 * maintained rewrite of http-proxy.
 * X-Forwarded-For/-Proto/-Host, X-Real-IP and True-Client-IP are set by us
 * (client-sent values are replaced, never appended to: the client cannot
 * forge its own address).
 * An unreachable upstream gets a 502 page, a silent one a 504; neither can
 * crash the process.
 */
/**
 * undici and http-proxy-3, loaded at the first need: a suite without proxy
 * routes never loads them (with 10,000 tenants, undici alone was ~7 % of a
 * start). The HTTP service loads them before it listens when a route needs
 * them, so a broken install fails the start, not the first request.
 */
interface ProxyLibraries {
  Pool: typeof import('undici').Pool;
  createProxyServer: typeof import('http-proxy-3').createProxyServer;
}
let libraries: ProxyLibraries | undefined;
let loading: Promise<ProxyLibraries> | undefined;
export function loadProxyLibraries(): Promise<ProxyLibraries> {
  loading ??= Promise.all([import('undici'), import('http-proxy-3')]).then(
    ([u, h]) => (libraries = { Pool: u.Pool, createProxyServer: h.createProxyServer }),
    (err: unknown) => {
      loading = undefined; // tried again at the next need (an install repaired meanwhile needs no restart)
      throw err;
    },
  );
  return loading;
}

export class TenantProxy {
  private readonly pools = new Map<string, Pool>();
  private readonly httpAgent = new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 16 });
  private readonly httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 16 });
  private wsServer: ProxyServer | undefined;
  private closed = false;
  private readonly wsDone = new WeakMap<IncomingMessage, (status: number) => void>();

  constructor(
    private readonly log: Logger,
    private readonly timeoutMs: number,
  ) {}

  /** Loads the proxy's libraries now (the HTTP service's start, when a tenant has a proxy route). */
  async prepare(): Promise<void> {
    await loadProxyLibraries();
  }

  /** Runs `go` once the libraries are loaded (at once when they are); a failed load answers as an unreachable backend. */
  private withLibraries(go: (libs: ProxyLibraries) => void, failed: (err: Error) => void): void {
    if (libraries && !this.closed) return go(libraries);
    loadProxyLibraries()
      .then((libs) => {
        // Closed while they loaded (the suite stopping): no pool is made that nothing would close.
        if (this.closed) throw new Error('the proxy is closed');
        go(libs);
      })
      .catch((err: Error) => {
        if (!this.closed) this.log.error({ err: err.message }, 'the reverse proxy\'s libraries (undici, http-proxy-3) cannot be loaded');
        failed(err);
      });
  }

  private get wsProxy(): ProxyServer {
    if (this.wsServer) return this.wsServer;
    this.wsServer = libraries!.createProxyServer({ xfwd: false, changeOrigin: false, ws: true });
    // Errors without a callback must never reach the process.
    this.wsServer.on('error', (err) => this.log.info({ err: err.message }, 'websocket proxy error'));
    // A client that resets a proxied WebSocket: both sockets are already being torn down, nothing to answer.
    this.wsServer.on('econnreset', () => undefined);
    // The status a handshake ends with, for the access log: 101, or the answer of an upstream that declined.
    this.wsServer.on('proxyReqWs', (proxyReq: http.ClientRequest, req: IncomingMessage) => {
      const done = this.wsDone.get(req);
      if (!done) return;
      proxyReq.once('upgrade', () => done(101));
      proxyReq.once('response', (res: IncomingMessage) => done(res.statusCode ?? replyCode('BACKEND_FAILED', 'http')));
    });
    return this.wsServer;
  }

  private pool(origin: string): Pool {
    let p = this.pools.get(origin);
    if (!p) {
      p = new libraries!.Pool(origin, {
        connections: 128,
        pipelining: 1,
        keepAliveTimeout: 4_000,
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
        connectTimeout: Math.min(this.timeoutMs, 10_000),
      });
      this.pools.set(origin, p);
    }
    return p;
  }

  private forwardedHeaders(req: IncomingMessage, t: ProxyTarget, upgrade: boolean): IncomingHttpHeaders {
    const headers = { ...req.headers };
    // HTTP/2 pseudo-headers (:method, :path, :authority, :scheme) are not fields; the backend speaks HTTP/1.1.
    for (const name of Object.keys(headers)) if (name.charCodeAt(0) === 58 /* : */) delete headers[name];
    stripHopByHop(headers, upgrade);
    if (!upgrade) {
      // Framing is per connection: undici sets its own, and refuses these.
      delete headers['transfer-encoding'];
      delete headers.expect;
    }
    for (const name of CLIENT_ADDRESS_FIELDS) delete headers[name];
    headers['x-forwarded-for'] = t.remote;
    headers['x-real-ip'] = t.remote;
    headers['true-client-ip'] = t.remote;
    headers['x-forwarded-proto'] = t.proto;
    // The backend sees the host that picked the tenant, never another name the client sent beside it.
    if (t.host) {
      headers.host = t.host;
      headers['x-forwarded-host'] = t.host;
    } else {
      delete headers.host;
      delete headers['x-forwarded-host'];
    }
    return headers;
  }

  /**
   * The request head for the backend as a flat [name, value, ...] list, in
   * one pass over the client's fields: the same rules as
   * {@link forwardedHeaders} (pseudo-headers, hop-by-hop fields and those
   * Connection names, framing, client-address fields dropped; ours set),
   * without copying the object and deleting from it.
   */
  private forwardedList(req: IncomingMessage, t: ProxyTarget): string[] {
    const h = req.headers;
    const named = h.connection === undefined ? undefined : connectionTokens(h.connection);
    const out: string[] = [];
    for (const name in h) {
      if (DROP_FORWARD.has(name) || name.charCodeAt(0) === 58 /* : */ || named?.includes(name)) continue;
      const v = h[name];
      if (v === undefined) continue;
      if (typeof v === 'string') out.push(name, v);
      else for (const x of v) out.push(name, x);
    }
    out.push('x-forwarded-for', t.remote, 'x-real-ip', t.remote, 'true-client-ip', t.remote, 'x-forwarded-proto', t.proto);
    // The backend sees the host that picked the tenant, never another name the client sent beside it.
    if (t.host) out.push('host', t.host, 'x-forwarded-host', t.host);
    return out;
  }

  /**
   * Forwards a request through the backend's undici pool, at its lowest
   * level (a dispatch handler): the answer is written to `res` as it comes,
   * paused while `res` is full, and the upstream request is aborted if the
   * client goes away. No stream wrapper, abort signal or byte-counting
   * transform per request.
   */
  web(req: IncomingMessage, res: ServerResponse, t: ProxyTarget): Promise<ProxyOutcome> {
    const headers = this.forwardedList(req, t);
    // RFC 9113 §8.1: an HTTP/2 body needs no Content-Length; the HEADERS frame says whether one follows.
    const hasBody =
      isHttp2(req)
        ? !(req as unknown as Http2ServerRequest).stream.endAfterHeaders
        : req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
    return new Promise<ProxyOutcome>((resolve) => {
      const handler = new Forward(req, res, t, this.log, resolve);
      this.withLibraries(
        () => this.pool(t.route.origin).dispatch({ origin: t.route.origin, path: t.path, method: req.method as Dispatcher.HttpMethod, headers, body: hasBody ? req : null }, handler),
        (err) => handler.onError(err),
      );
    });
  }

  /** Proxies a WebSocket handshake; `done` is called once with the status it ended with (101, the upstream's refusal, or 502). */
  ws(req: IncomingMessage, socket: Socket, head: Buffer, t: ProxyTarget, done: (status: number) => void): void {
    let reported = false;
    const report = (status: number) => {
      if (reported) return;
      reported = true;
      this.wsDone.delete(req);
      done(status);
    };
    this.wsDone.set(req, report);
    req.headers = this.forwardedHeaders(req, t, true);
    req.url = t.path;
    const secure = t.route.origin.startsWith('https:');
    const failed = (err: Error) => {
      this.log.info({ remote: t.remote, upstream: t.route.origin, err: err.message }, 'websocket upstream failed');
      // After a 101 or a relayed refusal the socket no longer carries our HTTP: no 502 written into it.
      if (reported) return;
      const status = replyCode('BACKEND_FAILED', 'http');
      if (!socket.destroyed) socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      report(status);
    };
    this.withLibraries(() => this.wsProxy.ws(req, socket, head, { target: t.route.origin, agent: secure ? this.httpsAgent : this.httpAgent }, (err) => failed(err as Error)), failed);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wsServer?.close();
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
    // Closing at shutdown: a pool that fails to close has nothing left to lose.
    await Promise.all([...this.pools.values()].map((p) => p.destroy().catch(() => undefined)));
    this.pools.clear();
  }
}

const TIMEOUTS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * One proxied request as an undici dispatch handler (the API's own
 * callbacks, no stream in between): the backend's head is written with its
 * hop-by-hop fields dropped, its body chunk by chunk with the pool paused
 * while the client's side is full, and the bytes counted as they go. A
 * client that goes away aborts the upstream request. An unreachable backend
 * gets a 502 page, a silent one a 504.
 */
class Forward implements Dispatcher.DispatchHandler {
  private abort: ((err?: Error) => void) | undefined;
  private bytes = 0;
  private done = false;
  /** The client went away before the answer was complete. */
  private gone = false;
  private readonly onClose = () => {
    // Closed before the backend's answer was complete (a reset HTTP/2 stream reads as "finished" here: not asked).
    if (this.done) return;
    this.gone = true;
    this.abort?.(new Error('client went away'));
  };

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly t: ProxyTarget,
    private readonly log: Logger,
    private readonly resolve: (o: ProxyOutcome) => void,
  ) {
    res.once('close', this.onClose);
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abort = abort;
    if (this.gone) abort(new Error('client went away'));
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    // 1xx answers (100 Continue, 103 Early Hints) are the backend's own business: the final answer follows.
    if (statusCode < 200) return true;
    const head: string[] = [];
    let named: string[] | undefined;
    for (let i = 0; i < rawHeaders.length; i += 2) {
      if (rawHeaders[i]!.length === 10 && rawHeaders[i]!.toString('latin1').toLowerCase() === 'connection') {
        named = (named ?? []).concat(connectionTokens(rawHeaders[i + 1]!.toString('latin1')));
      }
    }
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = rawHeaders[i]!.toString('latin1');
      const lower = name.toLowerCase();
      if (DROP_BACK.has(lower) || named?.includes(lower)) continue;
      head.push(name, rawHeaders[i + 1]!.toString('latin1'));
    }
    this.res.writeHead(statusCode, head);
    if (this.req.method === 'HEAD') return true;
    this.res.on('drain', resume);
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.bytes += chunk.length;
    return this.res.write(chunk);
  }

  onComplete(): void {
    this.res.end();
    this.finish({ status: this.res.statusCode, bytes: this.req.method === 'HEAD' ? 0 : this.bytes });
  }

  onError(err: Error & { code?: string }): void {
    const { res, req, t } = this;
    if (this.gone) return this.finish({ status: res.statusCode, bytes: this.bytes });
    const timeout = TIMEOUTS.has(err.code ?? '');
    const status = replyCode(timeout ? 'BACKEND_TIMEOUT' : 'BACKEND_FAILED', 'http');
    const ref = errorRef();
    this.log.warn({ remote: t.remote, upstream: t.route.origin, err: err.code ?? err.message, ref, status }, timeout ? 'upstream timed out' : 'upstream failed');
    if (res.headersSent) {
      res.destroy();
      return this.finish({ status: res.statusCode, bytes: this.bytes });
    }
    const page = errorPage(status, ref);
    res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': page.length });
    res.end(req.method === 'HEAD' ? undefined : page);
    this.finish({ status, bytes: req.method === 'HEAD' ? 0 : page.length });
  }

  private finish(o: ProxyOutcome): void {
    if (this.done) return;
    this.done = true;
    this.res.removeListener('close', this.onClose);
    this.resolve(o);
  }
}
