import { randomInt } from 'node:crypto';
import net, { isIP, type Server, type Socket } from 'node:net';
import type { Logger } from '../core/log.ts';
import { Bluebird, type DataConnector } from './ftpsrv-adapter.ts';
import { adoptForDirectReads, directReadOptions } from './receive.ts';
import { NotResumedError, type TlsAcceptor } from './tls.ts';

export type { DataConnector };

/** What a connector needs of the control connection. */
export interface ControlSide {
  commandSocket: Socket;
  secure: boolean;
  connector: DataConnector;
}

/** How long a transfer command waits for its data connection (vsftpd's accept/connect timeouts are 60 s). */
const CONNECT_WAIT_MS = 30_000;

/** An address without the IPv4-mapped IPv6 prefix. */
export function plainIp(a: string | undefined): string {
  if (!a) return '';
  return a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a;
}

/** Both addresses name the same host (IPv4-mapped IPv6 folded). */
export function sameIp(a: string | undefined, b: string | undefined): boolean {
  const x = plainIp(a).toLowerCase();
  const y = plainIp(b).toLowerCase();
  return x !== '' && x === y;
}

/** Refusals logged per passive listener; the rest are only counted. */
const MAX_LOGGED_REFUSALS = 5;

/** `address:port` of the far end of a socket. */
function endpoint(s: Socket): string {
  const ip = plainIp(s.remoteAddress);
  return `${isIP(ip) === 6 ? `[${ip}]` : ip}:${s.remotePort}`;
}

/** Ends a data socket: flushed when still writable, released at once otherwise. */
function release(socket: Socket | null): void {
  if (!socket || socket.destroyed) return;
  if (socket.writableEnded || !socket.writable) socket.destroy();
  else socket.end(() => socket.destroy());
}

/**
 * No data connection set up (ftp-srv's base connector answers the same
 * way): transfer commands wait for nothing and get 425.
 */
export class NoConnector implements DataConnector {
  readonly socket = null;
  constructor(readonly connection: unknown) {}
  waitForConnection(): Promise<Socket> {
    return Bluebird.reject(new Error('No data connection: send PASV, EPSV, PORT or EPRT first'));
  }
  end(): void {}
  abort(): void {}
}

/** Shared by every session: which passive ports to use and how TLS data connections are set up. */
export interface PassiveOptions {
  host: string;
  /** Inclusive port range; [0, 0] lets the kernel choose. */
  range: [number, number];
  /** For FTPS sessions: the server side of TLS on each data connection. */
  tls?: TlsAcceptor;
  log: Logger;
}

/**
 * Passive mode (PASV, EPSV), written for this service instead of ftp-srv's:
 * that one probes each port with a throw-away listener before listening on
 * it, compares addresses through a library that calls the deprecated
 * `Buffer()` (a stack capture per connection), and polls for the data
 * connection every 50 ms. Here the port is taken by one listen and the data
 * connection is awaited as an event.
 *
 * One listener serves one data connection, for the transfer command that
 * follows (vsftpd's `pasv_promiscuous=NO`): a connection from any address
 * but the control connection's is refused, so is every connection after
 * the first was taken; each refusal is logged with who and why. The
 * listener stays open, refusing, until the transfer is done (end()), so a
 * connection that comes second is seen and logged rather than refused
 * unseen by the kernel: over plain FTP, the client's own connection refused
 * as "already taken" is the one sign that another program on its host took
 * the port first (over FTPS that program fails the TLS-session check).
 */
export class PassiveConnector implements DataConnector {
  private server: Server | undefined;
  private dataSocket: Socket | null = null;
  /** The connection accepted from the client (plain), or whose TLS handshake proved it the client's. */
  private accepted: Socket | undefined;
  /** Connections from the client's address still in their TLS handshake: the first that resumes the session is taken. */
  private readonly candidates = new Set<Socket>();
  private handshakeFailed = false;
  /** end() or abort() has run: a listener still being opened is closed, a late connection refused. */
  private ended = false;
  private waiting: Array<{ resolve: (s: Socket) => void; reject: (err: Error) => void }> = [];
  private idleTimer: NodeJS.Timeout | undefined;
  /** Where the connection that was taken came from (for the log of those refused after it). */
  private takenBy: string | undefined;
  /** Connections refused by this listener (only the first few are logged: a flood writes no more). */
  private refusals = 0;

  constructor(
    readonly connection: ControlSide,
    private readonly opts: PassiveOptions,
  ) {}

  get socket(): Socket | null {
    return this.dataSocket;
  }

  /** Listens on a free port of the range; resolves with that port. */
  async listen(): Promise<number> {
    const [min, max] = this.opts.range;
    const span = max - min + 1;
    const tries = min === 0 ? 1 : Math.min(span, 100);
    let lastErr: Error | undefined;
    // From a random place in the range: the next session's port cannot be told from this one's.
    const first = randomInt(span);
    for (let i = 0; i < tries; i++) {
      const port = min === 0 ? 0 : min + ((first + i) % span);
      const server = this.createServer();
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ port, host: this.opts.host, exclusive: true }, () => {
            server.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        lastErr = err as Error;
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') break;
        continue;
      }
      if (this.ended) {
        server.close(); // the session moved on (or closed) while the port was being opened
        throw new Error('passive mode ended');
      }
      server.on('error', (err) => this.opts.log.warn({ err: err.message }, 'ftp passive listener failed'));
      this.server = server;
      // Nobody connected: the listener (and its port) is not held longer than a transfer would wait.
      this.idleTimer = setTimeout(() => this.closeServer(), CONNECT_WAIT_MS);
      this.idleTimer.unref();
      return (server.address() as net.AddressInfo).port;
    }
    throw lastErr ?? new Error('no passive port');
  }

  private createServer(): Server {
    const acceptor = this.connection.secure ? this.opts.tls : undefined;
    const deliver = (socket: Socket) => {
      clearTimeout(this.idleTimer);
      this.dataSocket = socket;
      for (const w of this.waiting.splice(0)) w.resolve(socket);
    };
    return net.createServer({ pauseOnConnect: true }, (raw: Socket) => {
      // Checked on the raw TCP connection, so a refused one gets no TLS handshake either.
      const why = this.ended
        ? 'passive mode ended'
        : !sameIp(raw.remoteAddress, this.connection.commandSocket.remoteAddress)
          ? 'another address'
          : this.accepted
            ? 'already taken'
            : undefined;
      if (why) {
        this.refuse(raw, why);
        return;
      }
      if (!acceptor) {
        this.takenBy = endpoint(raw);
        const plain = adoptForDirectReads(raw);
        this.accepted = plain;
        plain.on('error', () => undefined); // the transfer in progress reports it
        return deliver(plain);
      }
      // Not yet the transfer's connection: a reset before it is taken only loses this candidate.
      raw.on('error', () => undefined);
      this.candidates.add(raw);
      acceptor.accept(raw, this.opts.log, 'data', true).then(
        (secure) => {
          this.candidates.delete(raw);
          secure.on('error', () => undefined); // the transfer in progress reports it
          if (this.ended || this.accepted) {
            secure.destroy();
            return;
          }
          this.accepted = secure;
          this.takenBy = endpoint(raw);
          deliver(secure);
        },
        (err: unknown) => {
          this.candidates.delete(raw);
          raw.destroy();
          // Another program on the client's host: refused, and the listener waits on for the client.
          if (err instanceof NotResumedError || this.dataSocket) return;
          this.handshakeFailed = true;
          for (const w of this.waiting.splice(0)) w.reject(new Error('the TLS handshake on the data connection failed'));
        },
      );
    });
  }

  /** Closes a data connection this listener does not take, and logs who and why (the first few per listener). */
  private refuse(raw: Socket, why: string): void {
    // Being destroyed as refused (logged below): its errors have no one to tell.
    raw.on('error', () => undefined);
    raw.destroy();
    if (++this.refusals > MAX_LOGGED_REFUSALS) return;
    this.opts.log.warn(
      {
        dataFrom: plainIp(raw.remoteAddress),
        dataPort: raw.remotePort,
        control: plainIp(this.connection.commandSocket.remoteAddress),
        why,
        ...(why === 'already taken' ? { takenBy: this.takenBy } : {}),
        ...(this.refusals === MAX_LOGGED_REFUSALS ? { more: 'further refusals on this port are not logged' } : {}),
      },
      'ftp passive data connection refused',
    );
  }

  waitForConnection(): Promise<Socket> {
    if (this.dataSocket) return Bluebird.resolve(this.dataSocket);
    if (this.handshakeFailed) return Bluebird.reject(new Error('the TLS handshake on the data connection failed'));
    if (!this.server && !this.accepted && this.candidates.size === 0) return Bluebird.reject(new Error('Passive listener not set up'));
    return Bluebird.resolve(new Promise<Socket>((resolve, reject) => this.waiting.push({ resolve, reject }))).timeout(CONNECT_WAIT_MS, 'no data connection');
  }

  private closeServer(): void {
    clearTimeout(this.idleTimer);
    this.server?.close();
    this.server = undefined;
  }

  end(): void {
    this.ended = true;
    this.closeServer();
    for (const c of this.candidates) c.destroy(); // still in their TLS handshake
    release(this.dataSocket);
    this.dataSocket = null;
    for (const w of this.waiting.splice(0)) w.reject(new Error('passive mode ended'));
    if (this.connection.connector === this) this.connection.connector = new NoConnector(this);
  }

  abort(): void {
    this.ended = true;
    this.closeServer();
    for (const c of this.candidates) c.destroy();
    this.accepted?.destroy();
    this.dataSocket?.destroy();
    for (const w of this.waiting.splice(0)) w.reject(new Error('aborted'));
  }
}

/**
 * Active mode (PORT, EPRT; the target already checked to be the client's
 * own address): one connection out, awaited as an event (ftp-srv's polls
 * every 250 ms); over FTPS the server side of TLS on it.
 */
export class ActiveConnector implements DataConnector {
  private dataSocket: Socket | null = null;
  private ready: Promise<Socket>;
  private fail: (err: Error) => void = () => undefined;
  /** end() or abort() has run: a connection that completes later is closed at once. */
  private ended = false;

  constructor(
    readonly connection: ControlSide,
    host: string,
    port: number,
    acceptor: TlsAcceptor | undefined,
    log: Logger,
  ) {
    this.ready = new Promise<Socket>((resolve, reject) => {
      this.fail = reject;
      // Plain: read directly (see adoptForDirectReads); over TLS the TLS layer reads.
      const reads = connection.secure && acceptor ? undefined : directReadOptions();
      const raw = net.connect({ host, port, family: isIP(host) || undefined, ...(reads ? { onread: reads.onread } : {}) });
      reads?.register(raw);
      this.dataSocket = raw;
      raw.once('error', reject);
      raw.once('connect', () => {
        raw.off('error', reject);
        raw.on('error', () => undefined); // the transfer in progress reports it
        if (this.ended) {
          raw.destroy();
          return reject(new Error('active mode ended'));
        }
        if (!connection.secure || !acceptor) {
          raw.pause();
          return resolve(raw);
        }
        acceptor.accept(raw, log, 'data').then(
          (secure) => {
            secure.on('error', () => undefined); // the transfer in progress reports it
            if (this.ended) {
              secure.destroy();
              return reject(new Error('active mode ended'));
            }
            this.dataSocket = secure;
            resolve(secure);
          },
          () => {
            raw.destroy();
            reject(new Error('the TLS handshake on the data connection failed'));
          },
        );
      });
    });
    // Awaited by the transfer command, which answers 425; this only keeps an unawaited rejection from the process.
    this.ready.catch(() => undefined);
  }

  get socket(): Socket | null {
    return this.dataSocket;
  }

  waitForConnection(): Promise<Socket> {
    return Bluebird.resolve(this.ready).timeout(CONNECT_WAIT_MS, 'no data connection');
  }

  end(): void {
    this.ended = true;
    release(this.dataSocket);
    this.dataSocket = null;
    this.fail(new Error('active mode ended'));
    if (this.connection.connector === this) this.connection.connector = new NoConnector(this);
  }

  abort(): void {
    this.ended = true;
    this.dataSocket?.destroy();
    this.fail(new Error('aborted'));
  }
}
