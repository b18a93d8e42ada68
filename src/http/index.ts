import type http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { constants as http2Constants, type Http2ServerRequest } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';
import path from 'node:path';
import type { CertStore } from '../core/certs.ts';
import type { AcmeChallenges, HandlerGateway, ListPages, PanelPages, SiteChanges } from '../core/contracts.ts';
import type { Job, Service } from '../core/lifecycle.ts';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Registry } from '../core/registry.ts';
import { isLoopbackAddress } from '../lib/hostname.ts';
import type { State } from '../state/index.ts';
import { ACCESS_LOG, TenantLogFiles } from '../lib/tenantlogs.ts';
import { createConnectionCap } from './admission.ts';
import { FileCache } from './cache.ts';
import { createDispatch } from './dispatch.ts';
import { answerKind, applyHeaders, fieldsFor, sitePath } from './headers.ts';
import { adaptH2Request, H2_SETTINGS, h2HeaderListOver, isHttp2, unsupportedVersion } from './h2.ts';
import { hostField } from './host.ts';
import { openListeners, type Listener } from './listeners.ts';
import { TenantProxy } from './proxy.ts';
import { createRecorder } from './record.ts';
import { createRawAnswers } from './refusals.ts';
import { redirectToHttps, sendPage } from './replies.ts';
import { errorRef, replyCode } from '../core/errors.ts';
import { refuseByMethod, refuseMisdirected, routeRequest } from './route.ts';
import { StaticFiles, type Outcome, type StaticRequest } from './static.ts';
import { declineUpgrade, offersWebSocket } from './upgrade.ts';

export interface HttpDeps {
  registry: Registry;
  state: State;
  log: Logger;
  metrics?: Metrics;
  /** Certificates for the HTTPS listeners (`http.tls`), chosen by SNI. */
  certs?: CertStore;
  /** Runs /cgi-bin/<name> handlers; without it those paths are 404. */
  gateway?: HandlerGateway;
  /** Serves /lists/<name>/ for the lists a tenant has; without it (or for other names) those paths are the tenant's own files. */
  lists?: ListPages;
  /** Answers ACME HTTP-01 challenges, before any tenant routing. */
  acme?: AcmeChallenges;
  /** Serves the control panel on `panel.host`; without it that host is 404. */
  panel?: PanelPages;
}

/** Name-based virtual hosting of tenants' static sites, user pages and proxied backends. */
export function createHttpService({ registry, state, log: rootLog, gateway, lists, metrics, certs, acme, panel }: HttpDeps): Service & { siteChanges: SiteChanges } {
  const log = rootLog.child({ svc: 'http' });
  let current = registry;
  const main = registry.config.main;
  const accessLogs = new TenantLogFiles(path.join(main.dataDir, 'logs'), ACCESS_LOG, log);
  const cache = new FileCache(main.http.cacheFileMax, main.http.cacheTotal, main.http.cacheRevalidate * 1000);
  const files = new StaticFiles(cache, log);
  const proxy = new TenantProxy(log, main.http.proxyTimeout * 1000);
  const proxyLoad = hasProxyRoutes(registry) ? proxy.prepare() : undefined;
  proxyLoad?.catch(() => undefined); // awaited by start(), which fails with it
  const record = createRecorder({ accessLogs, state, metrics });
  const raw = createRawAnswers({ log, accessLogs, metrics, record: (req, remote, o) => record(undefined, req, remote, o) });
  const cap = createConnectionCap({ log, metrics, limit: () => current.config.main.http.maxConnectionsPerIp });
  /** Each listener with how it is stopped (HTTP/1.1 only, or HTTPS with HTTP/2 beside HTTP/1.1). */
  const servers: Listener[] = [];
  /** An HTTP/2 stream silent this long is cancelled (a request body that never comes, an answer that never starts). */
  const streamIdleMs = (Math.max(main.http.requestTimeout, main.http.proxyTimeout, main.cgi.timeout) + 5) * 1000;
  let flushTimer: NodeJS.Timeout | undefined;
  /** Port of the first HTTPS listener, for redirects from plain HTTP. */
  let httpsPort: number | undefined;

  /** Responses of the async path under way, so stop() can tell their keep-alive connections to close once they are answered. */
  const inFlight = new Set<ServerResponse>();
  const handle = createDispatch({ log, files, proxy, record, inFlight, gateway, lists, panel });
  let draining = false;

  /**
   * Every request, HTTP/1.1 or HTTP/2: the compatibility API of node:http2
   * gives an HTTP/2 request the shape of an HTTP/1.1 one (method, url,
   * headers, socket, writeHead/end), so routing, the jail, static files, the
   * proxy, handlers, headers and logs are this one path for both.
   */
  function onRequest(req: IncomingMessage, res: ServerResponse): void {
    const h2 = isHttp2(req);
    if (h2) {
      const h2req = req as unknown as Http2ServerRequest;
      adaptH2Request(h2req, streamIdleMs);
      const size = h2HeaderListOver(h2req);
      if (size !== undefined) {
        // What nghttp2 answers a client that acknowledged our SETTINGS: the stream reset, ENHANCE_YOUR_CALM.
        log.info({ remote: req.socket.remoteAddress, host: req.headers.host, why: `header list of ${size} bytes, over ${H2_SETTINGS.maxHeaderListSize}` }, 'http2 request refused');
        h2req.stream.close(http2Constants.NGHTTP2_ENHANCE_YOUR_CALM);
        return;
      }
    } else {
      raw.started(res);
      // RFC 9113 §8.2.2: HTTP/2 has no Connection field; a draining HTTP/2 session gets GOAWAY instead.
      if (draining) res.setHeader('Connection', 'close');
    }
    const over = cap.refuse(req, res);
    if (over) return record(undefined, req, req.socket.remoteAddress ?? '-', over);
    const t0 = metrics ? performance.now() : 0;
    const challenge = acme?.answer(req, res);
    if (challenge) {
      metrics?.httpDuration.observeSince(t0);
      return record(undefined, req, req.socket.remoteAddress ?? '-', challenge);
    }
    let route = refuseByMethod(routeRequest(current, req.url ?? '/', hostField(req.rawHeaders)), req.method);
    const badVersion = unsupportedVersion(req);
    if (badVersion) route = { kind: 'error', status: badVersion, tenant: undefined, why: `HTTP/${req.httpVersion} on an HTTP/1.1 connection`, authority: route.authority };
    if ((req.socket as TLSSocket).encrypted) route = refuseMisdirected(current, route, (req.socket as TLSSocket).servername);
    const remote = req.socket.remoteAddress ?? '-';
    /** The tenant's response headers, when not applied yet: a cached file's 200 takes a ready-made head with them. */
    let fields: ReturnType<typeof fieldsFor> | undefined;
    const fast = route.kind === 'static' && (req.method === 'GET' || req.method === 'HEAD');
    if (route.kind !== 'server-options') {
      const kind = answerKind(route);
      fields = fieldsFor(route.tenant, () => sitePath(route, req.url ?? '/'), kind);
      if (!fast) {
        applyHeaders(res, fields, kind);
        fields = undefined;
      }
    }
    const https = route.tenant?.config.https;
    if (https && route.kind !== 'server-options') {
      if ((req.socket as TLSSocket).encrypted) {
        if (https.hsts > 0) res.setHeader('Strict-Transport-Security', `max-age=${https.hsts}`);
      } else if (https.redirect && httpsPort !== undefined) {
        if (fields) applyHeaders(res, fields, 'own');
        const sent = redirectToHttps(req, res, httpsPort, route);
        metrics?.httpDuration.observeSince(t0);
        return record(route.tenant, req, remote, sent);
      }
    }
    if (route.kind === 'panel' && !(req.socket as TLSSocket).encrypted && !isLoopbackAddress(remote)) {
      // Passwords and session cookies never cross the network in clear: only a client on this machine may use plain HTTP.
      if (httpsPort !== undefined) return record(undefined, req, remote, redirectToHttps(req, res, httpsPort, route));
      log.info({ remote, host: req.headers.host, why: 'the panel needs HTTPS and no HTTPS listener is configured' }, 'request refused');
      return record(undefined, req, remote, sendPage(req, res, 403));
    }
    if (fast && route.kind === 'static') {
      // The hot path: a cached file answered without a single await.
      const r: StaticRequest = { req, res, tenant: route.tenant, segments: route.segments, trailingSlash: route.trailingSlash, query: route.query, base: route.base, fileKey: route.fileKey, remote, fields };
      let sent: Outcome | undefined;
      try {
        sent = files.trySync(r);
      } catch {
        sent = undefined; // the async path below answers, and logs the fault
      }
      // Not answered here: whatever the async path writes gets the fields.
      if (!sent && r.fields) applyHeaders(res, r.fields, 'own');
      if (sent) {
        // Answered synchronously: handed to the socket now, timed without a listener.
        metrics?.httpDuration.observeSince(t0);
        return record(route.tenant, req, remote, sent);
      }
    }
    metrics?.timeRequest(res, t0);
    void handle(req, res, route, remote);
  }

  /**
   * onRequest, and a fault of ours in its synchronous part answered 500 with a
   * reference (the asynchronous part catches its own): a throw out of a
   * request listener would end the whole process, mail and FTP with it.
   */
  function guarded(req: IncomingMessage, res: ServerResponse): void {
    try {
      onRequest(req, res);
    } catch (err) {
      const ref = errorRef();
      const remote = req.socket?.remoteAddress ?? '-';
      log.error({ remote, url: req.url, host: req.headers.host, ref, err: (err as Error).stack }, 'request failed');
      if (res.headersSent) res.destroy();
      else record(undefined, req, remote, sendPage(req, res, replyCode('INTERNAL', 'http'), {}, ref));
    }
  }

  /**
   * A WebSocket handshake on a proxied path goes to the backend; every other
   * Upgrade offer (h2c from `curl --http2`, websocket on a static page) is
   * declined and the request served as it would be without it.
   */
  function onUpgrade(server: http.Server, req: IncomingMessage, socket: Socket, head: Buffer): void {
    if (cap.refuseRaw(socket)) return;
    let route = routeRequest(current, req.url ?? '/', hostField(req.rawHeaders));
    if ((socket as TLSSocket).encrypted) route = refuseMisdirected(current, route, (socket as TLSSocket).servername);
    // RFC 6455 §4.1: the handshake is a GET.
    // A request line that says HTTP/2.0 is declined too: the request path answers it 505.
    if (route.kind !== 'proxy' || req.method !== 'GET' || !offersWebSocket(req) || unsupportedVersion(req)) return declineUpgrade(server, req, socket, head);
    socket.on('error', () => socket.destroy());
    const remote = req.socket.remoteAddress ?? '-';
    const target = { route: route.route, path: route.path, remote, host: route.authority, proto: (socket as TLSSocket).encrypted ? ('https' as const) : ('http' as const) };
    proxy.ws(req, socket, head, target, (status) => record(route.tenant, req, remote, { status, bytes: 0 }));
  }

  return {
    name: 'http',
    siteChanges: { changed: (tenantId) => cache.dropTenant(tenantId) },
    async start() {
      // Loaded only for a suite with proxy routes (a reload that adds the first one loads them at its first request),
      // asked for since this service was made, so that little of it is left to wait for here.
      await proxyLoad;
      const opened = await openListeners(main.http, certs, (name) => certs?.contextFor(name, current), log, {
        connection: cap.connection,
        request: guarded,
        upgrade: (server, req, socket, head) => {
          try {
            onUpgrade(server, req, socket, head);
          } catch (err) {
            // As for a request: a fault of ours ends this connection, not the process.
            log.error({ remote: socket.remoteAddress, url: req.url, host: req.headers.host, ref: errorRef(), err: (err as Error).stack }, 'upgrade failed');
            socket.destroy();
          }
        },
        clientError: raw.clientError,
        connect: raw.connect,
      }, acme?.tlsAlpn);
      servers.push(...opened.listeners);
      httpsPort = opened.httpsPort;
      flushTimer = setInterval(() => state.traffic.flush(), 5_000);
      flushTimer.unref();
      return opened.urls;
    },
    async stop(graceMs) {
      if (flushTimer) clearInterval(flushTimer);
      // Keep-alive connections with a request under way close after its answer (RFC 9112 §9.6), not at keepAliveTimeout.
      draining = true;
      for (const res of inFlight) {
        // HTTP/2 sessions are told to go away by their listener's close.
        if (isHttp2(res.req)) continue;
        if (!res.headersSent) res.setHeader('Connection', 'close');
        else res.once('finish', () => res.socket?.end());
      }
      inFlight.clear();
      await Promise.all(servers.map((s) => s.close(graceMs)));
      servers.length = 0;
      await proxy.close();
      await accessLogs.close();
      state.traffic.flush();
    },
    reload(next) {
      return () => {
        current = next;
        // Ahead of the first proxied request; a load that fails is logged there and answered 502.
        if (hasProxyRoutes(next)) {
          proxy.prepare().catch((err: Error) => log.error({ err: err.message }, "the reverse proxy's libraries (undici, http-proxy-3) cannot be loaded: proxied requests get 502 until they can"));
        }
        files.reset();
        certs?.reset();
      };
    },
    jobs(): Job[] {
      return [
        { name: 'rotate access logs', schedule: '0 0 * * *', run: () => accessLogs.rotate(current.config.main.http.accessLog.keepDays) },
      ];
    },
  };
}

/** Whether any tenant proxies a path (the proxy's libraries are loaded only then). */
function hasProxyRoutes(registry: Registry): boolean {
  for (const t of registry.tenants.values()) if (t.proxy.length > 0) return true;
  return false;
}
