import http2, { type Http2SecureServer, type Http2ServerRequest, type Http2Session, type SecureServerOptions, type ServerHttp2Stream } from 'node:http2';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../core/log.ts';

/**
 * HTTP/2 on the HTTPS listeners: one `node:http2` secure server per
 * listener with `allowHTTP1`, so ALPN offers `h2` and `http/1.1` and both
 * reach the same 'request' handler (the compatibility API gives HTTP/2
 * requests the shape of HTTP/1.1 ones). Only what is HTTP/2's own lives here:
 * its limits, its sessions and how they are closed.
 *
 * The limits, set deliberately:
 * - 100 concurrent streams per session (SETTINGS_MAX_CONCURRENT_STREAMS;
 *   RFC 9113 §6.5.2 advises at least 100; nginx's default is 128).
 * - 16 KiB of header list (SETTINGS_MAX_HEADER_LIST_SIZE), the limit HTTP/1.1
 *   requests have here (`maxHeaderSize`); larger header blocks are refused by
 *   nghttp2 before a request exists, once the client has acknowledged our
 *   SETTINGS, and by {@link h2HeaderListOver} before routing otherwise. At
 *   most 128 header fields.
 * - 10 MiB of memory per session (`maxSessionMemory`, Node's default, named):
 *   past it new streams are refused with ENHANCE_YOUR_CALM.
 * - Rapid reset (CVE-2023-44487): Node 20.8.1 and later bundle nghttp2 1.57+,
 *   whose token bucket sends GOAWAY after 1000 RST_STREAMs in a burst, refilled
 *   at 33 a second. That still lets one connection start and cancel 1000
 *   requests, each of which reaches our handlers. On top of it each session
 *   here may see at most {@link RESET_BURST} streams cancelled by the client
 *   before their answer is complete, refilled at {@link RESET_RATE} a second;
 *   past it the session gets GOAWAY (ENHANCE_YOUR_CALM) and is closed, with
 *   a log line naming the client.
 * - SETTINGS and PING floods: nghttp2's flood guard tears down a session
 *   whose unread acknowledgements pile up; the drop is logged with the client.
 * - An idle session is closed (GOAWAY) after {@link SESSION_IDLE_MS}; its
 *   connection is ended {@link SESSION_CLOSE_GRACE_MS} later if it is still
 *   open with no stream under way (a stream whose answer is slow in coming
 *   sends no frame, and GOAWAY lets it finish). Node 20's http2 now and then never notices a client that reset the
 *   connection right after the TLS handshake (no event on the socket, the TLS
 *   socket or the session, and the session's destroy() frees nothing): only
 *   destroying the TLS socket ends it, and with it the client's slot of the
 *   connection cap.
 */

export const H2_SETTINGS = { maxConcurrentStreams: 100, maxHeaderListSize: 16 * 1024, enablePush: false } as const;
export const RESET_BURST = 200;
export const RESET_RATE = 20;
export const SESSION_IDLE_MS = 120_000;
export const SESSION_CLOSE_GRACE_MS = 5_000;

export function h2ServerOptions(tls: SecureServerOptions): SecureServerOptions {
  return {
    ...tls,
    allowHTTP1: true,
    settings: H2_SETTINGS,
    maxHeaderListPairs: 128,
    maxSessionMemory: 10,
    // A client that speaks neither h2 nor http/1.1 after TLS is closed after 10 s (Node's default, named).
    unknownProtocolTimeout: 10_000,
  };
}

/**
 * True for a request that came as an HTTP/2 stream. The version in the
 * request is no proof: an HTTP/1.1 connection's parser takes a request line
 * that says `HTTP/2.0` and reports major version 2 for it, with no stream.
 */
export function isHttp2(req: IncomingMessage): boolean {
  return req instanceof http2.Http2ServerRequest;
}

/**
 * The status for a request an HTTP/1.1 connection read with a version other
 * than 1.x (`HTTP/2.0` on the request line: HTTP/2 is spoken only after
 * ALPN, never by naming it there), else undefined. RFC 9110 §15.6.6: 505.
 * HTTP/0.9 and 1.0 clients are served as before.
 */
export function unsupportedVersion(req: IncomingMessage): 505 | undefined {
  return !isHttp2(req) && req.httpVersionMajor > 1 ? 505 : undefined;
}

/**
 * Readies an HTTP/2 request for the shared request path. RFC 9113 §8.3.1:
 * :authority is the Host; it is given as Host too when the client sent
 * none, so handlers (HTTP_HOST) and logs see what an HTTP/1.1 request shows.
 * A stream silent for `idleMs` is cancelled (HTTP/1.1 has headersTimeout
 * and requestTimeout for the same).
 */
export function adaptH2Request(req: Http2ServerRequest, idleMs: number): void {
  const stream = req.stream;
  // A stream the client resets ends this request only; the session and the process carry on.
  stream.on('error', () => undefined);
  stream.setTimeout(idleMs, () => stream.close(http2.constants.NGHTTP2_CANCEL));
  const authority = req.headers[':authority'];
  if (req.headers.host === undefined && typeof authority === 'string') {
    req.headers.host = authority;
    req.rawHeaders.push('host', authority);
  }
}

/**
 * The size of an HTTP/2 request's header list when it is over
 * SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 §6.5.2: each field's name and
 * value, plus 32), else undefined. nghttp2 refuses such a list itself, but
 * only once the client has acknowledged our SETTINGS: until then the
 * protocol's defaults hold (no limit), and a client that never acknowledges
 * them could send lists HPACK inflates a hundredfold (one 4 KB field,
 * referenced again at one byte each), up to 128 fields.
 */
export function h2HeaderListOver(req: Http2ServerRequest): number | undefined {
  const raw = req.rawHeaders;
  let size = 0;
  for (let i = 0; i < raw.length; i += 2) size += raw[i]!.length + (raw[i + 1]?.length ?? 0) + 32;
  return size > H2_SETTINGS.maxHeaderListSize ? size : undefined;
}

/** The sessions of one HTTP/2 server, guarded against reset floods, closed gracefully on stop. */
export class H2Sessions {
  private readonly sessions = new Set<Http2Session>();
  /** Every TLS connection, HTTP/1.1 ones included, for the hard stop. */
  private readonly sockets = new Set<TLSSocket>();

  /** Each session's TLS socket (its `socket` is a proxy that may not be destroyed). */
  private readonly tlsOf = new WeakMap<Http2Session, TLSSocket>();
  /** The session node:http2 made in the `secureConnection` being dispatched (see {@link attach}). */
  private justMade: Http2Session | undefined;

  constructor(
    private readonly log: Logger,
    private readonly idleMs = SESSION_IDLE_MS,
    private readonly graceMs = SESSION_CLOSE_GRACE_MS,
  ) {}

  /**
   * node:http2 makes a connection's session in its own `secureConnection`
   * listener, registered before ours, and emits `session` from there: the
   * session {@link guard} saw last is this TLS socket's, when our listener
   * runs (none for an HTTP/1.1 connection).
   */
  attach(server: Http2SecureServer): void {
    server.on('session', (session) => this.guard(session));
    server.on('secureConnection', (socket: TLSSocket) => {
      const made = this.justMade;
      this.justMade = undefined;
      if (made) this.tlsOf.set(made, socket);
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
  }

  private guard(session: Http2Session): void {
    this.justMade = session;
    this.sessions.add(session);
    session.once('close', () => this.sessions.delete(session));
    const remote = session.socket?.remoteAddress ?? '-';
    // Errors of one session (a flood nghttp2 detected, a protocol error, a peer that vanished) end that session only.
    session.on('error', (err: NodeJS.ErrnoException) => this.log.info({ remote, code: err.code, err: err.message }, 'http2 session dropped'));
    /** Streams under way: close() lets them finish, so a session with one is never ended by force (an answer slow in coming sends no frame). */
    let streams = 0;
    session.on('stream', (stream: ServerHttp2Stream) => {
      streams++;
      stream.once('close', () => streams--);
    });
    session.setTimeout(this.idleMs, () => {
      session.close();
      const tls = this.tlsOf.get(session);
      if (!tls || tls.destroyed) return;
      const force = setTimeout(() => {
        if (tls.destroyed || streams > 0) return;
        this.log.info({ remote, why: `idle ${this.idleMs / 1000} s, still open ${this.graceMs / 1000} s after GOAWAY` }, 'http2 connection ended');
        tls.destroy();
      }, this.graceMs);
      force.unref();
      tls.once('close', () => clearTimeout(force));
    });
    let tokens = RESET_BURST;
    let last = Date.now();
    let flooded = false;
    session.on('stream', (stream: ServerHttp2Stream) => {
      stream.once('aborted', () => {
        if (flooded) return;
        const now = Date.now();
        tokens = Math.min(RESET_BURST, tokens + ((now - last) / 1000) * RESET_RATE);
        last = now;
        tokens -= 1;
        if (tokens >= 0 || session.destroyed) return;
        flooded = true;
        this.log.warn({ remote, limit: `${RESET_BURST} then ${RESET_RATE}/s` }, 'http2 session closed: too many streams reset by the client (rapid reset)');
        // GOAWAY first (no new streams; the client learns why), then the connection is dropped once it had time to leave.
        session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
        setTimeout(() => session.destroy(), 1_000).unref();
      });
    });
  }

  /** GOAWAY to every session: streams under way finish, no new ones start. */
  goaway(): void {
    for (const s of this.sessions) if (!s.closed) s.close();
  }

  /** Ends every connection still open, HTTP/2 or HTTP/1.1. */
  destroyAll(): void {
    for (const s of this.sessions) s.destroy();
    for (const s of this.sockets) s.destroy();
  }
}

/** Stops an HTTPS listener that speaks HTTP/2 and HTTP/1.1: no new connections, sessions told to go away, idle HTTP/1.1 connections closed. */
export function closeH2Server(server: Http2SecureServer, sessions: H2Sessions, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const hard = setTimeout(() => sessions.destroyAll(), graceMs);
    hard.unref();
    server.close(() => {
      clearTimeout(hard);
      resolve();
    });
    sessions.goaway();
    // Idle HTTP/1.1 connections (the method exists when allowHTTP1 is on; the types do not name it).
    (server as unknown as { closeIdleConnections(): void }).closeIdleConnections();
  });
}
