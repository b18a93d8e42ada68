import net from 'node:net';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

export function has(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export { freePort } from '../../src/lib/listen.ts';

/** Resident memory of a process in MiB (Linux /proc). */
export function rssMiB(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/**
 * Proportional memory (PSS, MiB) of a process and its children: pages shared
 * between them (the node binary both a server and its launcher map) counted
 * once in all, where a sum of RSS counts them in each.
 */
export function treePssMiB(pid: number | undefined): number {
  if (!pid) return NaN;
  const pss = (p: number) => {
    try {
      const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'));
      return m ? Number(m[1]) / 1024 : NaN;
    } catch {
      return NaN;
    }
  };
  return overTree(pid, pss);
}

/** `f` of a process plus `f` of each of its children (pgrep -P), summed. */
function overTree(pid: number, f: (pid: number) => number): number {
  let total = f(pid);
  try {
    // Children and theirs: the suite's handler launcher is its keeper's child.
    for (const k of execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).split('\n').filter(Boolean)) total += overTree(Number(k), f);
  } catch {
    // no children
  }
  return total;
}

/** Sum of RSS over a process and its children (nginx master + worker). */
export function treeRssMiB(pid: number | undefined): number {
  if (!pid) return NaN;
  return overTree(pid, rssMiB);
}

/** Waits until `url` answers (any status) with Host `host`, up to `ms`. */
export async function waitHttp(url: string, host: string, ms = 20_000): Promise<number> {
  const t0 = performance.now();
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const req = http.get(url, { headers: { host }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(true));
      });
      req.on('error', () => resolve(false));
    });
    if (ok) return performance.now() - t0;
    if (Date.now() > deadline) throw new Error(`${url} did not answer within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** CPU time (ms) a process and its children (nginx's worker) have used so far. */
export function treeCpuMs(pid: number | undefined): number {
  if (!pid) return NaN;
  return overTree(pid, cpuMs);
}

/** CPU time (ms) a process has used so far (Linux /proc). */
function cpuMs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime + stime, in USER_HZ (100 on Linux)
  } catch {
    return NaN;
  }
}

/** Waits (up to `ms`) until a process (with `tree`, it and every process below it) uses less than 5 % of a CPU over 250 ms: its start-up is over. */
export async function waitIdle(pid: number | undefined, ms = 15_000, tree = false): Promise<void> {
  if (!pid) return;
  const deadline = Date.now() + ms;
  const cpu = tree ? treeCpuMs : cpuMs;
  let last = cpu(pid);
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    const now = cpu(pid);
    if (!(now - last > 12.5)) return;
    last = now;
  }
}

export interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

function toMs(v: string, unit: string): number {
  const n = Number(v);
  return unit === 'us' ? n / 1000 : unit === 's' ? n * 1000 : n;
}

/**
 * Drives `url` with wrk (preferred: it takes far less CPU) or autocannon. Bounded by `seconds`.
 * One wrk thread: on a 2-core machine the server under test keeps the other core.
 */
export async function load(url: string, host: string, seconds: number, connections = 50, post?: { body: string; type: string }): Promise<LoadResult> {
  if (has('wrk')) {
    // A POST: wrk takes its method and body from a Lua script.
    let script: string | undefined;
    if (post) {
      script = path.join(mkdtempSync(path.join(os.tmpdir(), 'makewaves-wrk-')), 'post.lua');
      writeFileSync(script, `wrk.method = "POST"\nwrk.body = ${JSON.stringify(post.body)}\nwrk.headers["Content-Type"] = ${JSON.stringify(post.type)}\n`);
    }
    const out = await run(...pinned('load', 'wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', '-H', `Host: ${host}`, ...(script ? ['-s', script] : []), url])).finally(() => {
      if (script) rmSync(path.dirname(script), { recursive: true, force: true });
    });
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
    const pct = (p: string) => {
      const m = new RegExp(`\\s${p}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
      return m ? toMs(m[1]!, m[2]!) : NaN;
    };
    const errs = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
    const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
    const errors = Number(errs?.[1] ?? 0) + (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
    return { rps, p50: pct('50'), p99: pct('99'), errors };
  }
  const out = await run(process.execPath, [
    path.join(ROOT, 'node_modules/autocannon/autocannon.js'),
    '-c', String(connections), '-d', String(seconds), '-H', `Host=${host}`,
    ...(post ? ['-m', 'POST', '-b', post.body, '-H', `Content-Type=${post.type}`] : []),
    '--json', url,
  ]);
  const j = JSON.parse(out) as { requests: { average: number }; latency: { p50: number; p99: number }; non2xx: number; errors: number };
  return { rps: j.requests.average, p50: j.latency.p50, p99: j.latency.p99, errors: j.non2xx + j.errors };
}

/**
 * Drives an HTTPS `url` over HTTP/2 with h2load (nghttp2-client): 16
 * connections, 10 streams each, `:authority` set to `authority`. h2load
 * gives no percentiles: p50 holds the mean time per request, p99 its max.
 */
export async function loadH2(url: string, authority: string, seconds: number): Promise<LoadResult> {
  const out = await run('h2load', ['-D', String(seconds), '--warm-up-time', '1', '-c', '16', '-m', '10', '-t', '1', '-H', `:authority: ${authority}`, url]);
  const rps = Number(/finished in [\d.]+s, ([\d.]+) req\/s/.exec(out)?.[1] ?? NaN);
  const req = /time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/.exec(out);
  const failed = /(\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const codes = /status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  const errors = (failed ? failed.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + (codes ? codes.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  return { rps, p50: req ? toMs(req[5]!, req[6]!) : NaN, p99: req ? toMs(req[3]!, req[4]!) : NaN, errors };
}

export function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}: ${out.slice(-500)}`))));
  });
}

/** The median of some numbers (NaN for none). */
export function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Where servers and the load generator run. Off by default: the scheduler places them. With {@link pinCpus} on,
 * every server started by {@link startProcess} (its threads and children too) is held to the last CPU and wrk to
 * the first, with `taskset` (util-linux), as servers are benchmarked with one worker: on a machine of two CPUs, a
 * server and wrk left to the scheduler share a CPU in some starts and not in others, and a server's ratio against
 * another moved by up to a tenth from one start of the pair to the next, the same way in every round of it.
 */
const pinning = { on: false };
/** Turns pinning on (when there are two CPUs or more and taskset is installed); says whether it is on. */
export function pinCpus(on: boolean): boolean {
  pinning.on = on && os.cpus().length >= 2 && has('taskset');
  return pinning.on;
}
/** `cmd args` run on one CPU when pinning is on: the server's (the last) or the load generator's (the first). */
function pinned(role: 'server' | 'load', cmd: string, args: string[]): [string, string[]] {
  if (!pinning.on) return [cmd, args];
  return ['taskset', ['-c', String(role === 'server' ? os.cpus().length - 1 : 0), cmd, ...args]];
}

export function startProcess(cmd: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  // taskset runs the command in its own place (exec), so the child's pid is the server's.
  const [c, a] = pinned('server', cmd, args);
  return spawn(c, a, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...env } });
}

export async function stopProcess(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

export interface Row {
  case: string;
  server: string;
  rps: number;
  p50: number;
  p99: number;
  rss: number;
  /** CPU time the server spent per answer (µs): on a shared machine steadier than req/s. */
  cpuUs?: number;
  ratio?: string;
  /** The same ratios from CPU time per answer. */
  cpuRatio?: string;
  note?: string;
}

export function printTable(title: string, rows: Row[]): void {
  console.log(table(title, rows));
}

/** A Markdown table of rows under a heading. */
export function table(title: string, rows: Row[]): string {
  const cpu = rows.some((r) => r.cpuUs !== undefined);
  const head = ['case', 'server', 'req/s', 'p50 ms', 'p99 ms', 'RSS MiB', 'ratio', ...(cpu ? ['CPU µs/req', 'CPU ratio'] : [])];
  const body = rows.map((r) => [
    r.case,
    r.server,
    r.rps.toFixed(0),
    r.p50.toFixed(2),
    r.p99.toFixed(2),
    r.rss.toFixed(0),
    r.ratio ?? '',
    ...(cpu ? [r.cpuUs === undefined ? '' : r.cpuUs.toFixed(1), r.cpuRatio ?? ''] : []),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i >= 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (i >= 2 ? `${'-'.repeat(w + 1)}:` : `${'-'.repeat(w + 2)}`)).join('|')}|`;
  return [`\n## ${title}\n`, line(head), sep, ...body.map(line)].join('\n');
}

/** Waits until something accepts TCP connections on 127.0.0.1:port (bounded). */
export async function waitTcp(port: number, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * One client, one request at a time for `seconds`, each timed with
 * performance.now (wrk and autocannon round or bucket); p50/p99 in ms and
 * the answers that were not 2xx.
 */
export async function sequential(url: string, host: string, seconds: number, post?: { body: string; type: string }): Promise<{ p50: number; p99: number; bad: number }> {
  const { Pool } = await import('undici');
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections: 1 });
  const times: number[] = [];
  let bad = 0;
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end && times.length < 100_000) {
    const t0 = performance.now();
    const res = await pool.request({
      path: u.pathname + u.search,
      method: post ? 'POST' : 'GET',
      headers: { host, ...(post ? { 'content-type': post.type } : {}) },
      body: post?.body,
    });
    await res.body.text();
    times.push(performance.now() - t0);
    if (res.statusCode >= 300) bad++;
  }
  await pool.close();
  times.sort((a, b) => a - b);
  const at = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))]!;
  return { p50: at(0.5), p99: at(0.99), bad };
}

/**
 * CPU time (ms) used so far by a process and every process below it,
 * including the descendants that already ended and were waited for
 * (cutime/cstime): what a server spends, whatever else runs on the machine.
 */
export function treeCpuAllMs(pid: number | undefined): number {
  if (!pid) return NaN;
  const ticks = (p: number): number => {
    try {
      const f = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch {
      return 0; // ended meanwhile: its parent counts it once it is waited for
    }
  };
  let total = 0;
  const stack = [pid];
  while (stack.length > 0) {
    const p = stack.pop()!;
    total += ticks(p);
    try {
      for (const t of readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').split(' ').filter(Boolean)) stack.push(Number(t));
    } catch {
      // ended meanwhile
    }
  }
  return (total * 1000) / 100; // USER_HZ is 100 on Linux
}

/** A file for the bench tenant's cgi-bin: its text, and its mode where it must be executable. */
export type BenchScript = string | { text: string; mode: number };

export interface CgiBench {
  /** The temporary folder: config/, sites/, data/ (removed by stop). */
  dir: string;
  /** The HTTP listener's URL. */
  url: string;
  /** How many mails the handlers handed to the form-mail channel so far (an in-memory MailSubmitter: the queue is another service). */
  mails(): number;
  /** Whether a root launcher runs every script with the tenant's own uid, and whether it clones each run in the tenant's persistent box (box-init). */
  launcher: boolean;
  forkBox: boolean;
  stop(): Promise<void>;
}

/**
 * makewaves' HTTP service and handler gateway in this process, serving the
 * tenant bench.test (forms to owner@bench.test) from a temporary folder
 * named after `prefix`, its cgi-bin holding `scripts`. `cgi` is added to the
 * main config's cgi section, where mail is never rate-limited. The suite's
 * modules are loaded only here: the load generator's process never has them.
 */
export async function startCgiBench(opts: { prefix: string; scripts: Record<string, BenchScript>; cgi?: Record<string, unknown>; logLevel?: 'info' | 'warn' }): Promise<CgiBench> {
  const { stringify } = await import('yaml');
  const { createCgi } = await import('../../src/cgi/index.ts');
  const { loadConfig } = await import('../../src/core/config/load.ts');
  const { startAll, stopAll } = await import('../../src/core/lifecycle.ts');
  const { createLogger } = await import('../../src/core/log.ts');
  const { Registry } = await import('../../src/core/registry.ts');
  const { createHttpService } = await import('../../src/http/index.ts');
  const { openState } = await import('../../src/state/index.ts');

  const dir = mkdtempSync(path.join(os.tmpdir(), opts.prefix));
  // The tenant's uid must reach its site below this folder.
  chmodSync(dir, 0o755);
  mkdirSync(path.join(dir, 'config/tenants'), { recursive: true });
  const bin = path.join(dir, 'sites/bench.test/cgi-bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(
    path.join(dir, 'config/makewaves.yaml'),
    stringify({
      hostname: 'mx.bench.test',
      data: '../data',
      sites: '../sites',
      http: { listen: ['127.0.0.1:0'] },
      cgi: { ...opts.cgi, mailPerHour: 1e9, mailPerIpPerHour: 1e9 },
    }),
  );
  writeFileSync(path.join(dir, 'config/tenants/bench.test.yaml'), stringify({ domains: ['bench.test'], forms: { recipients: ['owner@bench.test'] }, cgi: true }));
  for (const [name, script] of Object.entries(opts.scripts)) {
    if (typeof script === 'string') writeFileSync(path.join(bin, name), script);
    else writeFileSync(path.join(bin, name), script.text, { mode: script.mode });
  }

  const log = createLogger({ level: opts.logLevel ?? 'warn' });
  const registry = new Registry(loadConfig(path.join(dir, 'config')));
  const state = openState(registry.config.main.dataDir);
  let mails = 0;
  const cgi = createCgi({ registry, log, mail: { submit: async () => `q${++mails}` } });
  const httpSvc = createHttpService({ registry, state, log, gateway: cgi.gateway });
  let url = '';
  await startAll([cgi.service, { ...httpSvc, start: async () => ((url = (await httpSvc.start())[0]!), [url]) }], log);
  const client = cgi.launcher();
  return {
    dir,
    url,
    mails: () => mails,
    launcher: client !== undefined,
    forkBox: client?.forkBox === true,
    stop: async () => {
      await stopAll([cgi.service, httpSvc], 1000);
      state.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * An httpd.conf for a throwaway Apache httpd 2.4 on 127.0.0.1:`port`
 * running the CGI scripts of `cgiBin` (ScriptAlias /cgi-bin/) with
 * keep-alive unbounded: its pid file, mutex, cgid socket and error log under
 * `root`, the modules of `load` (mpm_event, authz_core, alias, cgid, …) from
 * `modules`, and `directives` (User, Group, SuexecUserGroup) added as given.
 */
export function apacheCgiConf(o: { root: string; port: number; modules: string; load: string[]; docRoot: string; cgiBin: string; directives: string[] }): string {
  return [
    `ServerRoot "${o.root}"`,
    `Listen 127.0.0.1:${o.port}`,
    'ServerName bench.test',
    ...o.load.map((m) => `LoadModule ${m}_module ${o.modules}/mod_${m}.so`),
    ...o.directives,
    `PidFile "${o.root}/httpd.pid"`,
    `Mutex file:${o.root}`,
    `ScriptSock "${o.root}/cgid.sock"`,
    `ErrorLog "${o.root}/error.log"`,
    `DocumentRoot "${o.docRoot}"`,
    `ScriptAlias /cgi-bin/ "${o.cgiBin}/"`,
    `<Directory "${o.cgiBin}">`,
    '  Require all granted',
    '</Directory>',
    'KeepAlive On',
    'MaxKeepAliveRequests 0',
    '',
  ].join('\n');
}

/** The status of one GET of `url`, 0 when it cannot be had. */
export function statusOf(url: string): Promise<number> {
  return new Promise<number>((resolve) => {
    http
      .get(url, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
      .on('error', () => resolve(0));
  });
}

/** A Markdown table: the first column left-aligned, the others right-aligned. */
export function columns(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(head), sep, ...rows.map(line)].join('\n');
}
