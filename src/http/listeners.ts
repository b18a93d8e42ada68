import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, { type Http2SecureServer } from 'node:http2';
import type { Server as NetServer, Socket } from 'node:net';
import type { SecureContext } from 'node:tls';
import type { CertStore } from '../core/certs.ts';
import type { MainConfig } from '../core/config/schema.ts';
import type { Logger } from '../core/log.ts';
import { closeHttpServer, formatAddress, listenOn, parseListen } from '../lib/listen.ts';
import { closeH2Server, H2Sessions, h2ServerOptions } from './h2.ts';

/** One bound listener and how it is stopped. */
export interface Listener {
  server: NetServer;
  close(graceMs: number): Promise<void>;
}

/** What every listener hands its events to: one request path for HTTP/1.1 and HTTP/2. */
export interface ListenerEvents {
  request(req: IncomingMessage, res: ServerResponse): void;
  upgrade(server: http.Server, req: IncomingMessage, socket: Socket, head: Buffer): void;
  clientError(err: NodeJS.ErrnoException, socket: Socket): void;
  connect(req: IncomingMessage, socket: Socket): void;
}

/**
 * Binds the plain HTTP listeners (`http.listen`) and the HTTPS ones
 * (`http.tls.listen`, certificates by SNI). An HTTPS listener is a
 * node:http2 secure server with `allowHTTP1`: ALPN offers h2 and
 * http/1.1, and its HTTP/1.1 connections keep the plain listener's limits.
 * On a failure the listeners bound so far are closed again.
 */
export async function openListeners(
  http1: MainConfig['http'],
  certs: CertStore | undefined,
  contextFor: (servername: string) => SecureContext | undefined,
  log: Logger,
  on: ListenerEvents,
): Promise<{ listeners: Listener[]; urls: string[]; httpsPort: number | undefined }> {
  const listeners: Listener[] = [];
  const urls: string[] = [];
  let httpsPort: number | undefined;
  const options = {
    maxHeaderSize: 16 * 1024,
    headersTimeout: http1.headersTimeout * 1000,
    requestTimeout: Math.max(http1.requestTimeout, http1.headersTimeout) * 1000,
    keepAliveTimeout: 5_000,
    connectionsCheckingInterval: 1_000,
  };
  const wire = <S extends http.Server | Http2SecureServer>(server: S): S => {
    const s = server as unknown as http.Server;
    s.on('request', on.request);
    s.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => on.upgrade(s, req, socket, head));
    s.on('clientError', on.clientError);
    s.on('connect', on.connect);
    return server;
  };
  try {
    for (const spec of http1.listen) {
      const server = wire(http.createServer(options));
      listeners.push({ server, close: (grace) => closeHttpServer(server, grace) });
      const bound = await listenOn(server, parseListen(spec)!, 'http');
      urls.push(`http://${formatAddress(bound)}`);
    }
    if (http1.tls && certs) {
      const fallback = certs.defaultPair();
      for (const spec of http1.tls.listen) {
        const server = wire(
          http2.createSecureServer(
            h2ServerOptions({ ...(fallback ?? {}), minVersion: 'TLSv1.2', SNICallback: (name, cb) => cb(null, contextFor(name)) }),
          ),
        );
        // The HTTP/1.1 side of an allowHTTP1 server reads these from the server object, as http.Server does.
        Object.assign(server, options);
        const sessions = new H2Sessions(log);
        sessions.attach(server);
        listeners.push({ server, close: (grace) => closeH2Server(server, sessions, grace) });
        const bound = await listenOn(server, parseListen(spec)!, 'https');
        httpsPort ??= bound.port;
        urls.push(`https://${formatAddress(bound)}`);
      }
    }
  } catch (err) {
    for (const l of listeners) l.server.close();
    throw err;
  }
  return { listeners, urls, httpsPort };
}
