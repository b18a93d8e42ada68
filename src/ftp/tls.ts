import type { Socket } from 'node:net';
import tls, { type SecureContext, type TLSSocket } from 'node:tls';
import type { Logger } from '../core/log.ts';
import { refuseRenegotiation } from '../lib/renegotiation.ts';

/** How long a client has to complete a TLS handshake (control or data connection). */
const HANDSHAKE_MS = 30_000;

/**
 * The server side of TLS for FTPS, on sockets that are already open (the
 * control connection after `AUTH TLS`, each protected data connection).
 * One `tls.Server`, never listening, is handed each socket as a
 * `connection` event, so every FTPS handshake gets what HTTPS gets from
 * Node: the certificate chosen by SNI (`sni`), a handshake timeout, and
 * errors reported once the handshake is done. Renegotiation is refused on
 * every socket (TLS 1.2 lets a client ask for any number of handshakes,
 * each costing the server far more than the client): an attempt closes
 * the connection and is logged.
 *
 * One acceptor serves one FTPS session (its control and data connections):
 * its session tickets and session cache are its own, so a data connection
 * that resumes its TLS session proves it comes from that session's client
 * (vsftpd's require_ssl_reuse), not from another program on the same host.
 */
/** A data connection whose handshake did not resume the control connection's TLS session. */
export class NotResumedError extends Error {
  constructor() {
    super('the data connection did not resume the TLS session of its control connection');
  }
}

export class TlsAcceptor {
  private readonly server: tls.Server;
  /** Sockets in their handshake, by their TCP four-tuple (what the TLS socket shows of them). */
  private readonly pending = new Map<string, { resolve: (s: TLSSocket) => void; reject: (err: Error) => void; log: Logger; on: 'control' | 'data'; resumed: boolean }>();

  constructor(pair: { cert: Buffer; key: Buffer }, sni?: (servername: string) => SecureContext | undefined) {
    this.server = tls.createServer({
      ...pair,
      minVersion: 'TLSv1.2',
      handshakeTimeout: HANDSHAKE_MS,
      ...(sni ? { SNICallback: (name: string, cb: (err: Error | null, ctx?: SecureContext) => void) => cb(null, sni(name)) } : {}),
    });
    this.server.on('secureConnection', (secure: TLSSocket) => this.settle(secure));
    this.server.on('tlsClientError', (err: Error, secure: TLSSocket) => this.settle(secure, err));
  }

  private static key(s: Socket): string {
    return `${s.remoteAddress}|${s.remotePort}|${s.localAddress}|${s.localPort}`;
  }

  private settle(secure: TLSSocket, err?: Error): void {
    const key = TlsAcceptor.key(secure);
    const p = this.pending.get(key);
    if (!p) {
      secure.destroy();
      return;
    }
    this.pending.delete(key);
    if (err) {
      secure.destroy();
      p.reject(new Error(`TLS handshake failed: ${err.message}`, { cause: err }));
      return;
    }
    if (p.resumed && !secure.isSessionReused()) {
      p.log.warn({ remote: secure.remoteAddress, why: 'no TLS session reuse' }, 'ftp data connection refused: it did not resume the TLS session of its control connection');
      secure.destroy();
      p.reject(new NotResumedError());
      return;
    }
    // Other errors are the transfer's or the session's to report.
    refuseRenegotiation(secure, (remote) => p.log.info({ on: p.on, remote, why: 'renegotiation' }, 'ftp TLS renegotiation refused; connection closed'));
    p.resolve(secure);
  }

  /**
   * Runs the server side of the handshake on `raw`; resolves with the TLS
   * socket once it is done, rejects when it fails or `raw` closes first.
   * With `resumed`, a handshake that does not resume a session of this
   * acceptor is refused ({@link NotResumedError}).
   */
  accept(raw: Socket, log: Logger, on: 'control' | 'data', resumed = false): Promise<TLSSocket> {
    const key = TlsAcceptor.key(raw);
    return new Promise<TLSSocket>((resolve, reject) => {
      raw.once('close', () => {
        if (this.pending.delete(key)) reject(new Error('the connection closed during the TLS handshake'));
      });
      this.pending.set(key, { resolve, reject, log, on, resumed });
      this.server.emit('connection', raw);
    });
  }
}
