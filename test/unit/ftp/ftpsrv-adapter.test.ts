/**
 * Every ftp-srv internal that src/ftp/ftpsrv-adapter.ts relies on, checked
 * against the ftp-srv installed in node_modules: an upgrade that removes or
 * changes one fails here, naming it, before any FTP session breaks.
 */
import { createRequire } from 'node:module';
import { connect, Server, Socket } from 'node:net';
import { FtpSrv } from 'ftp-srv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/core/log.ts';
import { Bluebird, bunyanAdapter, ControlConnection, FTPSRV_INTERNALS, startFtpSrv, type DataConnector } from '../../../src/ftp/ftpsrv-adapter.ts';

const quiet = () => bunyanAdapter(createLogger({ level: 'silent' }));
const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGQUIT'] as const;

/** ftp-srv's connection object, untyped: the test looks at it as ftp-srv made it. */
type Raw = Record<string, unknown> & { commandSocket: Socket; connector: Record<string, unknown> & { end(): void } };

/** A control connection from the client side, reading whole replies (RFC 959 §4.2). */
const clients: Socket[] = [];
function client(port: number): { sock: Socket; reply(): Promise<string>; send(line: string): Promise<string> } {
  const sock = connect(port, '127.0.0.1');
  clients.push(sock);
  let buf = '';
  const waiting: Array<(r: string) => void> = [];
  const take = () => {
    const m = /(^|\r\n)(\d{3}) [^\r\n]*\r\n/.exec(buf);
    if (!m || waiting.length === 0) return;
    const end = m.index + m[0].length;
    const r = buf.slice(0, end);
    buf = buf.slice(end);
    waiting.shift()!(r);
    take();
  };
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    take();
  });
  const reply = () =>
    new Promise<string>((r) => {
      waiting.push(r);
      take();
    });
  return {
    sock,
    reply,
    send: (line) => {
      const p = reply();
      sock.write(`${line}\r\n`);
      return p;
    },
  };
}

/** ftp-srv made directly (not through the adapter), so its objects are seen as it leaves them. */
let ftp: FtpSrv;
let port: number;
let signalsAdded: number[];
const connections: Raw[] = [];
const waitingConn: Array<(c: Raw) => void> = [];
let loginEvent: { payload: Record<string, unknown>; resolve: (r: object) => void } | undefined;

beforeAll(async () => {
  const before = SIGNALS.map((sig) => new Set(process.listeners(sig)));
  ftp = new FtpSrv({ url: 'ftp://127.0.0.1:0', pasv_url: '127.0.0.1', log: quiet() });
  const added = SIGNALS.map((sig, i) => process.listeners(sig).filter((fn) => !before[i]!.has(fn)));
  signalsAdded = added.map((fns) => fns.length);
  SIGNALS.forEach((sig, i) => added[i]!.forEach((fn) => process.removeListener(sig, fn)));
  const events = ftp as unknown as NodeJS.EventEmitter;
  events.on('connect', (payload: { connection: Raw }) => {
    const w = waitingConn.shift();
    if (w) w(payload.connection);
    else connections.push(payload.connection);
  });
  events.on('login', (payload: Record<string, unknown>, resolve: (r: object) => void) => {
    loginEvent = { payload, resolve };
    resolve({ fs: { get: async () => ({ isDirectory: () => true }), list: async () => [] } });
  });
  const server = (ftp as unknown as { server: Server }).server;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as { port: number }).port;
});

afterAll(async () => {
  for (const sock of clients) sock.destroy();
  const server = (ftp as unknown as { server: Server }).server;
  await new Promise((r) => server.close(r));
  ftp.removeAllListeners();
});

/** A new session: the client side, and ftp-srv's connection object for it (before the adapter touches it). */
async function session(): Promise<{ c: ReturnType<typeof client>; raw: Raw }> {
  const got = new Promise<Raw>((r) => (connections.length ? r(connections.shift()!) : waitingConn.push(r)));
  const c = client(port);
  const raw = await got;
  expect(await c.reply()).toMatch(/^220 /);
  return { c, raw };
}

/** Looks `a.b` up on `obj` (`prototype.tap` on Bluebird). */
function lookup(obj: unknown, dotted: string): unknown {
  return dotted.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], obj);
}

describe('ftp-srv internals used by the adapter (against the installed ftp-srv)', () => {
  it(`server: ${FTPSRV_INTERNALS.server.join(', ')}; one accept handler; one process handler per signal (the adapter removes them)`, () => {
    for (const name of FTPSRV_INTERNALS.server) expect(ftp, `FtpSrv#${name}`).toHaveProperty(name);
    const server = (ftp as unknown as { server: Server }).server;
    expect(server).toBeInstanceOf(Server);
    expect(server.listeners('connection')).toHaveLength(1);
    expect(signalsAdded).toEqual([1, 1, 1]);
  });

  it(`events: ${FTPSRV_INTERNALS.events.join(', ')} with { connection }; connection: ${FTPSRV_INTERNALS.connection.join(', ')}`, async () => {
    const { c, raw } = await session();
    for (const name of FTPSRV_INTERNALS.connection) expect(name in raw, `connection.${name}`).toBe(true);
    expect(raw.commandSocket).toBeInstanceOf(Socket);
    expect(raw.commandSocket.remotePort).toBe(c.sock.localPort);
    for (const fn of ['reply', 'close'] as const) expect(typeof raw[fn], `connection.${fn}()`).toBe('function');
    expect(raw.encoding).toBe('utf8');
    expect(raw.authenticated).toBeUndefined();
    expect(raw.username).toBeUndefined();
    for (const accessor of ['restByteCount', 'secure']) {
      const d = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(raw), accessor);
      expect(typeof d?.get === 'function' && typeof d.set === 'function', `connection.${accessor} accessor`).toBe(true);
    }
    for (const event of FTPSRV_INTERNALS.commandSocketListeners) expect(raw.commandSocket.listenerCount(event), `commandSocket '${event}' listener`).toBe(1);
    for (const event of FTPSRV_INTERNALS.commandSocketKept) expect(raw.commandSocket.listenerCount(event), `commandSocket '${event}' listener`).toBeGreaterThan(0);
    c.sock.destroy();
  });

  it(`connector: ${FTPSRV_INTERNALS.connector.join(', ')}; end() installs a new connector whose connection is the old connector`, async () => {
    const { c, raw } = await session();
    const old = raw.connector;
    for (const name of FTPSRV_INTERNALS.connector) expect(name in old, `connector.${name}`).toBe(true);
    expect(old.connection).toBe(raw);
    old.end();
    expect(raw.connector).not.toBe(old);
    expect(raw.connector.connection).toBe(old);
    c.sock.destroy();
  });

  it(`commands: ${FTPSRV_INTERNALS.commands.join(', ')}; parse() gives { directive, arg, flags, raw }`, async () => {
    const { c, raw } = await session();
    const commands = raw.commands as Record<string, unknown>;
    for (const name of FTPSRV_INTERNALS.commands) expect(typeof commands[name], `commands.${name}()`).toBe('function');
    const conn = new ControlConnection(raw as never);
    expect(conn.parse('stor a b.txt')).toEqual({ directive: 'STOR', arg: 'a b.txt', flags: [], raw: 'stor a b.txt' });
    expect(conn.parse('LIST -a pub')).toEqual({ directive: 'LIST', arg: 'pub', flags: ['-a'], raw: 'LIST -a pub' });
    expect(conn.parse('NOOP')).toEqual({ directive: 'NOOP', arg: null, flags: [], raw: 'NOOP' });
    c.sock.destroy();
  });

  it(`promise: Bluebird ${FTPSRV_INTERNALS.promise.join(', ')}, the same library ftp-srv's replies are made with`, async () => {
    for (const name of FTPSRV_INTERNALS.promise) expect(lookup(Bluebird, name), `Bluebird.${name}`).toBeDefined();
    const ftpSrvBluebird = createRequire(createRequire(import.meta.url).resolve('ftp-srv'))('bluebird');
    expect(Bluebird).toBe(ftpSrvBluebird);
    const { c, raw } = await session();
    const sent = (raw.reply as (code: number, text: string) => Promise<unknown>)(200, 'hello');
    expect(sent).toBeInstanceOf(Bluebird as unknown as new () => unknown);
    expect(await c.reply()).toBe('200 hello\r\n');
    c.sock.destroy();
  });
});

describe('ControlConnection, driving a real ftp-srv connection', () => {
  it("removes ftp-srv's command reader and idle handling from the control socket", async () => {
    const { c, raw } = await session();
    new ControlConnection(raw as never);
    for (const event of FTPSRV_INTERNALS.commandSocketListeners) expect(raw.commandSocket.listenerCount(event)).toBe(0);
    c.sock.destroy();
  });

  it('replies: one line written directly (still a Bluebird promise); multi-line ones through ftp-srv', async () => {
    const { c, raw } = await session();
    const conn = new ControlConnection(raw as never);
    const one = conn.reply(200, 'fine');
    expect(typeof (one as unknown as { tap?: unknown }).tap).toBe('function');
    expect(await c.reply()).toBe('200 fine\r\n');
    void conn.reply(211, 'Extensions supported:', [{ raw: true, message: ' UTF8' }], 'End');
    expect(await c.reply()).toBe('211-Extensions supported:\r\n UTF8\r\n211 End\r\n');
    c.sock.destroy();
  });

  it(`${FTPSRV_INTERNALS.loginState.join(', ')}: USER sets connection.username (forgetUser clears it); REST sets restByteCount (takeRest takes it once); PASS emits login with { connection, username, password } and sets authenticated`, async () => {
    const { c, raw } = await session();
    const conn = new ControlConnection(raw as never);
    const answered = c.reply();
    await conn.delegate(conn.parse('USER ann'));
    expect(await answered).toMatch(/^331 /);
    expect(raw.username).toBe('ann');
    void conn.delegate(conn.parse('USER bob'));
    expect(await c.reply()).toMatch(/^530 /); // ftp-srv refuses a second USER: why forgetUser() exists
    conn.forgetUser();
    expect(raw.username).toBeUndefined();
    void conn.delegate(conn.parse('USER ann'));
    expect(await c.reply()).toMatch(/^331 /);
    void conn.delegate(conn.parse('PASS secret'));
    expect(await c.reply()).toMatch(/^230 /);
    expect(loginEvent?.payload).toEqual({ connection: raw, username: 'ann', password: 'secret' });
    expect(raw.authenticated).toBe(true);
    expect(conn.authenticated).toBe(true);
    void conn.delegate(conn.parse('REST 100'));
    expect(await c.reply()).toMatch(/^350 /);
    expect(conn.takeRest()).toBe(100);
    expect(conn.takeRest()).toBe(0);
    c.sock.destroy();
  });

  it("a stale connector's end() does not replace the connector installed after it", async () => {
    const { c, raw } = await session();
    const conn = new ControlConnection(raw as never);
    const stale = conn.connector;
    const ours: DataConnector = { connection: conn, socket: null, waitForConnection: () => Bluebird.reject(new Error('none')), end: () => undefined };
    conn.connector = ours;
    stale.end(); // what ftp-srv's late 'close' handler of an old data listener does
    expect(conn.connector).toBe(ours);
    expect(raw.connector).toBe(ours);
    c.sock.destroy();
  });

  it("ftp-srv's LIST waits on connector.waitForConnection() with .tap, answers 425 to Bluebird's TimeoutError, and delegateWithout150 leaves its 150 out", async () => {
    const { c, raw } = await session();
    const conn = new ControlConnection(raw as never);
    void conn.delegate(conn.parse('USER ann'));
    await c.reply();
    void conn.delegate(conn.parse('PASS secret'));
    await c.reply();
    conn.connector = {
      connection: conn,
      socket: null,
      waitForConnection: () => Bluebird.resolve(new Promise<Socket>(() => undefined)).timeout(1, 'no data connection'),
      end: () => undefined,
    };
    void conn.delegate(conn.parse('LIST'));
    expect(await c.reply()).toMatch(/^425 /);
    // A data connection: ftp-srv writes the (empty) listing there and answers 150 then 226; without its 150, 226 alone.
    const pair = await new Promise<{ server: Socket; client: Socket }>((resolve) => {
      const srv = new Server((s) => {
        srv.close();
        resolve({ server: s, client });
      });
      const client = new Socket();
      srv.listen(0, '127.0.0.1', () => client.connect((srv.address() as { port: number }).port, '127.0.0.1'));
    });
    pair.client.on('error', () => undefined);
    conn.connector = { connection: conn, socket: pair.server, waitForConnection: () => Bluebird.resolve(pair.server), end: () => pair.server.end() };
    const done = conn.delegateWithout150(conn.parse('LIST'));
    expect(await c.reply()).toMatch(/^226 /);
    await done;
    pair.client.destroy();
    c.sock.destroy();
  });

  it(`secured() moves replies to the TLS socket, makes ftp-srv see a secure session (its PBSZ, PROT), and tells the TCP socket its ${FTPSRV_INTERNALS.commandSocketKept.join(', ')} (ftp-srv's close ends the data connector)`, async () => {
    const { c, raw } = await session();
    const conn = new ControlConnection(raw as never);
    void conn.delegate(conn.parse('PROT P'));
    expect(await c.reply()).toMatch(/^202 /); // not secure yet
    // A second connection stands in for the TLS socket: what is written to it is read at its far end.
    const far = await new Promise<{ near: Socket; reader: ReturnType<typeof client> }>((resolve) => {
      const srv = new Server((near) => {
        srv.close();
        resolve({ near, reader });
      });
      let reader: ReturnType<typeof client>;
      srv.listen(0, '127.0.0.1', () => (reader = client((srv.address() as { port: number }).port)));
    });
    conn.secured(far.near);
    expect(raw.secure).toBe(true);
    void conn.delegate(conn.parse('PBSZ 0'));
    expect(await far.reader.reply()).toMatch(/^200 /);
    void conn.delegate(conn.parse('PROT P'));
    expect(await far.reader.reply()).toMatch(/^200 /);
    const errors: Error[] = [];
    raw.commandSocket.on('error', (e) => errors.push(e));
    far.near.emit('error', new Error('reset'));
    expect(errors.map((e) => e.message)).toEqual(['reset']);
    let ended = false;
    conn.connector = { connection: conn, socket: null, waitForConnection: () => Bluebird.reject(new Error('none')), end: () => (ended = true) };
    far.near.destroy();
    await new Promise((r) => far.near.once('close', r));
    expect(ended).toBe(true);
    c.sock.destroy();
  });
});

describe('startFtpSrv', () => {
  it('hands every socket to onSocket before the greeting, every connection to onConnection, logins to login(); adds no signal handler', async () => {
    const before = SIGNALS.map((sig) => process.listenerCount(sig));
    const seen: string[] = [];
    const srv = startFtpSrv(
      { url: 'ftp://127.0.0.1:0', pasv_url: '127.0.0.1', greeting: ['hi'], log: quiet() },
      {
        onSocket(sock, accept) {
          seen.push('socket');
          accept();
        },
        onConnection(conn) {
          seen.push(`connection ${conn instanceof ControlConnection}`);
          // ftp-srv's reader is gone (the service reads commands): one line a packet is enough here.
          conn.commandSocket.on('data', (d: Buffer) => void conn.delegate(conn.parse(d.toString().trim())));
        },
        async login(conn, username, password) {
          seen.push(`login ${username} ${password} ${conn instanceof ControlConnection}`);
          throw Object.assign(new Error('Login incorrect'), { code: 530 });
        },
      },
    );
    expect(SIGNALS.map((sig) => process.listenerCount(sig))).toEqual(before);
    await new Promise<void>((r) => srv.server.listen(0, '127.0.0.1', r));
    const c = client((srv.server.address() as { port: number }).port);
    expect(await c.reply()).toMatch(/^220-hi/);
    expect(await c.send('USER bob')).toMatch(/^331 /);
    expect(await c.send('PASS pw')).toMatch(/^530 Login incorrect/);
    expect(seen).toEqual(['socket', 'connection true', 'login bob pw true']);
    c.sock.destroy();
    await new Promise((r) => srv.server.close(r));
    srv.dispose();
  });
});
