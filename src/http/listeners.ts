import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, { type Http2SecureServer } from 'node:http2';
import type { Server as NetServer, Socket } from 'node:net';
import type { SecureContext, TLSSocket } from 'node:tls';
import type { AcmeChallenges } from '../core/contracts.ts';
import type { CertStore } from '../core/certs.ts';
import type { MainConfig } from '../core/config/schema.ts';
import type { Logger } from '../core/log.ts';
import { closeHttpServer, formatAddress, listenOn, parseListen } from '../lib/listen.ts';
import { refuseRenegotiation } from '../lib/renegotiation.ts';
import { closeH2Server, H2Sessions, h2ServerOptions } from './h2.ts';

/** One bound listener and how it is stopped. */
export interface Listener {
  server: NetServer;
  close(graceMs: number): Promise<void>;
}

/** What every listener hands its events to: one request path for HTTP/1.1 and HTTP/2. */
export interface ListenerEvents {
  /** Every accepted TCP connection, before TLS or HTTP reads from it (the per-client cap). */
  connection?(socket: Socket): void;
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
 * With `alpn` (ACME TLS-ALPN-01) it also answers `acme-tls/1`: see
 * {@link acmeTlsAlpn}. On a failure the listeners bound so far are closed again.
 */
export async function openListeners(
  http1: MainConfig['http'],
  certs: CertStore | undefined,
  contextFor: (servername: string) => SecureContext | undefined,
  log: Logger,
  on: ListenerEvents,
  alpn?: AcmeTlsAlpn,
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
    if (on.connection) s.on('connection', on.connection);
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
            h2ServerOptions({
              ...(fallback ?? {}),
              minVersion: 'TLSv1.2',
              // A handshake gets the time request headers get (the slow-loris guard), not Node's 120 s.
              handshakeTimeout: options.headersTimeout,
              ...(alpn ? acmeTlsAlpn(alpn, contextFor) : { SNICallback: (name, cb) => cb(null, contextFor(name)) }),
            }),
          ),
        );
        if (alpn) endAcmeTlsConnections(server, alpn);
        server.on('secureConnection', (socket: TLSSocket) =>
          refuseRenegotiation(socket, (remote) => log.info({ remote, why: 'renegotiation' }, 'TLS renegotiation refused; connection closed')),
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

type AcmeTlsAlpn = NonNullable<AcmeChallenges['tlsAlpn']>;
export const ACME_TLS_ALPN = 'acme-tls/1';
/** Set on a TLS socket whose handshake offered acme-tls/1 for a name with a pending challenge. */
const kAcmeTls = Symbol('acme-tls/1');

/**
 * TLS-ALPN-01 (RFC 8737) on an HTTPS listener. ALPN is chosen by a callback
 * instead of a fixed list: `h2`, then `http/1.1`, as before; `acme-tls/1`
 * only when a challenge for that server name is pending, and then the
 * certificate presented is the challenge certificate (and only then).
 *
 * In a TLS 1.3 handshake OpenSSL asks for the ALPN choice before the
 * certificate (Node's SNICallback), so the choice is marked on the socket
 * (both callbacks are called with the socket as `this`) and the SNI callback
 * picks the challenge context for a marked socket. In TLS 1.2 the
 * certificate is chosen first: there an acme-tls/1 offer is refused (no
 * application protocol), since the certificate sent would be the wrong one.
 * The CAs' validators speak TLS 1.3.
 */
function acmeTlsAlpn(alpn: AcmeTlsAlpn, contextFor: (servername: string) => SecureContext | undefined) {
  return {
    ALPNCallback(this: TLSSocket & { [kAcmeTls]?: boolean }, { servername, protocols }: { servername: string; protocols: string[] }): string | undefined {
      // Certificate not yet chosen (TLS 1.3): it will be the challenge's. Chosen already (TLS 1.2): not offered.
      if (protocols.includes(ACME_TLS_ALPN) && servername && this && this[kAcmeTls] === undefined && alpn.context(servername)) {
        this[kAcmeTls] = true;
        return ACME_TLS_ALPN;
      }
      return protocols.includes('h2') ? 'h2' : protocols.includes('http/1.1') ? 'http/1.1' : undefined;
    },
    SNICallback(this: TLSSocket & { [kAcmeTls]?: boolean }, name: string, cb: (err: Error | null, ctx?: SecureContext) => void): void {
      const self = this as (TLSSocket & { [kAcmeTls]?: boolean }) | undefined;
      if (self && typeof self === 'object') {
        if (self[kAcmeTls]) return cb(null, alpn.context(name));
        self[kAcmeTls] = false; // the certificate is chosen now: a later acme-tls/1 offer is refused
      }
      cb(null, contextFor(name));
    },
  };
}

/**
 * An acme-tls/1 connection carries no HTTP (RFC 8737 §3: the client closes
 * it after the handshake): it is ended here instead of being handed to the
 * HTTP/2 session code, which would start a session on any protocol but
 * http/1.1.
 */
function endAcmeTlsConnections(server: Http2SecureServer, alpn: AcmeTlsAlpn): void {
  const h2 = server.listeners('secureConnection') as Array<(socket: TLSSocket) => void>;
  server.removeAllListeners('secureConnection');
  server.on('secureConnection', (socket: TLSSocket) => {
    if (socket.alpnProtocol === ACME_TLS_ALPN) {
      alpn.answered(socket.servername || '', socket.remoteAddress);
      socket.on('error', () => socket.destroy());
      socket.setTimeout(5_000, () => socket.destroy());
      socket.end();
      return;
    }
    for (const l of h2) l.call(server, socket);
  });
}
