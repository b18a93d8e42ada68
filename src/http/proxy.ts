import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import { createProxyServer } from 'http-proxy-3';
import { errorRef } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { ProxyRoute } from '../core/registry.ts';
import { errorPage } from './pages.ts';

// RFC 9110 §7.6.1: hop-by-hop fields, meaningful for one connection only.
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-authenticate'];

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

export interface ProxyTarget {
  route: ProxyRoute;
  /** Path and query to request upstream. */
  path: string;
  remote: string;
  /** Host header the client sent (kept for the upstream and copied to X-Forwarded-Host). */
  host: string;
  proto: 'http' | 'https';
}

export interface ProxyOutcome {
  status: number;
  bytes: number;
}

/**
 * Reverse proxy for tenant routes, over http-proxy-3 with keep-alive agents.
 * X-Forwarded-For/-Proto/-Host are set by us (client-sent values are
 * replaced, never appended to: the client cannot forge its own address).
 * An unreachable upstream gets a 502 page, a silent one a 504; neither can
 * crash the process.
 */
export class TenantProxy {
  private readonly httpAgent = new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64, scheduling: 'lifo', timeout: 60_000 });
  private readonly httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64, scheduling: 'lifo', timeout: 60_000 });
  private readonly timedOut = new WeakSet<IncomingMessage>();
  private readonly counters = new WeakMap<IncomingMessage, { bytes: number }>();
  private readonly proxy;

  constructor(
    private readonly log: Logger,
    timeoutMs: number,
  ) {
    this.proxy = createProxyServer({ xfwd: false, changeOrigin: false, proxyTimeout: timeoutMs, ws: true });
    this.proxy.on('proxyReq', (proxyReq, req) => {
      proxyReq.on('timeout', () => this.timedOut.add(req as IncomingMessage));
    });
    this.proxy.on('proxyRes', (proxyRes, req, res) => {
      stripHopByHop(proxyRes.headers);
      // An upstream that resets mid-body must not leave our client waiting for the rest.
      proxyRes.on('close', () => {
        if (!proxyRes.complete) (res as ServerResponse).destroy();
      });
      const counter = this.counters.get(req as IncomingMessage);
      if (counter) proxyRes.on('data', (chunk: Buffer) => (counter.bytes += chunk.length));
    });
    // Errors without a callback (e.g. on WebSocket sockets) must never reach the process.
    this.proxy.on('error', (err) => this.log.info({ err: err.message }, 'proxy error'));
    this.proxy.on('econnreset', () => undefined);
  }

  private prepare(req: IncomingMessage, t: ProxyTarget, upgrade: boolean): void {
    stripHopByHop(req.headers, upgrade);
    req.headers['x-forwarded-for'] = t.remote;
    req.headers['x-forwarded-proto'] = t.proto;
    req.headers['x-forwarded-host'] = t.host;
    delete req.headers.forwarded;
    req.url = t.path;
  }

  web(req: IncomingMessage, res: ServerResponse, t: ProxyTarget): Promise<ProxyOutcome> {
    this.prepare(req, t, false);
    const counter = { bytes: 0 };
    this.counters.set(req, counter);
    const secure = t.route.origin.startsWith('https:');
    return new Promise((resolve) => {
      res.once('close', () => resolve({ status: res.statusCode, bytes: counter.bytes }));
      this.proxy.web(req, res, { target: t.route.origin, agent: secure ? this.httpsAgent : this.httpAgent }, (err) => {
        const timeout = this.timedOut.has(req);
        const status = timeout ? 504 : 502;
        const ref = errorRef();
        this.log.warn({ remote: t.remote, upstream: t.route.origin, err: (err as Error).message, ref, status }, timeout ? 'upstream timed out' : 'upstream failed');
        if (res.headersSent) {
          res.destroy();
          return;
        }
        const page = errorPage(status, ref);
        res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': page.length });
        res.end(req.method === 'HEAD' ? undefined : page);
        counter.bytes = req.method === 'HEAD' ? 0 : page.length;
      });
    });
  }

  ws(req: IncomingMessage, socket: Socket, head: Buffer, t: ProxyTarget): void {
    this.prepare(req, t, true);
    const secure = t.route.origin.startsWith('https:');
    this.proxy.ws(req, socket, head, { target: t.route.origin, agent: secure ? this.httpsAgent : this.httpAgent }, (err) => {
      this.log.info({ remote: t.remote, upstream: t.route.origin, err: (err as Error).message }, 'websocket upstream failed');
      if (!socket.destroyed) socket.end('HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    });
  }

  close(): void {
    this.proxy.close();
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}
