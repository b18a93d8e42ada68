import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

/** True when the request asks to switch to WebSocket (RFC 6455 §4.1), the only upgrade the suite takes. */
export function offersWebSocket(req: IncomingMessage): boolean {
  return String(req.headers.upgrade ?? '')
    .split(',')
    .some((p) => p.trim().toLowerCase() === 'websocket');
}

/** Fields that only serve the offer: RFC 9110 §7.8 (Upgrade), RFC 7540 §3.2.1 (HTTP2-Settings, for h2c). */
const OFFER_FIELDS = new Set(['upgrade', 'http2-settings']);

/**
 * The request's head as it came, without its Upgrade offer: no Upgrade or
 * HTTP2-Settings line, and no `upgrade` or `http2-settings` token in
 * Connection (a Connection line left empty is dropped). Field values were
 * already checked by the parser (no CR, LF or NUL) and are latin1, as it
 * read them.
 */
export function headWithoutOffer(req: IncomingMessage): Buffer {
  let head = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (OFFER_FIELDS.has(lower)) continue;
    let value = raw[i + 1]!;
    if (lower === 'connection') {
      value = value
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '' && !OFFER_FIELDS.has(s.toLowerCase()))
        .join(', ');
      if (value === '') continue;
    }
    head += `${name}: ${value}\r\n`;
  }
  return Buffer.from(`${head}\r\n`, 'latin1');
}

/**
 * Declines an Upgrade offer the way nginx does: the request is served as
 * if the offer had not been made (RFC 9110 §7.8: a server may ignore it),
 * body, keep-alive and all. Node hands every request with `Connection:
 * upgrade` to the 'upgrade' event with the parser already detached; the
 * request's head, rewritten without the offer, and the bytes read after it
 * are put back in front of the socket, and the socket is given to the
 * server's HTTP/1.1 connection handler again, which parses and answers it
 * through the 'request' event like any other.
 */
export function declineUpgrade(server: Server, req: IncomingMessage, socket: Socket, head: Buffer): void {
  socket.unshift(head.length > 0 ? Buffer.concat([headWithoutOffer(req), head]) : headWithoutOffer(req));
  // An HTTPS server runs the HTTP handler on 'secureConnection' (its 'connection' is the TLS handshake).
  server.emit((socket as TLSSocket).encrypted ? 'secureConnection' : 'connection', socket);
}
