import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { finished } from 'node:stream';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { TenantLogFiles } from '../lib/tenantlogs.ts';
import { combinedLine, DEFAULT_SITE, requestLineOf } from './accesslog.ts';
import { isHttp2, unsupportedVersion } from './h2.ts';
import { errorPage } from './pages.ts';

/** The status for each error Node's HTTP parser reports; anything else is a 400. */
const PARSER_STATUS: Record<string, number> = { HPE_HEADER_OVERFLOW: 431, HPE_CHUNK_EXTENSIONS_OVERFLOW: 413, ERR_HTTP_REQUEST_TIMEOUT: 408 };

/**
 * Answers on a bare socket (no ServerResponse exists) with the suite's page
 * (`page`, else the status's own), `headers` (whole lines, CRLF-ended) added,
 * and closes it. Returns the body length.
 */
export function writeRawPage(socket: Socket, status: number, page = errorPage(status), headers = ''): number {
  socket.on('error', () => socket.destroy()); // the peer may be gone already; nothing more to tell it
  socket.end(
    Buffer.concat([
      Buffer.from(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: ${page.length}\r\n${headers}X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n`),
      page,
    ]),
  );
  return page.length;
}

/**
 * The last response started on a connection, so a parser error behind it is
 * not answered into its body: a property of the socket (a store per request,
 * where a WeakMap would cost an ephemeron-table insert each time).
 */
const RESPONDING = Symbol('response under way');
type Responding = Socket & { [RESPONDING]?: ServerResponse };

export interface RawAnswersDeps {
  log: Logger;
  accessLogs: TenantLogFiles;
  metrics: Metrics | undefined;
  /** Logs and counts an answer to a parsed request, as every other answer is. */
  record(req: IncomingMessage, remote: string, o: { status: number; bytes: number }): void;
}

/**
 * The answers given on a bare socket, outside the 'request' event: what
 * Node's HTTP parser refuses and CONNECT. Each gets a page, a log line
 * saying who and why, a line in the `_default` access log and its count.
 */
export function createRawAnswers({ log, accessLogs, metrics, record }: RawAnswersDeps) {

  function refuseUnparsed(err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Socket): void {
    const status = PARSER_STATUS[err.code ?? ''] ?? 400;
    const remote = socket.remoteAddress ?? '-';
    log.info({ remote, status, why: err.code ?? err.message }, 'request refused by the HTTP parser');
    const bytes = writeRawPage(socket, status);
    // No tenant is known: the Host was never parsed.
    accessLogs.write(DEFAULT_SITE, combinedLine({ remote, method: '-', url: '-', httpVersion: '-', request: requestLineOf(err.rawPacket), status, bytes, referer: undefined, userAgent: undefined }));
    metrics?.httpTally.add(DEFAULT_SITE, status, bytes);
  }

  return {
    /** Called for every response started (the 'request' event). */
    started(res: ServerResponse): void {
      (res.req.socket as Responding)[RESPONDING] = res;
    },

    /**
     * 'clientError': a malformed request (400), headers over maxHeaderSize
     * (431), headers that never finished (408). Behind a pipelined request
     * still being answered, the refusal waits for that answer to end (else
     * it would land before it, or inside its body); on a socket already
     * closed there is no one to answer.
     */
    clientError(err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Socket): void {
      if (err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT') {
        // Nothing can be answered before TLS is up: an answer written now would wait for a handshake that never ends, and the connection with it.
        log.info({ remote: socket.remoteAddress ?? '-', why: err.code }, 'TLS handshake not finished in time; connection closed');
        return void socket.destroy();
      }
      if (!socket.writable) return void socket.destroy();
      const busy = (socket as Responding)[RESPONDING];
      if (busy && !busy.writableFinished) {
        finished(busy, (failed) => (failed || !socket.writable ? socket.destroy() : refuseUnparsed(err, socket)));
        return;
      }
      refuseUnparsed(err, socket);
    },

    /**
     * 'connect': CONNECT asks for a tunnel; an origin server does not give
     * one (RFC 9110 §9.3.6): 501. Over HTTP/2 it is a stream, and Node hands
     * over the stream's response instead of a socket: answered with
     * `:status 501` (bytes written to it would go out under a 200, which
     * tells the client its tunnel is open, RFC 9113 §8.5).
     */
    connect(req: IncomingMessage, socket: Socket): void {
      if (isHttp2(req)) {
        const res = socket as unknown as ServerResponse;
        const remote = req.socket.remoteAddress ?? '-';
        log.info({ remote, url: req.url || req.headers[':authority'] }, 'CONNECT refused: not a proxy');
        const page = errorPage(501);
        res.writeHead(501, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': page.length, 'X-Content-Type-Options': 'nosniff' });
        res.end(page);
        record(req, remote, { status: 501, bytes: page.length });
        return;
      }
      const remote = socket.remoteAddress ?? '-';
      const badVersion = unsupportedVersion(req);
      if (badVersion) {
        log.info({ remote, url: req.url, why: `HTTP/${req.httpVersion} on an HTTP/1.1 connection` }, 'request refused');
        record(req, remote, { status: badVersion, bytes: writeRawPage(socket, badVersion) });
        return;
      }
      log.info({ remote, url: req.url }, 'CONNECT refused: not a proxy');
      record(req, remote, { status: 501, bytes: writeRawPage(socket, 501) });
    },
  };
}
