import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import type { Socket } from 'node:net';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import { PeerCounter } from '../lib/peers.ts';
import { busyPage } from './pages.ts';
import { writeRawPage } from './refusals.ts';
import type { Outcome } from './static.ts';

/**
 * The status of a connection over the cap: nginx's limit_conn answers 503
 * by default (limit_conn_status), as Apache's mod_limitipconn does; RFC 9110
 * §15.6.4 lets Retry-After say when to come back.
 */
const STATUS = 503;
/** Seconds a refused client is asked to wait. */
export const RETRY_AFTER_S = 10;
/**
 * Connections over the cap of one client that may wait for their first
 * request (to be answered 503); past that, new ones are closed at once,
 * unanswered, so a flood of bare connections holds no more than this many
 * sockets per client until `headersTimeout` ends them.
 */
export const OVER_CAP_WAITING = 16;
/** One log line per client key and minute at most; the ones left out are counted in the next. */
const LOG_EVERY_MS = 60_000;

/** A TCP connection's 4-tuple (client address and port, listener address and port): one live connection, whichever socket object carries it. */
function tupleOf(socket: Socket): string {
  return `${socket.remoteAddress ?? '-'}|${socket.remotePort}|${socket.localAddress ?? '-'}|${socket.localPort}`;
}

/** A connection over the cap, until it closes. */
interface Over {
  key: string;
  open: number;
  limit: number;
  /** Its refusal is counted and logged already (an HTTP/2 session may send several streams before its GOAWAY). */
  told?: boolean;
}

export interface ConnectionCapDeps {
  log: Logger;
  metrics: Metrics | undefined;
  /** The cap per client key now (`http.maxConnectionsPerIp`, read at each connection so a reload applies it); 0: none. */
  limit(): number;
}

/**
 * The HTTP listeners' cap on open connections per client key (an IPv4
 * address; an IPv6 client's /64): nginx's limit_conn, Apache's
 * mod_limitipconn. Every TCP connection of every listener, plain or TLS,
 * is counted from its accept to its close, whatever it carries (HTTP/1.1
 * keep-alive, an HTTP/2 session, a WebSocket). A connection over the cap
 * is let in only to have its first request answered 503 with Retry-After
 * and closed (`Connection: close` on HTTP/1.1; on HTTP/2 the session is
 * closed with GOAWAY once that stream is answered); a TLS one finishes its
 * handshake first. Each refusal is counted in
 * `makewaves_http_refused_total{reason="too-many-connections"}`.
 */
export function createConnectionCap({ log, metrics, limit }: ConnectionCapDeps) {
  const open = new PeerCounter();
  /** Connections over the cap waiting for their first request, per client key. */
  const waiting = new PeerCounter();
  /**
   * Over-cap connections by their TCP 4-tuple ({@link tupleOf}): a TLS request's socket is not the accepted one, but
   * has its addresses and ports. The client's address and port alone are not one connection: a client may connect
   * from one source port to two listeners, and the close of one would forget that the other is over the cap.
   */
  const over = new Map<string, Over>();
  /** Per client key: when it was last logged, and refusals since. */
  const told = new Map<string, { at: number; more: number }>();

  function tell(remote: string, o: Over, what: string): void {
    if (o.told) return;
    o.told = true;
    metrics?.httpRefused.inc({ reason: 'too-many-connections' });
    const now = Date.now();
    const last = told.get(o.key);
    if (last && now - last.at < LOG_EVERY_MS) {
      last.more++;
      return;
    }
    if (told.size >= 10_000) for (const [k, t] of told) if (now - t.at >= LOG_EVERY_MS) told.delete(k);
    told.set(o.key, { at: now, more: 0 });
    const more = last?.more ? { unlogged: last.more } : {};
    log.info({ remote, clientKey: o.key, open: o.open, limit: o.limit, why: 'per-client connection limit', ...more }, what);
  }

  return {
    /** Every accepted TCP connection, before TLS or HTTP reads from it. */
    connection(socket: Socket): void {
      const remote = socket.remoteAddress ?? '-';
      const cap = limit();
      const admitted = open.acquire(remote, cap);
      if (admitted.ok) {
        socket.once('close', admitted.release);
        return;
      }
      const o: Over = { key: admitted.key, open: admitted.open, limit: cap };
      const queued = waiting.acquire(remote, OVER_CAP_WAITING);
      if (!queued.ok) {
        tell(remote, o, 'http connection refused: closed unanswered');
        socket.on('error', () => undefined); // refused already (logged above): a reset meanwhile changes nothing
        socket.destroy();
        return;
      }
      const id = tupleOf(socket);
      over.set(id, o);
      socket.once('close', () => {
        over.delete(id);
        queued.release();
      });
    },

    /**
     * Answers the request 503 and closes its connection when that
     * connection is over the cap (every request it sends before the close);
     * undefined for every other request (the common case: one map lookup
     * while any connection is over the cap, none otherwise).
     */
    refuse(req: IncomingMessage, res: ServerResponse): Outcome | undefined {
      if (over.size === 0) return undefined;
      const socket = req.socket;
      const o = over.get(tupleOf(socket));
      if (!o) return undefined;
      tell(socket.remoteAddress ?? '-', o, 'http request refused: too many connections from this client');
      const h2 = req.httpVersionMajor >= 2;
      // RFC 9113 §8.2.2: no Connection field in HTTP/2; the session is closed instead.
      const page = busyPage();
      res.writeHead(STATUS, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': page.length, 'Retry-After': String(RETRY_AFTER_S), 'X-Content-Type-Options': 'nosniff', ...(h2 ? {} : { Connection: 'close' }) });
      res.end(req.method === 'HEAD' ? undefined : page);
      if (h2) (req as unknown as Http2ServerRequest).stream.session?.close();
      return { status: STATUS, bytes: req.method === 'HEAD' ? 0 : page.length };
    },

    /** An Upgrade or CONNECT request (no ServerResponse) on a connection over the cap: 503 written to the socket, which is closed; false otherwise. */
    refuseRaw(socket: Socket): boolean {
      if (over.size === 0) return false;
      const o = over.get(tupleOf(socket));
      if (!o) return false;
      tell(socket.remoteAddress ?? '-', o, 'http request refused: too many connections from this client');
      writeRawPage(socket, STATUS, busyPage(), `Retry-After: ${RETRY_AFTER_S}\r\n`);
      return true;
    },
  };
}
