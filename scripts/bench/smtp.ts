/**
 * SMTP benchmark: 1 KB messages from 20 concurrent sessions, against
 *  - a bare smtp-server that accepts and discards (the reference sink),
 *  - makewaves (250 only after fsync of spool file and folder + state row),
 *    measuring the accept rate and the end-to-end forwarding rate to a
 *    bare sink used as `smtp.relay`, with the inbound checks and ARC
 *    sealing off, and on (SPF, DKIM, DMARC of a DKIM-signed message whose
 *    records a DNS server on loopback serves, then an ARC seal): the
 *    difference is the checks' cost per message,
 *  - a bare forwarder (smtp-server answering at once, handing each message
 *    to the same client pool; nothing stored): the ceiling of the libraries,
 * each with a new connection per message and with reused connections,
 * plus per-connection latency (connect → greeting, and a whole
 * one-message session) measured one at a time.
 *
 * Servers run in child processes, the client in this one, so the client
 * does not share an event loop with the server it measures.
 *
 *   node --import tsx scripts/bench/smtp.ts [--messages 2000] [--sessions 20]
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);
/** A 1 KiB message: three header lines, then lines of 78 characters. */
let BODY = (() => {
  let m = 'From: <bench@client.test>\r\nTo: <info@bench.test>\r\nSubject: bench\r\n\r\n';
  while (m.length + 80 <= 1024) m += `${'x'.repeat(78)}\r\n`;
  return m + `${'y'.repeat(1024 - m.length - 2)}\r\n`;
})();

/** The client's DKIM key (RSA 2048, `s=bench`), shared with the DNS server of the checks-on suite through the environment. */
function benchKey(): { pem: string; record: string } {
  if (!process.env.BENCH_DKIM_KEY) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    process.env.BENCH_DKIM_KEY = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  }
  const pem = process.env.BENCH_DKIM_KEY;
  const p = createPublicKey(pem).export({ type: 'spki', format: 'der' }).toString('base64');
  return { pem, record: `v=DKIM1; k=rsa; p=${p}` };
}

// ---------------------------------------------------------------- servers

/** A bare smtp-server's settings: no AUTH, no TLS, no reverse DNS, no logs. */
const BARE_OPTIONS = {
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'] as string[],
  disableReverseLookup: true,
  logger: false,
  size: 10 * 1024 * 1024,
  maxClients: 10_000,
};

async function serveBare(): Promise<void> {
  const { SMTPServer } = await import('smtp-server');
  let count = 0;
  let reported = -1;
  const server = new SMTPServer({
    ...BARE_OPTIONS,
    onData(stream, _s, done) {
      stream.on('data', () => undefined);
      stream.on('end', () => {
        count++;
        done();
      });
    },
  });
  server.on('error', () => undefined);
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`port ${(server.server.address() as net.AddressInfo).port}\n`);
  });
  setInterval(() => {
    if (count !== reported) process.stdout.write(`count ${(reported = count)}\n`);
  }, 20);
}

/**
 * The least a forwarder built from the same libraries can do: a bare
 * smtp-server that answers 250 at once (nothing stored, no routing, no
 * state) and hands each message to a pool of reused client sessions to
 * the relay, as many as the suite uses. Not safe; it shows the ceiling of
 * the libraries on this machine, against which the suite's durability
 * costs are read.
 */
async function serveForwarder(relay: string): Promise<void> {
  const { SMTPServer } = await import('smtp-server');
  const { RelayDeliverer } = await import('../../src/mail/deliver.ts');
  const { Readable } = await import('node:stream');
  const deliverer = new RelayDeliverer({ url: relay, hostname: 'forwarder.bench.test', maxConnections: 20 });
  const server = new SMTPServer({
    ...BARE_OPTIONS,
    onData(stream, session, done) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        done();
        const body = Buffer.concat(chunks);
        void deliverer.deliver({
          id: 'x',
          sender: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          recipients: ['target@remote.test'],
          open: () => Readable.from([body]),
        });
      });
    },
  });
  server.on('error', () => undefined);
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`port ${(server.server.address() as net.AddressInfo).port}\n`);
  });
}

async function serveSuite(relay: string, checks: boolean): Promise<void> {
  const { writeConfig } = await import('../../test/helpers/suite.ts');
  const { startSuite } = await import('../../src/main.ts');
  const { createLogger } = await import('../../src/core/log.ts');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-bench-'));
  let dns: { servers: string[]; timeout: number } | undefined;
  if (checks) {
    // The sender's records on a DNS server on loopback (a real UDP socket), as a local resolver would answer them.
    const { startDnsServer } = await import('../../test/helpers/dnsserver.ts');
    const server = await startDnsServer();
    const record = benchKey().record;
    const txt: string[] = [];
    for (let i = 0; i < record.length; i += 255) txt.push(record.slice(i, i + 255));
    server.zone.set('client.test', { txt: [['v=spf1 ip4:127.0.0.1 -all']] });
    server.zone.set('_dmarc.client.test', { txt: [['v=DMARC1; p=reject']] });
    server.zone.set('bench._domainkey.client.test', { txt: [txt] });
    dns = { servers: [`127.0.0.1:${server.port}`], timeout: 2 };
  }
  const { configDir } = writeConfig(dir, {
    main: {
      ...(dns ? { dns } : {}),
      smtp: { listen: ['127.0.0.1:0'], relay, maxConnections: 10_000, maxConnectionsPerIp: 10_000, checks: { enabled: checks, arcSeal: checks } },
    },
    tenants: { 'bench.test': { domains: ['bench.test'], mail: { forward: { info: 'target@remote.test' } } } },
  });
  const suite = await startSuite({ configDir, watch: false, log: createLogger({ level: 'warn' }) });
  process.stdout.write(`port ${new URL(suite.urls.smtp![0]!).port}\n`);
  const stop = () => void suite.stop(1000).then(() => {
    rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  });
  process.on('SIGTERM', stop);
}

interface Server {
  proc: ChildProcess;
  port: number;
  count(): number;
  waitCount(n: number, ms: number): Promise<number>;
  stop(): Promise<void>;
}

function startServer(args: string[]): Promise<Server> {
  return new Promise((resolve, reject) => {
    // BENCH_PROF=suite (or bare) writes a V8 CPU profile of that server to /tmp/bench-prof.
    const prof = process.env.BENCH_PROF && args[1] === process.env.BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir', '/tmp/bench-prof'] : [];
    const proc = spawn(process.execPath, [...prof, '--import', 'tsx', SELF, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let count = 0;
    let buf = '';
    const waiters: Array<() => void> = [];
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = /^(port|count) (\d+)$/.exec(line);
        if (m?.[1] === 'port') resolve(server(Number(m[2])));
        if (m?.[1] === 'count') {
          count = Number(m[2]);
          for (const w of waiters.splice(0)) w();
        }
      }
    });
    proc.once('exit', (code) => reject(new Error(`server ${args.join(' ')} exited with ${code}`)));
    const server = (port: number): Server => ({
      proc,
      port,
      count: () => count,
      async waitCount(n, ms) {
        const deadline = Date.now() + ms;
        while (count < n && Date.now() < deadline) {
          await new Promise<void>((r) => {
            const t = setTimeout(r, 100);
            waiters.push(() => {
              clearTimeout(t);
              r();
            });
          });
        }
        return count;
      },
      stop: () =>
        new Promise((r) => {
          proc.removeAllListeners('exit');
          proc.once('exit', () => r());
          proc.kill('SIGTERM');
        }),
    });
  });
}

// ---------------------------------------------------------------- client

class Conn {
  private buf = '';
  private wait: (() => void) | undefined;
  constructor(private readonly sock: net.Socket) {
    sock.setNoDelay(true);
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      this.buf += d;
      this.wait?.();
    });
    sock.on('error', () => this.wait?.());
    sock.on('close', () => this.wait?.());
  }
  static open(port: number): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => resolve(new Conn(s)));
      s.once('error', reject);
    });
  }
  /** Reads `n` complete replies; throws on a non-2xx/3xx one. */
  async replies(n: number): Promise<void> {
    let got = 0;
    for (;;) {
      const m = /^(?:\d{3}-[^\r\n]*\r\n)*(\d{3})[^\r\n]*\r\n/.exec(this.buf);
      if (m) {
        this.buf = this.buf.slice(m[0].length);
        if (Number(m[1]) >= 400) throw new Error(`server said ${m[0].trim()}`);
        if (++got === n) return;
        continue;
      }
      if (this.sock.destroyed) throw new Error('connection closed');
      await new Promise<void>((r) => (this.wait = r));
      this.wait = undefined;
    }
  }
  write(s: string): void {
    this.sock.write(s);
  }
  async message(): Promise<void> {
    // PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write; the body after 354.
    this.write('MAIL FROM:<bench@client.test>\r\nRCPT TO:<info@bench.test>\r\nDATA\r\n');
    await this.replies(3);
    this.write(`${BODY}.\r\n`);
    await this.replies(1);
  }
  close(): void {
    this.sock.destroy();
  }
}

async function session(port: number, messages: number): Promise<void> {
  const c = await Conn.open(port);
  await c.replies(1);
  c.write('EHLO client.test\r\n');
  await c.replies(1);
  for (let i = 0; i < messages; i++) await c.message();
  c.write('QUIT\r\n');
  await c.replies(1);
  c.close();
}

/** Sends `total` messages from `sessions` concurrent sessions; returns messages/s. */
async function load(port: number, total: number, sessions: number, reuse: boolean): Promise<{ rate: number; ms: number }> {
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: sessions }, async () => {
      if (reuse) {
        const mine = Math.floor(total / sessions) + (next++ < total % sessions ? 1 : 0);
        await session(port, mine);
      } else {
        while (next < total) {
          next++;
          await session(port, 1);
        }
      }
    }),
  );
  const ms = performance.now() - t0;
  return { rate: (total / ms) * 1000, ms };
}

async function latency(port: number, n: number): Promise<{ greeting: number; session: number }> {
  const g: number[] = [];
  const s: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const c = await Conn.open(port);
    await c.replies(1);
    g.push(performance.now() - t0);
    c.write('EHLO client.test\r\n');
    await c.replies(1);
    await c.message();
    c.write('QUIT\r\n');
    await c.replies(1);
    s.push(performance.now() - t0);
    c.close();
  }
  const median = (a: number[]) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
  return { greeting: median(g), session: median(s) };
}

// ---------------------------------------------------------------- main

function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
}

async function main(): Promise<void> {
  const total = arg('messages', 2000);
  const fresh = arg('fresh', 400);
  const sessions = arg('sessions', 20);
  const rows: string[][] = [];
  const fmt = (n: number) => n.toFixed(0);

  const bare = await startServer(['--serve', 'bare']);
  const relay = await startServer(['--serve', 'bare']);
  // The message is DKIM-signed by client.test, so the checks-on suite verifies a real signature.
  const { dkimSign } = await import('mailauth');
  BODY = (await dkimSign(BODY, { signatureData: [{ signingDomain: 'client.test', selector: 'bench', privateKey: benchKey().pem }] } as never)).signatures + BODY;
  const suite = await startServer(['--serve', 'suite', `smtp://127.0.0.1:${relay.port}`]);
  const checked = await startServer(['--serve', 'suite-checks', `smtp://127.0.0.1:${relay.port}`]);
  const forwarder = await startServer(['--serve', 'forwarder', `smtp://127.0.0.1:${relay.port}`]);
  const servers = [suite, checked, forwarder];
  try {
    // Warm-up: JIT and the suite's first writes.
    await load(bare.port, 200, sessions, true);
    for (const srv of servers) {
      const before = relay.count();
      await load(srv.port, 200, sessions, true);
      await relay.waitCount(before + 200, 30_000);
    }

    /** Sends n messages to srv; its accept rate, and the rate at which they reached the relay. */
    const forwarded = async (srv: Server, n: number, reuse: boolean) => {
      const before = relay.count();
      const t0 = performance.now();
      const s = await load(srv.port, n, sessions, reuse);
      const got = await relay.waitCount(before + n, 120_000);
      return { accept: s.rate, e2e: ((got - before) / (performance.now() - t0)) * 1000 };
    };
    for (const reuse of [true, false]) {
      const n = reuse ? total : fresh;
      const mode = reuse ? 'reused connections' : 'new connection per message';
      const b = await load(bare.port, n, sessions, reuse);
      const s = await forwarded(suite, n, reuse);
      const c = await forwarded(checked, n, reuse);
      const f = await forwarded(forwarder, n, reuse);
      // The server is one event loop: the extra wall time per message at full load is the checks' CPU cost.
      const cost = 1000 / c.e2e - 1000 / s.e2e;
      rows.push([mode, `${sessions}`, fmt(b.rate), fmt(s.accept), fmt(s.e2e), fmt(c.e2e), cost.toFixed(2), (s.e2e / b.rate).toFixed(2), fmt(f.e2e), (f.e2e / b.rate).toFixed(2)]);
    }
    const lb = await latency(bare.port, 15);
    const ls = await latency(suite.port, 15);

    const head = [
      'mode (1 KB messages)',
      'sessions',
      'bare smtp-server accept msg/s',
      'makewaves durable accept msg/s',
      'makewaves forwarded end to end msg/s (checks off)',
      'with SPF+DKIM+DMARC checks and ARC seal msg/s',
      'checks cost ms/msg',
      'e2e (off) / bare',
      'bare forwarder (nothing stored) msg/s',
      'bare forwarder / bare',
    ];
    const table = [head, ...rows];
    const widths = head.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
    const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
    process.stdout.write(`${line(head)}\n|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|\n${rows.map(line).join('\n')}\n\n`);
    process.stdout.write(`per-connection latency, one at a time (median of 15):\n`);
    process.stdout.write(`  bare smtp-server: connect → 220 ${lb.greeting.toFixed(1)} ms, whole one-message session ${lb.session.toFixed(1)} ms\n`);
    process.stdout.write(`  makewaves:        connect → 220 ${ls.greeting.toFixed(1)} ms, whole one-message session ${ls.session.toFixed(1)} ms\n`);
    process.stdout.write(`  (both keep smtp-server's 100 ms greeting pause)\n`);
    if (!hasCommand('smtp-source')) process.stdout.write(`Postfix smtp-source/smtp-sink not installed: not compared in this run.\n`);
  } finally {
    await forwarder.stop();
    await checked.stop();
    await suite.stop();
    await relay.stop();
    await bare.stop();
  }
}

const serveAt = process.argv.indexOf('--serve');
if (serveAt !== -1) {
  const kind = process.argv[serveAt + 1];
  await (kind === 'bare' ? serveBare() : kind === 'forwarder' ? serveForwarder(process.argv[serveAt + 2]!) : serveSuite(process.argv[serveAt + 2]!, kind === 'suite-checks'));
} else {
  await main();
}
