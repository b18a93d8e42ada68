import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import type { Suite } from '../../src/main.ts';
import { startTestSuite, waitFor, type TestSuite, type TestSuiteOptions } from './suite.ts';

export interface SunkMessage {
  from: string;
  to: string[];
  raw: Buffer;
  /** True when the session had switched to TLS (STARTTLS). */
  secure: boolean;
}

export interface MailSink {
  port: number;
  url: string;
  messages: SunkMessage[];
  /** Set to answer RCPT for an address with this reply instead of 250 (e.g. `[550, '5.1.1 no such user']`). */
  rcptReply: Map<string, [number, string]>;
  /** Set to answer DATA with this reply instead of 250. */
  dataReply: [number, string] | undefined;
  close(): Promise<void>;
}

/** A real smtp-server on 127.0.0.1 (port 0 unless given) that keeps what it receives: the outbound sink of the tests. */
export async function startSink(port = 0, opts: { starttls?: boolean } = {}): Promise<MailSink> {
  const messages: SunkMessage[] = [];
  const rcptReply = new Map<string, [number, string]>();
  const sink: MailSink = {
    port: 0,
    url: '',
    messages,
    rcptReply,
    dataReply: undefined,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  const server = new SMTPServer({
    authOptional: true,
    // STARTTLS (when asked for) uses smtp-server's built-in test certificate: fine for a loopback sink.
    disabledCommands: opts.starttls ? ['AUTH'] : ['AUTH', 'STARTTLS'],
    // Replies set by a test carry their own enhanced code.
    hideENHANCEDSTATUSCODES: true,
    logger: false,
    closeTimeout: 200,
    onRcptTo(address, _session, done) {
      const r = rcptReply.get(address.address);
      if (r) return done(Object.assign(new Error(r[1]), { responseCode: r[0] }));
      done();
    },
    onData(stream, session, done) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        if (sink.dataReply) return done(Object.assign(new Error(sink.dataReply[1]), { responseCode: sink.dataReply[0] }));
        messages.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks),
          secure: session.secure,
        });
        done();
      });
    },
  });
  // A client killed mid-session (the kill -9 tests) resets its connection: not the sink's fault.
  server.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  sink.port = (server.server.address() as AddressInfo).port;
  sink.url = `smtp://127.0.0.1:${sink.port}`;
  return sink;
}

export { freePort } from '../../src/lib/listen.ts';

/**
 * A raw SMTP client over a socket: send bytes, read replies. For what
 * nodemailer would never send (smuggling sequences, pipelined garbage).
 */
export class RawSmtp {
  private buf = '';
  private waiters: Array<() => void> = [];
  /** The server's first reply (220 greeting, or a 421 refusal). */
  greeting = '';
  /** Resolves when the connection has closed (after QUIT: once the server has closed its side). */
  readonly closed: Promise<void>;
  private constructor(private readonly sock: net.Socket) {
    this.closed = new Promise((resolve) => sock.once('close', () => resolve()));
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      this.buf += d;
      for (const w of this.waiters.splice(0)) w();
    });
    sock.on('close', () => {
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static async connect(port: number): Promise<RawSmtp> {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    const c = new RawSmtp(sock);
    c.greeting = await c.reply();
    return c;
  }

  /** Connects and sends `early` at once, without waiting for the greeting. */
  static async connectEarly(port: number, early: string): Promise<RawSmtp> {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    const c = new RawSmtp(sock);
    sock.write(early);
    c.greeting = await c.reply();
    return c;
  }

  send(data: string | Buffer): void {
    this.sock.write(data);
  }

  /** Reads one complete reply (the last line has a space after the code). */
  async reply(timeoutMs = 5_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = /^(?:\d{3}-[^\r\n]*\r\n)*\d{3}(?: [^\r\n]*)?\r\n/.exec(this.buf);
      if (m) {
        this.buf = this.buf.slice(m[0].length);
        return m[0].trimEnd();
      }
      if (this.sock.destroyed || Date.now() > deadline) throw new Error(`no reply (have ${JSON.stringify(this.buf)})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(deadline - Date.now(), 1));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Sends a command line and returns its reply. */
  async cmd(line: string): Promise<string> {
    this.send(`${line}\r\n`);
    return this.reply();
  }

  close(): void {
    this.sock.destroy();
  }
}

/**
 * The reply of the SMTP listener on `port` to RCPT TO:<`address`>, after
 * EHLO client.test and MAIL FROM:<s@elsewhere.test>; the session then ends
 * with QUIT.
 */
export async function replyToRcpt(port: number, address: string): Promise<string> {
  const c = await RawSmtp.connect(port);
  await c.cmd('EHLO client.test');
  await c.cmd('MAIL FROM:<s@elsewhere.test>');
  const r = await c.cmd(`RCPT TO:<${address}>`);
  await c.cmd('QUIT');
  c.close();
  return r;
}

/** A suite whose SMTP service relays to a {@link MailSink} ({@link startRelaySuite}). */
export interface RelaySuite {
  sink: MailSink;
  t: TestSuite;
  /** The suite's SMTP port. */
  port: number;
}

/**
 * Starts a sink, then a suite whose SMTP listens on loopback and relays all
 * outbound mail to it; `smtp` adds to the main config's smtp section, `main`
 * to the rest. A suite that fails to start leaves no sink behind.
 * {@link stopRelaySuite} stops both.
 */
export async function startRelaySuite(opts: TestSuiteOptions & { smtp?: Record<string, unknown> }): Promise<RelaySuite> {
  const { smtp, ...rest } = opts;
  const sink = await startSink();
  try {
    const t = await startTestSuite({ ...rest, main: { ...rest.main, smtp: { listen: ['127.0.0.1:0'], relay: sink.url, ...smtp } } });
    return { sink, t, port: smtpPort(t.suite) };
  } catch (err) {
    await sink.close();
    throw err;
  }
}

/** Stops what {@link startRelaySuite} started (either may be missing: the start failed), the suite first. */
export async function stopRelaySuite(t: TestSuite | undefined, sink: MailSink | undefined): Promise<void> {
  await t?.stop();
  await sink?.close();
}

/** The port of the suite's first SMTP listener. */
export function smtpPort(suite: Suite): number {
  return Number(new URL(suite.urls.smtp![0]!).port);
}

/** Waits until the suite's outbound queue is empty (every message delivered or bounced). */
export async function queueDrained(suite: Suite, ms = 5_000): Promise<void> {
  await waitFor(() => suite.state.mailQueue.count() === 0, ms, 'an empty mail queue');
}

/** True when swaks (Debian package swaks) is installed. */
export const haveSwaks = existsSync('/usr/bin/swaks');

/** Runs swaks against 127.0.0.1:`port` with `args`; resolves with its exit code and transcript (never rejects). */
export function swaks(port: number, ...args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('swaks', ['--server', `127.0.0.1:${port}`, '--helo', 'client.test', '--timeout', '20', ...args], { encoding: 'utf8', timeout: 30_000 }, (err, out, errOut) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out: out + errOut });
    });
  });
}
