import { Client, FTPError } from 'basic-ftp';
import { Readable, Writable } from 'node:stream';
import { request } from 'undici';

/** A basic-ftp client logged in to the suite's FTP URL. */
export async function ftpLogin(url: string, user: string, password: string, secure = false): Promise<Client> {
  const u = new URL(url);
  const c = new Client(10_000);
  await c.access({ host: u.hostname, port: Number(u.port), user, password, secure, secureOptions: { rejectUnauthorized: false } });
  return c;
}

/** Connects without logging in. */
export async function ftpConnect(url: string): Promise<Client> {
  const u = new URL(url);
  const c = new Client(10_000);
  await c.connect(u.hostname, Number(u.port));
  return c;
}

/** The FTP reply code a promise ended with (the success code, or the FTPError's). */
export async function replyCode(p: Promise<{ code: number }>): Promise<number> {
  try {
    return (await p).code;
  } catch (err) {
    if (err instanceof FTPError) return err.code;
    throw err;
  }
}

export function upload(c: Client, name: string, data: string | Buffer): Promise<{ code: number }> {
  return c.uploadFrom(Readable.from([Buffer.from(data)]), name);
}

export async function download(c: Client, name: string): Promise<string> {
  const chunks: Buffer[] = [];
  await c.downloadTo(
    new Writable({
      write(chunk: Buffer, _e, cb) {
        chunks.push(chunk);
        cb();
      },
    }),
    name,
  );
  return Buffer.concat(chunks).toString();
}

/** GET over HTTP with a Host header; returns status and body. */
export async function httpGet(base: string, host: string, path: string): Promise<{ status: number; body: string }> {
  const res = await request(`${base}${path}`, { headers: { host } });
  return { status: res.statusCode, body: await res.body.text() };
}

/** A bare control connection for what real clients refuse to send (NUL bytes, raw bytes); `startTls` after a 234 to AUTH TLS. */
export async function rawSession(url: string): Promise<{
  greeting: string;
  send(line: string | Buffer): Promise<string>;
  read(): Promise<string>;
  /** Starts TLS on the control connection (`options` for the client side, e.g. `maxVersion`); resolves with its socket. */
  startTls(options?: import('node:tls').ConnectionOptions): Promise<import('node:tls').TLSSocket>;
  close(): void;
  closed: Promise<void>;
}> {
  const u = new URL(url);
  const { connect } = await import('node:net');
  const tls = await import('node:tls');
  let sock: import('node:net').Socket = connect(Number(u.port), u.hostname);
  let buf = '';
  let waiter: ((reply: string) => void) | undefined;
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  const take = () => {
    // A complete reply ends with a line "ddd text" (RFC 959 §4.2).
    const m = /(^|\r\n)(\d{3}) [^\r\n]*\r\n/.exec(buf);
    if (m && waiter) {
      const end = m.index + m[0].length;
      const reply = buf.slice(0, end);
      buf = buf.slice(end);
      const w = waiter;
      waiter = undefined;
      w(reply);
    }
  };
  const onData = (d: Buffer) => {
    buf += d.toString('utf8');
    take();
  };
  sock.on('data', onData);
  sock.on('error', () => undefined);
  const next = () =>
    new Promise<string>((resolve) => {
      waiter = resolve;
      take();
    });
  const greeting = await next();
  return {
    greeting,
    send(line) {
      const p = next();
      sock.write(typeof line === 'string' ? `${line}\r\n` : Buffer.concat([line, Buffer.from('\r\n')]));
      return p;
    },
    read: next,
    async startTls(options) {
      sock.off('data', onData);
      // The host it connected to, as a real client names it: without it Node sends the SNI name "localhost", and a
      // data connection to the address (no SNI) cannot resume that session (OpenSSL 3.5, Node 24, checks the name).
      const secure = tls.connect({ socket: sock, host: u.hostname, rejectUnauthorized: false, ...options });
      secure.on('error', () => undefined);
      await new Promise((r) => secure.once('secureConnect', r));
      secure.on('data', onData);
      sock = secure;
      return secure;
    },
    close: () => sock.destroy(),
    closed,
  };
}
