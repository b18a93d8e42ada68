/**
 * The one place where this service reaches into ftp-srv beyond its
 * documented API (the `FtpSrv` constructor options, `listen`/`close`, the
 * `login` and `client-error` events, the file-system object a login hands
 * it). Everything else this service relies on is named in
 * {@link FTPSRV_INTERNALS} and checked by test/unit/ftp/ftpsrv-adapter.test.ts,
 * so an upgrade that moves one fails there first.
 */
import { createRequire } from 'node:module';
import type { Server as NetServer, Socket } from 'node:net';
import { FtpSrv } from 'ftp-srv';
import type { Logger } from '../core/log.ts';

/** ftp-srv's private members this adapter uses, by the object they live on (each checked against the installed ftp-srv by the unit test). */
export const FTPSRV_INTERNALS = {
  /** `new FtpSrv()` creates its net.Server as `.server` (its one accept handler is taken over) and installs one handler per signal (removed). */
  server: ['server'],
  /** Emitted with `{ connection }` for every accepted control connection. */
  events: ['connect'],
  /** The connection object (src/connection.js); `restByteCount` and `secure` are accessors on its prototype. */
  connection: ['commandSocket', 'connector', 'commands', 'restByteCount', 'secure', 'encoding', 'reply', 'close'],
  /** Set on the connection later: `username` by its USER handler (which refuses a second USER while it is set), `authenticated` by a login. */
  loginState: ['username', 'authenticated'],
  /** Listeners ftp-srv puts on the control socket: removed (this service reads the commands and keeps the idle time). */
  commandSocketListeners: ['data', 'timeout'],
  /** Listeners it keeps on the TCP socket after AUTH TLS, told the TLS socket's events (`close` ends the data connector). */
  commandSocketKept: ['close', 'error'],
  /** Its base data connector (src/connector/base.js): `end()` installs `new Connector(this)`, whose `connection` is the old connector. */
  connector: ['connection', 'socket', 'waitForConnection', 'end'],
  /** Its command registry (src/commands/index.js): `parse` gives `{ directive, arg, flags, raw }`. */
  commands: ['parse', 'handle'],
  /** Bluebird, ftp-srv's promise library: its handlers chain `.tap` on what `reply()` and `waitForConnection()` return, and catch `TimeoutError` (425). */
  promise: ['resolve', 'reject', 'TimeoutError', 'prototype.timeout', 'prototype.tap'],
} as const;

/** A parsed command line, as ftp-srv's registry parses it. */
export interface FtpCommand {
  directive: string;
  arg: string | null;
  flags: string[];
  raw: string;
}

/**
 * The data-connection half of ftp-srv's connection object, as its own
 * command handlers (LIST, NLST) use it: `waitForConnection()` must answer
 * with a Bluebird promise (they chain `.tap` on it, and catch Bluebird's
 * TimeoutError to answer 425).
 */
export interface DataConnector {
  readonly connection: unknown;
  readonly socket: Socket | null;
  waitForConnection(): Promise<Socket>;
  end(): void;
  /** ABOR: cuts the data connection, and fails a wait for one at once. */
  abort?(): void;
}

/** The few Bluebird methods this service uses. */
interface BluebirdPromise<T> extends Promise<T> {
  timeout(ms: number, message?: string): Promise<T>;
}
interface BluebirdStatic {
  resolve<T>(v: T | PromiseLike<T>): BluebirdPromise<T>;
  resolve(): BluebirdPromise<void>;
  reject(err: Error): Promise<never>;
}

/** ftp-srv's own promise library, from its own dependency tree: what this service hands its handlers answers in kind. */
export const Bluebird = createRequire(createRequire(import.meta.url).resolve('ftp-srv'))('bluebird') as BluebirdStatic;

/** ftp-srv's connection object, as far as it is used here (not in its typings). */
interface RawConn {
  commandSocket: Socket;
  connector: DataConnector;
  commands: { parse(line: string): FtpCommand; handle(cmd: FtpCommand): Promise<unknown> };
  authenticated?: boolean;
  username?: string;
  restByteCount: number | undefined;
  secure: boolean;
  encoding: string;
  reply(options: number | object, ...letters: unknown[]): Promise<unknown>;
  close(code?: number, message?: string): Promise<unknown>;
}

/** A line of a multi-line reply written as it is (after a leading space), not prefixed with the code. */
export type RawLine = { raw: true; message: string };

/**
 * One control connection, as this service drives it: every read or write
 * of ftp-srv's connection object goes through here.
 */
export class ControlConnection {
  private connectorNow: DataConnector;

  constructor(private readonly raw: RawConn) {
    // ftp-srv's Connector.end() installs `new Connector(this)` on the connection, and runs again
    // when the old data listener's 'close' event comes in later; by then a new PASV may have
    // installed a live connector, which that late call would drop (leaking its listener and
    // failing the next transfer with 425). Only the current connector may replace itself.
    this.connectorNow = raw.connector;
    Object.defineProperty(raw, 'connector', {
      configurable: true,
      get: () => this.connectorNow,
      set: (next: DataConnector & { connection?: unknown }) => {
        if (next.connection !== raw && next.connection !== this.connectorNow) return;
        this.connectorNow = next;
      },
    });
    // One-line replies are written here: ftp-srv's reply() runs each through several Bluebird
    // steps and a getsockname() call (for a trace log line that is off), ~50 µs a reply.
    // Multi-line and option-object replies still go to it.
    const fullReply = raw.reply;
    raw.reply = function (this: RawConn, options: number | object, ...letters: unknown[]) {
      const text = letters[0];
      if (typeof options !== 'number' || letters.length !== 1 || typeof text !== 'string' || text === '') return fullReply.call(this, options, ...letters);
      const out = this.commandSocket;
      // Like ftp-srv's, a reply to a client that has gone resolves: nobody is left to answer.
      if (!out?.writable) return Bluebird.resolve();
      // Resolved once written, as ftp-srv's is: close() destroys the socket right after a reply.
      return Bluebird.resolve(new Promise<void>((resolve) => out.write(`${options} ${text}\r\n`, this.encoding as BufferEncoding, () => resolve())));
    } as RawConn['reply'];
    // Commands are read by this service (see control.ts): ftp-srv's reader and its idle handling go.
    raw.commandSocket.removeAllListeners('data');
    raw.commandSocket.removeAllListeners('timeout');
  }

  /** The socket commands and replies travel on: the TCP socket, then the TLS socket over it after AUTH TLS. */
  get commandSocket(): Socket {
    return this.raw.commandSocket;
  }

  get secure(): boolean {
    return this.raw.secure;
  }

  /**
   * After AUTH TLS: replies go out over `secure`, and ftp-srv's PROT/PBSZ
   * see a secure session. ftp-srv's connection listens on the TCP socket it
   * was made with ('close' ends its data connector, 'error' is a
   * client-error), as does the service: what happens to the TLS socket is
   * told there.
   */
  secured(secure: Socket): void {
    const tcp = this.raw.commandSocket;
    for (const event of ['timeout', 'end', 'close', 'drain']) secure.on(event, (...args: unknown[]) => tcp.emit(event, ...args));
    // Node passes the TCP socket's errors on to the TLS socket: passed back once, not in a loop.
    let passing = false;
    secure.on('error', (err: Error) => {
      if (passing) return;
      passing = true;
      try {
        tcp.emit('error', err);
      } finally {
        passing = false;
      }
    });
    this.raw.commandSocket = secure;
    this.raw.secure = true;
  }

  get connector(): DataConnector {
    return this.raw.connector;
  }

  /** This service's own connectors are installed as they come (ftp-srv's go through the guard above). */
  set connector(next: DataConnector) {
    this.connectorNow = next;
  }

  /** The data connection of the installed connector (ftp-srv's or ours), if one is open. */
  get dataSocket(): Socket | null {
    return this.raw.connector?.socket ?? null;
  }

  /** Waits for the data connection of the installed connector. */
  waitForData(): Promise<Socket> {
    return this.raw.connector.waitForConnection();
  }

  /** Ends the installed connector (its listener, its data connection): the next transfer needs a new PASV/PORT. */
  endData(): void {
    this.raw.connector.end();
  }

  /** ABOR: cuts the data connection and fails a wait for one at once (ftp-srv's connector has no abort: its socket goes). */
  abortData(): void {
    const c = this.raw.connector;
    if (c.abort) c.abort();
    else c.socket?.destroy();
  }

  get authenticated(): boolean {
    return this.raw.authenticated === true;
  }

  /** Forgets a user name sent with USER: ftp-srv would otherwise refuse a second USER after a failed PASS. */
  forgetUser(): void {
    if (!this.raw.authenticated) this.raw.username = undefined;
  }

  /** The REST offset for the next transfer, reset as it is taken. */
  takeRest(): number {
    const n = this.raw.restByteCount ?? 0;
    this.raw.restByteCount = 0;
    return n;
  }

  parse(line: string): FtpCommand {
    return this.raw.commands.parse(line);
  }

  /** Lets ftp-srv's own handler answer the command (it answers 530 to those that need a login). */
  delegate(cmd: FtpCommand): Promise<unknown> {
    return this.raw.commands.handle(cmd);
  }

  /**
   * Lets ftp-srv's handler answer, leaving out the 150 it sends: the
   * caller has sent its own first (over TLS the 150 must come before the
   * data connection's handshake, and ftp-srv's handlers send it after).
   */
  async delegateWithout150(cmd: FtpCommand): Promise<unknown> {
    const reply = this.raw.reply;
    let skipped = false;
    this.raw.reply = function (this: RawConn, ...args: Parameters<RawConn['reply']>) {
      if (!skipped && args[0] === 150) {
        skipped = true;
        return Bluebird.resolve();
      }
      return reply.apply(this, args);
    } as RawConn['reply'];
    try {
      return await this.raw.commands.handle(cmd);
    } finally {
      this.raw.reply = reply;
    }
  }

  /** A reply: one line with `text`, or a multi-line one (`text`, the lines given as they are, then `last`). */
  reply(code: number, text: string, lines?: RawLine[], last?: string): Promise<unknown> {
    if (!lines) return this.raw.reply(code, text);
    return this.raw.reply(code, text, ...lines, last ?? 'End');
  }

  close(code: number, message: string): Promise<unknown> {
    return this.raw.close(code, message);
  }
}

/** What the service hands {@link startFtpSrv}. */
export interface FtpSrvHooks {
  /** Every accepted TCP connection, before ftp-srv sees it: call `accept` to let it through. */
  onSocket(sock: Socket, accept: () => void): void;
  /** Every control connection ftp-srv made of an accepted socket, before its greeting. */
  onConnection(conn: ControlConnection): void;
  /** ftp-srv's `login` event: resolve with `{ fs }` or reject with an error carrying `code`. */
  login(conn: ControlConnection, username: string, password: string): Promise<object>;
}

/**
 * Makes ftp-srv's server with `options` (its documented constructor
 * options) and takes over what this service needs of it. Returns the
 * net.Server to listen on and a disposer.
 */
export function startFtpSrv(options: ConstructorParameters<typeof FtpSrv>[0], hooks: FtpSrvHooks): { server: NetServer; dispose(): void } {
  const signals = ['SIGTERM', 'SIGINT', 'SIGQUIT'] as const;
  const before = new Map(signals.map((sig) => [sig, new Set(process.listeners(sig))]));
  const ftp = new FtpSrv(options);
  // ftp-srv installs process signal handlers that exit the process; signals belong to main.ts.
  for (const sig of signals) {
    for (const fn of process.listeners(sig)) if (!before.get(sig)!.has(fn)) process.removeListener(sig, fn);
  }
  const server = (ftp as unknown as { server: NetServer }).server;
  const [accept] = server.listeners('connection') as Array<(sock: Socket) => void>;
  server.removeAllListeners('connection');
  server.on('connection', (sock: Socket) => hooks.onSocket(sock, () => accept!(sock)));
  const wrapped = new WeakMap<object, ControlConnection>();
  const events = ftp as unknown as NodeJS.EventEmitter;
  events.on('connect', ({ connection }: { connection: RawConn }) => {
    const conn = new ControlConnection(connection);
    wrapped.set(connection, conn);
    hooks.onConnection(conn);
  });
  events.on('login', ({ connection, username, password }: { connection: RawConn; username: string; password: string }, resolve: (r: object) => void, reject: (e: Error) => void) => {
    const conn = wrapped.get(connection);
    if (!conn) return reject(Object.assign(new Error('Connection closing'), { code: 421 }));
    hooks.login(conn, username, password).then(resolve, reject);
  });
  // Control-socket errors are a client's network trouble; the session's own close handling reports what matters.
  events.on('client-error', () => undefined);
  return { server, dispose: () => ftp.removeAllListeners() };
}

/** The subset of bunyan's logger API ftp-srv calls (its documented `log` option). */
export interface BunyanLike {
  child(fields: Record<string, unknown>): BunyanLike;
  trace(...args: unknown[]): void;
  debug(...args: unknown[]): void;
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
  fatal(...args: unknown[]): void;
}

/**
 * Gives ftp-srv our pino logger. Its trace and debug lines (which include
 * raw command lines) are dropped, so no PASS argument can reach a log; its
 * "error" lines are mostly client faults (a missing file, a refused path),
 * logged at debug: the service logs the refusals that matter itself.
 */
export function bunyanAdapter(log: Logger): BunyanLike {
  const emit = (level: 'debug' | 'warn' | 'error', args: unknown[]) => {
    if (!log.isLevelEnabled(level)) return;
    const [first, ...rest] = args;
    const msg = rest.find((a): a is string => typeof a === 'string') ?? (typeof first === 'string' ? first : 'ftp-srv');
    const detail = first instanceof Error ? { err: first.message } : typeof first === 'object' && first !== null ? safe(first as Record<string, unknown>) : {};
    log[level](detail, `ftp-srv: ${msg}`);
  };
  const none = () => undefined;
  return {
    child: (fields) => bunyanAdapter(log.child(safe(fields))),
    trace: none,
    debug: none,
    info: (...a) => emit('debug', a),
    warn: (...a) => emit('warn', a),
    error: (...a) => emit('debug', a),
    fatal: (...a) => emit('error', a),
  };
}

/** Keeps plain scalar fields only (ftp-srv passes command objects; their args are not logged). */
function safe(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (k === 'command' || k === 'password' || k === 'message') continue;
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k === 'id' ? 'ftpsrvId' : k] = v;
  }
  return out;
}
