/**
 * SMTP benchmark: 1 KB messages from 20 concurrent sessions, against
 *  - a bare smtp-server that accepts and discards (the reference sink),
 *  - makewaves (250 only after fsync of spool file and folder + state row),
 *    measuring the accept rate and the end-to-end forwarding rate to a
 *    sink used as `smtp.relay` (Postfix's smtp-sink when installed, else a
 *    bare smtp-server), three times: the inbound checks and ARC sealing
 *    off; the checks on (SPF, DKIM, DMARC of a DKIM-signed message whose
 *    records a DNS server on loopback serves); the checks and an ARC seal:
 *    the differences are the checks' and the seal's cost per message,
 *  - a bare forwarder (smtp-server answering at once, handing each message
 *    to the same client pool; nothing stored): the ceiling of the libraries,
 * each with a new connection per message and with reused connections,
 * plus per-connection latency (connect → greeting, and a whole
 * one-message session) measured one at a time.
 *
 * Then Postfix as a forwarder (Debian `postfix`): a throwaway instance of
 * its own (config and queue in a temporary folder, smtpd on a free
 * loopback port, `virtual_alias_maps` sending info@bench.test on to the
 * smtp-sink as `relayhost`), loaded with smtp-source (20 sessions, reused
 * connections, the same DKIM-signed message) beside makewaves with every
 * check and the ARC seal on, and off; delivered messages are counted at
 * the sink. `--rounds` rounds, each server once per round; medians, and
 * the median of the ratios within a round.
 *
 * Servers run in child processes, the client in this one, so the client
 * does not share an event loop with the server it measures.
 *
 *   node --import tsx scripts/bench/smtp.ts [--messages 2000] [--sessions 20] [--postfix-messages 3000] [--rounds 3] [--postfix-only] [--timeline]
 *
 * --postfix-only skips the first table (the suite's own load client);
 * --timeline runs the suites at log level debug and prints, per suite, the
 * median time from MAIL FROM to each stage of a message (the "message
 * timeline" debug line: checks, seal, spool, state, next hop, reply).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, median, waitTcp } from './lib.ts';

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

/**
 * The sender's records (SPF, DKIM key, DMARC p=reject of client.test) on a
 * DNS server on loopback (a real UDP socket), as a local resolver would
 * answer them. It runs in the bench's own process, not in a server's.
 */
async function startBenchDns(): Promise<{ port: number; close(): Promise<void> }> {
  const { startDnsServer } = await import('../../test/helpers/dnsserver.ts');
  const server = await startDnsServer();
  const record = benchKey().record;
  const txt: string[] = [];
  for (let i = 0; i < record.length; i += 255) txt.push(record.slice(i, i + 255));
  server.zone.set('client.test', { txt: [['v=spf1 ip4:127.0.0.1 -all']] });
  server.zone.set('_dmarc.client.test', { txt: [['v=DMARC1; p=reject']] });
  server.zone.set('bench._domainkey.client.test', { txt: [txt] });
  return server;
}

/** What a suite checks: nothing, the inbound checks, or the checks and an ARC seal on what it forwards. */
type Checks = 'off' | 'checks' | 'arc';

async function serveSuite(relay: string, checks: Checks): Promise<void> {
  const { writeConfig } = await import('../../test/helpers/suite.ts');
  const { startSuite } = await import('../../src/main.ts');
  const { createLogger } = await import('../../src/core/log.ts');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-bench-'));
  const dns = checks !== 'off' ? { servers: [`127.0.0.1:${process.env.BENCH_DNS_PORT}`], timeout: 2 } : undefined;
  const { configDir } = writeConfig(dir, {
    main: {
      ...(dns ? { dns } : {}),
      smtp: {
        listen: ['127.0.0.1:0'],
        relay,
        maxConnections: 10_000,
        maxConnectionsPerIp: 10_000,
        checks: { enabled: checks !== 'off', arcSeal: checks === 'arc' },
      },
    },
    tenants: { 'bench.test': { domains: ['bench.test'], mail: { forward: { info: 'target@remote.test' } } } },
  });
  // --timeline: every debug line to a file the bench reads at the end (only the "message timeline" ones matter).
  const timeline = process.env.BENCH_TIMELINE;
  const pino = (await import('pino')).default;
  const log = timeline ? createLogger({ level: 'debug', destination: pino.destination({ dest: path.join(timeline, `${checks}.log`), sync: false }) }) : createLogger({ level: 'warn' });
  const suite = await startSuite({ configDir, watch: false, log });
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

/**
 * A child process that says a running count of messages received and its
 * port (or listens on `listening`, a port known beforehand): `onLine` turns
 * each line of its output into either.
 */
function watch(proc: ChildProcess, separator: RegExp, onLine: (line: string) => { port?: number; count?: number }, listening?: Promise<number>): Promise<Server> {
  return new Promise((resolve, reject) => {
    listening?.then((port) => resolve(server(port)), reject);
    let count = 0;
    let buf = '';
    const waiters: Array<() => void> = [];
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      const lines = buf.split(separator);
      buf = lines.pop()!;
      for (const line of lines) {
        const got = onLine(line);
        if (got.port !== undefined) resolve(server(got.port));
        if (got.count !== undefined && got.count !== count) {
          count = got.count;
          for (const w of waiters.splice(0)) w();
        }
      }
    });
    proc.once('exit', (code) => reject(new Error(`${proc.spawnargs.join(' ')} exited with ${code}`)));
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
          if (proc.exitCode !== null || proc.signalCode !== null) return r();
          proc.removeAllListeners('exit');
          proc.once('exit', () => r());
          proc.kill('SIGTERM');
        }),
    });
  });
}

function startServer(args: string[]): Promise<Server> {
  // BENCH_PROF=suite (or bare, suite-checks, suite-arc, forwarder) writes a V8 CPU profile of that server to /tmp/bench-prof.
  const prof = process.env.BENCH_PROF && args[1] === process.env.BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir', '/tmp/bench-prof'] : [];
  const proc = spawn(process.execPath, [...prof, '--import', 'tsx', SELF, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  return watch(proc, /\n/, (line) => {
    const m = /^(port|count) (\d+)$/.exec(line);
    return m?.[1] === 'port' ? { port: Number(m[2]) } : m?.[1] === 'count' ? { count: Number(m[2]) } : {};
  });
}

/**
 * Postfix's smtp-sink on a free port, as the relay every forwarder hands
 * its mail to: C, one process, so it takes less of the machine than a Node
 * sink. `-c` prints a running count (`sess=… quit=… mesg=N`, CR-separated)
 * after each message; as root it needs a user to run as (`-u nobody`).
 */
async function startSmtpSink(): Promise<Server> {
  const port = await freePort();
  // -t: the forwarders keep their connections to it open between the bench's parts (a read timeout warning each otherwise).
  const proc = spawn('smtp-sink', [...(process.getuid?.() === 0 ? ['-u', 'nobody'] : []), '-t', '3600', '-c', `127.0.0.1:${port}`, '1000'], { stdio: ['ignore', 'pipe', 'inherit'] });
  return watch(
    proc,
    /[\r\n]/,
    (line) => {
      const m = /mesg=(\d+)/.exec(line);
      return m ? { count: Number(m[1]) } : {};
    },
    waitTcp(port, 10_000).then(() => port),
  );
}

/** The services a forwarding Postfix needs (Debian's master.cf without chroot: the queue is in a temporary folder). */
const POSTFIX_SERVICES = `
pickup    unix  n  -  n  60     1  pickup
cleanup   unix  n  -  n  -      0  cleanup
qmgr      unix  n  -  n  300    1  qmgr
rewrite   unix  -  -  n  -      -  trivial-rewrite
bounce    unix  -  -  n  -      0  bounce
defer     unix  -  -  n  -      0  bounce
trace     unix  -  -  n  -      0  bounce
verify    unix  -  -  n  -      1  verify
flush     unix  n  -  n  1000?  0  flush
proxymap  unix  -  -  n  -      -  proxymap
smtp      unix  -  -  n  -      -  smtp
relay     unix  -  -  n  -      -  smtp
showq     unix  n  -  n  -      -  showq
error     unix  -  -  n  -      -  error
retry     unix  -  -  n  -      -  error
discard   unix  -  -  n  -      -  discard
local     unix  -  n  n  -      -  local
anvil     unix  -  -  n  -      1  anvil
scache    unix  -  -  n  -      1  scache
postlog   unix-dgram n - n  -   1  postlogd
`;

/**
 * A throwaway Postfix forwarder: its own config_directory and
 * queue_directory under a temporary folder, smtpd on a free loopback port,
 * info@bench.test sent on to target@remote.test (`virtual_alias_maps`,
 * texthash) through `relayhost` [127.0.0.1]:sinkPort. Otherwise Postfix's
 * defaults (queue files fsynced, in_flow_delay, connection cache to the
 * relayhost). Its log goes to a file in the folder, which a failure quotes.
 * Needs root (as Postfix does to start) and the `postfix` user of the Debian package.
 */
async function startPostfix(sinkPort: number): Promise<{ port: number; pid: number; stop(): Promise<void> }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-bench-postfix-'));
  chmodSync(dir, 0o755); // the postfix user goes through it to its queue
  const etc = path.join(dir, 'etc');
  mkdirSync(etc);
  mkdirSync(path.join(dir, 'queue'));
  mkdirSync(path.join(dir, 'data'));
  const owner = /^postfix:[^:]*:(\d+):(\d+):/m.exec(readFileSync('/etc/passwd', 'utf8'));
  if (owner) chownSync(path.join(dir, 'data'), Number(owner[1]), Number(owner[2]));
  const port = await freePort();
  writeFileSync(
    path.join(etc, 'main.cf'),
    [
      'compatibility_level = 3.6',
      `queue_directory = ${dir}/queue`,
      `data_directory = ${dir}/data`,
      'mail_owner = postfix',
      'setgid_group = postdrop',
      'myhostname = postfix.bench.test',
      'mydestination =',
      'inet_interfaces = 127.0.0.1',
      'inet_protocols = ipv4',
      'mynetworks = 127.0.0.0/8',
      'virtual_alias_domains = bench.test',
      `virtual_alias_maps = texthash:${etc}/virtual`,
      `relayhost = [127.0.0.1]:${sinkPort}`,
      'smtpd_relay_restrictions = permit_mynetworks defer_unauth_destination',
      'alias_maps =',
      'alias_database =',
      'local_recipient_maps =',
      `maillog_file_prefixes = ${dir}`,
      `maillog_file = ${dir}/maillog`,
      'biff = no',
      '',
    ].join('\n'),
  );
  writeFileSync(path.join(etc, 'master.cf'), `127.0.0.1:${port} inet  n  -  n  -  -  smtpd${POSTFIX_SERVICES}`);
  writeFileSync(path.join(etc, 'virtual'), 'info@bench.test target@remote.test\n');
  const log = () => {
    try {
      return readFileSync(path.join(dir, 'maillog'), 'utf8').split('\n').slice(-5).join('\n');
    } catch {
      return '(no log)';
    }
  };
  const postfix = (verb: string) => spawnSync('postfix', ['-c', etc, verb], { encoding: 'utf8' });
  const masterPid = () => {
    try {
      return Number(readFileSync(path.join(dir, 'queue/pid/master.pid'), 'utf8').trim()) || undefined;
    } catch {
      return undefined;
    }
  };
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
    } catch {
      return false;
    }
  };
  const stop = async () => {
    const pid = masterPid();
    postfix('stop');
    // postfix stop signals the master, which ends its children; wait for it, then make sure.
    const deadline = Date.now() + 10_000;
    while (pid !== undefined && alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  const started = postfix('start');
  if (started.status !== 0) {
    await stop();
    throw new Error(`postfix -c ${etc} start failed (${started.status}): ${started.stderr.trim()} ${log()}`);
  }
  try {
    await waitTcp(port, 20_000);
  } catch (err) {
    const text = log();
    await stop();
    throw new Error(`${(err as Error).message}; Postfix's log: ${text}`);
  }
  return { port, pid: masterPid() ?? 0, stop };
}

/**
 * CPU time (ms) a process tree has used: the process and the children it
 * has reaped (utime, stime, cutime, cstime of /proc/PID/stat), plus its
 * children still running. Postfix's master starts and reaps its daemons
 * (smtpd, cleanup, qmgr, smtp…); the suite has its handler launcher.
 */
function cpuTreeMs(pid: number): number {
  const own = (p: number, reaped: boolean) => {
    try {
      const f = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return ((Number(f[11]) + Number(f[12]) + (reaped ? Number(f[13]) + Number(f[14]) : 0)) * 1000) / 100; // USER_HZ
    } catch {
      return 0; // gone meanwhile: its time is in its parent's cutime once reaped
    }
  };
  let total = own(pid, true);
  try {
    for (const kid of execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).split('\n').filter(Boolean)) total += own(Number(kid), true);
  } catch {
    // no children
  }
  return total;
}

/** CPU time (ms) of a process's main thread alone (/proc/PID/task/PID/stat): for the suite, its event loop. */
function mainThreadMs(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
  } catch {
    return NaN;
  }
}

/**
 * Loads a forwarder with Postfix's smtp-source (`sessions` sessions, reused
 * connections, the message in `file`); returns messages/s, from the start
 * to the moment the sink has them all.
 */
async function sourceLoad(port: number, sink: Server, file: string, n: number, sessions: number, pid?: number): Promise<{ rate: number; cpuMs: number; loopMs: number }> {
  const before = sink.count();
  const cpu0 = pid ? cpuTreeMs(pid) : NaN;
  const loop0 = pid ? mainThreadMs(pid) : NaN;
  const t0 = performance.now();
  const args = ['-s', String(sessions), '-m', String(n), '-d', '-F', file, '-M', 'client.test', '-f', 'bench@client.test', '-t', 'info@bench.test', `127.0.0.1:${port}`];
  const r = await new Promise<{ code: number | null; err: string }>((resolve) => {
    const p = spawn('smtp-source', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr!.on('data', (d) => (err += d));
    p.on('exit', (code) => resolve({ code, err }));
  });
  if (r.code !== 0) throw new Error(`smtp-source ${args.join(' ')} exited ${r.code}: ${r.err.trim()}`);
  const got = await sink.waitCount(before + n, 180_000);
  if (got < before + n) throw new Error(`only ${got - before} of ${n} messages reached the sink`);
  return { rate: (n / (performance.now() - t0)) * 1000, cpuMs: pid ? (cpuTreeMs(pid) - cpu0) / n : NaN, loopMs: pid ? (mainThreadMs(pid) - loop0) / n : NaN };
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

/** Stages of the "message timeline" debug line, in the order a message reaches them. */
const STAGES = ['data', 'received', 'check-start', 'check-dns', 'check-end', 'checked', 'scored', 'sealed', 'spool-group', 'spool-written', 'spooled', 'stored', 'relaying', 'relayed', 'answered'];

/** Per stage, the median and 90th percentile of the milliseconds from MAIL FROM to it, over the timeline lines of a suite's log. */
function timelineRows(name: string, file: string): string[][] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const lines = text.split('\n').filter((l) => l.includes('"message timeline"')).map((l) => (JSON.parse(l) as { ms: Record<string, number> }).ms);
  const pct = (a: number[], q: number) => a.sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(a.length * q))]!;
  return STAGES.filter((st) => lines.some((m) => m[st] !== undefined)).map((st) => {
    const v = lines.flatMap((m) => (m[st] === undefined ? [] : [m[st]]));
    return [name, st, String(v.length), pct(v, 0.5).toFixed(2), pct(v, 0.9).toFixed(2)];
  });
}

function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  process.stdout.write(`${line(rows[0]!)}\n|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|\n${rows.slice(1).map(line).join('\n')}\n\n`);
}

async function main(): Promise<void> {
  const total = arg('messages', 2000);
  const fresh = arg('fresh', 400);
  const sessions = arg('sessions', 20);
  const pfMessages = arg('postfix-messages', 3000);
  const rounds = arg('rounds', 3);
  const postfixOnly = process.argv.includes('--postfix-only');
  const timelineDir = process.argv.includes('--timeline') ? mkdtempSync(path.join(os.tmpdir(), 'makewaves-bench-timeline-')) : undefined;
  if (timelineDir) process.env.BENCH_TIMELINE = timelineDir;
  const rows: string[][] = [];
  const fmt = (n: number) => n.toFixed(0);
  const postfixTools = hasCommand('postfix') && hasCommand('smtp-source') && hasCommand('smtp-sink');
  const isRoot = process.getuid?.() === 0;

  // The message is DKIM-signed by client.test, so the suites with checks verify a real signature.
  const { dkimSign } = await import('mailauth');
  BODY = (await dkimSign(BODY, { signatureData: [{ signingDomain: 'client.test', selector: 'bench', privateKey: benchKey().pem }] } as never)).signatures + BODY;
  const dns = await startBenchDns();
  process.env.BENCH_DNS_PORT = String(dns.port);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'makewaves-bench-smtp-'));
  // smtp-source sends the file's lines with CRLF after each.
  const messageFile = path.join(tmp, 'message.txt');
  writeFileSync(messageFile, BODY.replace(/\r\n/g, '\n'));

  const bare = await startServer(['--serve', 'bare']);
  const relay = hasCommand('smtp-sink') ? await startSmtpSink() : await startServer(['--serve', 'bare']);
  const to = `smtp://127.0.0.1:${relay.port}`;
  const suite = await startServer(['--serve', 'suite', to]);
  const checked = await startServer(['--serve', 'suite-checks', to]);
  const sealed = await startServer(['--serve', 'suite-arc', to]);
  const forwarder = await startServer(['--serve', 'forwarder', to]);
  const servers = [suite, checked, sealed, forwarder];
  let postfix: { port: number; pid: number; stop(): Promise<void> } | undefined;
  try {
    process.stdout.write(`relay: ${hasCommand('smtp-sink') ? "Postfix's smtp-sink" : 'a bare smtp-server (smtp-sink not installed: Debian package postfix)'}\n\n`);
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
    for (const reuse of postfixOnly ? [] : [true, false]) {
      const n = reuse ? total : fresh;
      const mode = reuse ? 'reused connections' : 'new connection per message';
      const b = await load(bare.port, n, sessions, reuse);
      const s = await forwarded(suite, n, reuse);
      const c = await forwarded(checked, n, reuse);
      const a = await forwarded(sealed, n, reuse);
      const f = await forwarded(forwarder, n, reuse);
      // The server is one event loop: the extra wall time per message at full load is the added work's cost.
      const cost = (x: number, y: number) => (1000 / x - 1000 / y).toFixed(2);
      rows.push([mode, `${sessions}`, fmt(b.rate), fmt(s.accept), fmt(s.e2e), fmt(c.e2e), fmt(a.e2e), cost(c.e2e, s.e2e), cost(a.e2e, c.e2e), (s.e2e / b.rate).toFixed(2), fmt(f.e2e), (f.e2e / b.rate).toFixed(2)]);
    }
    if (!postfixOnly) {
      const lb = await latency(bare.port, 15);
      const ls = await latency(suite.port, 15);

      printTable([
        [
          'mode (1 KB messages)',
          'sessions',
          'bare smtp-server accept msg/s',
          'makewaves durable accept msg/s',
          'makewaves forwarded end to end msg/s (checks off)',
          'with SPF+DKIM+DMARC checks msg/s',
          'with checks and ARC seal msg/s',
          'checks cost ms/msg',
          'ARC seal cost ms/msg',
          'e2e (off) / bare',
          'bare forwarder (nothing stored) msg/s',
          'bare forwarder / bare',
        ],
        ...rows,
      ]);
      process.stdout.write(`per-connection latency, one at a time (median of 15):\n`);
      process.stdout.write(`  bare smtp-server: connect → 220 ${lb.greeting.toFixed(1)} ms, whole one-message session ${lb.session.toFixed(1)} ms\n`);
      process.stdout.write(`  makewaves:        connect → 220 ${ls.greeting.toFixed(1)} ms, whole one-message session ${ls.session.toFixed(1)} ms\n`);
      process.stdout.write(`  (both keep smtp-server's 100 ms greeting pause)\n\n`);
    }

    if (!postfixTools) {
      process.stdout.write(`Postfix as a forwarder: skipped, postfix, smtp-source and smtp-sink are not installed (Debian package postfix).\n`);
      return;
    }
    if (!isRoot) {
      process.stdout.write(`Postfix as a forwarder: skipped, starting a Postfix instance needs root.\n`);
      return;
    }
    postfix = await startPostfix(relay.port);
    process.stdout.write(`## Forwarding against Postfix (smtp-source -s ${sessions} -d, ${pfMessages} messages of ${BODY.length} bytes, DKIM-signed; delivered counted at smtp-sink; ${rounds} rounds)\n\n`);
    const pf = postfix;
    const cases: Array<[string, number, number]> = [
      ['Postfix (virtual_alias_maps → relayhost)', pf.port, pf.pid],
      ['makewaves, every check and ARC seal', sealed.port, sealed.proc.pid!],
      ['makewaves, checks, no seal', checked.port, checked.proc.pid!],
      ['makewaves, checks off', suite.port, suite.proc.pid!],
    ];
    // Warm-up: Postfix's processes and caches.
    await sourceLoad(pf.port, relay, messageFile, 500, sessions);
    const rates: number[][] = cases.map(() => []);
    const cpus: number[][] = cases.map(() => []);
    const loops: number[][] = cases.map(() => []);
    for (let r = 0; r < rounds; r++) {
      for (const [i, [, port, pid]] of cases.entries()) {
        const got = await sourceLoad(port, relay, messageFile, pfMessages, sessions, pid);
        rates[i]!.push(got.rate);
        cpus[i]!.push(got.cpuMs);
        loops[i]!.push(got.loopMs);
      }
    }
    const ratio = (i: number) => median(rates[i]!.map((x, r) => x / rates[0]![r]!));
    const cpuRatio = (i: number) => median(cpus[i]!.map((x, r) => x / cpus[0]![r]!));
    printTable([
      ['forwarder', 'msg/s end to end (median)', 'each round', 'ratio to Postfix (median of rounds)', 'CPU ms/msg (median)', 'CPU ratio to Postfix', 'event loop CPU ms/msg'],
      ...cases.map(([name], i) => [
        name,
        fmt(median(rates[i]!)),
        rates[i]!.map(fmt).join(', '),
        i === 0 ? '' : `${ratio(i).toFixed(2)}×`,
        median(cpus[i]!).toFixed(2),
        i === 0 ? '' : `${cpuRatio(i).toFixed(2)}×`,
        i === 0 ? '' : median(loops[i]!).toFixed(2),
      ]),
    ]);
    process.stdout.write(
      "CPU: the forwarder's processes only (Postfix: master and every daemon it ran; makewaves: its process and handler launcher), not smtp-source, smtp-sink or the DNS server;\n" +
        "event loop: makewaves's main thread alone (the checks run in a worker thread, signatures in libuv's thread pool): 1000 / it is the rate one free core allows.\n",
    );
    const target = ratio(1) >= 1;
    process.stdout.write(`target (every check and ARC on ≥ Postfix's forwarding rate): ${target ? 'met' : 'missed'}\n`);
    if (timelineDir) {
      // The servers' logs are written asynchronously: stopped first, so every line is in.
      await Promise.all(servers.map((s) => s.stop()));
      process.stdout.write('\nOne message, from MAIL FROM to each stage (ms; every message of the run, warm-up included):\n\n');
      printTable([
        ['suite', 'stage', 'messages', 'median ms', '90th percentile ms'],
        ...timelineRows('every check and ARC seal', path.join(timelineDir, 'arc.log')),
        ...timelineRows('checks, no seal', path.join(timelineDir, 'checks.log')),
        ...timelineRows('checks off', path.join(timelineDir, 'off.log')),
      ]);
    }
  } finally {
    await postfix?.stop();
    await Promise.all([...servers, relay, bare].map((s) => s.stop()));
    await dns.close();
    rmSync(tmp, { recursive: true, force: true });
    if (timelineDir) rmSync(timelineDir, { recursive: true, force: true });
  }
}

const serveAt = process.argv.indexOf('--serve');
if (serveAt !== -1) {
  const kind = process.argv[serveAt + 1];
  const checks: Checks = kind === 'suite-arc' ? 'arc' : kind === 'suite-checks' ? 'checks' : 'off';
  await (kind === 'bare' ? serveBare() : kind === 'forwarder' ? serveForwarder(process.argv[serveAt + 2]!) : serveSuite(process.argv[serveAt + 2]!, checks));
} else {
  await main();
}
