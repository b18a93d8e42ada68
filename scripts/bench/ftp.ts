/**
 * FTP upload benchmark: 200 files of 4 KiB, then one large file, each new
 * and then overwritten, through basic-ftp (one session per server and
 * round, after an untimed warm-up), against bare ftp-srv 4.6.3, the same
 * with TCP_NODELAY, makewaves' FTP service in its own process as `npm start`
 * runs it (and, with `--only jail`, in this process), and vsftpd when
 * installed (`apt-get install vsftpd`), in the same run. Prints a table of
 * medians with ratios to vsftpd (to the first row without it).
 *
 *   node --import tsx scripts/bench/ftp.ts [--runs 5] [--files 200] [--large-mb 100] [--only own,vsftpd]
 *
 * `npm run bench` calls {@link benchFtp}. Loopback only; everything it
 * starts is stopped before it returns, and its temp folders are removed.
 */
import { Client } from 'basic-ftp';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { FtpSrv } from 'ftp-srv';
import { execFileSync } from 'node:child_process';
import { chownSync } from 'node:fs';
import { freePort, has, ROOT, run, startProcess, stopProcess, waitTcp } from './lib.ts';
import { stringify } from 'yaml';
import { createLogger } from '../../src/core/log.ts';
import { bunyanAdapter } from '../../src/ftp/ftpsrv-adapter.ts';
import { hashPassword } from '../../src/lib/password.ts';
import { startSuite } from '../../src/main.ts';

export interface FtpBenchOptions {
  runs?: number;
  files?: number;
  fileBytes?: number;
  largeBytes?: number;
  /** Only the servers whose names contain one of these (all when empty). */
  only?: string[];
}

export interface FtpBenchRow {
  server: string;
  /** 200 small files, new names (median seconds). */
  smallSeconds: number;
  /** The same 200 names again (median seconds). */
  smallOverSeconds: number;
  /** The large file under a free name (median MiB/s). */
  largeMiBs: number;
  /** The large file over itself (median MiB/s). */
  largeOverMiBs: number;
}

interface Target {
  name: string;
  url: string;
  user: string;
  password: string;
  stop(): Promise<void>;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function largeStream(total: number): Readable {
  const chunk = Buffer.alloc(1024 * 1024, 0x61);
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= total) return this.push(null);
      const n = Math.min(chunk.length, total - sent);
      sent += n;
      this.push(n === chunk.length ? chunk : chunk.subarray(0, n));
    },
  });
}

/** One measurement's four figures: new files, then the same names again. */
interface Measurement {
  small: number;
  smallOver: number;
  large: number;
  largeOver: number;
}

/**
 * Writes back dirty pages, then, with `drop` (before a large upload), drops
 * the clean page cache when allowed. Not before the small files: that
 * would also drop the file system's cached metadata, which a server in use
 * has in memory. Why the drop: in a virtual machine (this one is), a page of guest memory
 * never touched before costs a fault in the host on first use. Writing
 * 100 MiB into pages recycled from a file just deleted took 21 ms here, into
 * fresh ones 240 ms (scratch test, ten runs each), so a server's large-file
 * figure depended on which free pages the kernel handed it: whatever the
 * servers measured before had freed or taken. After a drop, every
 * measurement starts with the same plenty of recycled pages.
 */
let canDrop = true;
function settle(drop: boolean): void {
  execFileSync('sync');
  if (!drop || !canDrop) return;
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '1');
  } catch {
    canDrop = false;
  }
}

async function login(c: Client, target: Target): Promise<void> {
  const u = new URL(target.url);
  await c.access({ host: u.hostname, port: Number(u.port), user: target.user, password: target.password });
}

/**
 * One round against one server: 200 small files into a folder of their own
 * (new files), the same 200 names again (overwrites), then the large file
 * under a name freed just before (new) and once more over itself. Each timed
 * part starts with no dirty pages left by the one before (`sync`), and each
 * large one, when this process may (root), with the clean page cache
 * dropped (see {@link settle}).
 *
 * New and overwrite are measured apart because they cost a server with
 * atomic replace something different: an overwrite needs the new file's
 * pages while the old file still holds its own (vsftpd truncates in place
 * and reuses them).
 */
async function measure(target: Target, round: number, files: number, fileBytes: number, largeBytes: number): Promise<Measurement> {
  const c = new Client(30_000);
  const timed = async (fn: () => Promise<unknown>, drop = false) => {
    settle(drop);
    const t0 = process.hrtime.bigint();
    await fn();
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };
  try {
    await login(c, target);
    await c.ensureDir(`/bench/r${round}`);
    const body = Buffer.alloc(fileBytes, 0x62);
    const uploadAll = async () => {
      for (let i = 0; i < files; i++) await c.uploadFrom(Readable.from([body]), `f${i}.html`);
    };
    const small = await timed(uploadAll);
    const smallOver = await timed(uploadAll);
    await c.cd('/bench');
    await c.remove('large.bin', true);
    const large = await timed(() => c.uploadFrom(largeStream(largeBytes), 'large.bin'), true);
    const largeOver = await timed(() => c.uploadFrom(largeStream(largeBytes), 'large.bin'), true);
    const mibs = (s: number) => largeBytes / 1024 / 1024 / s;
    return { small, smallOver, large: mibs(large), largeOver: mibs(largeOver) };
  } finally {
    c.close();
  }
}

/**
 * Untimed, once per server before the rounds: small files until
 * WARM_UP_FILES are sent or WARM_UP_MS have passed, then one large file. A
 * Node server just started runs its code in V8's interpreter and baseline
 * tiers first; it took ~1,500 uploads here to reach its steady speed (the
 * first 200 files took 1.6× as long as the tenth 200). Measured cold, the
 * bench reported the server's start more than its work; vsftpd has no such
 * phase, so the warm-up costs it nothing.
 */
const WARM_UP_FILES = 2000;
const WARM_UP_MS = 4000;

async function warmUp(target: Target, fileBytes: number, largeBytes: number): Promise<void> {
  const c = new Client(30_000);
  try {
    await login(c, target);
    await c.ensureDir('/bench/warm-up');
    const body = Buffer.alloc(fileBytes, 0x62);
    const until = Date.now() + WARM_UP_MS;
    for (let i = 0; i < WARM_UP_FILES && Date.now() < until; i++) await c.uploadFrom(Readable.from([body]), `f${i % 200}.html`);
    await c.uploadFrom(largeStream(largeBytes), 'large.bin');
    await c.remove('large.bin');
  } finally {
    c.close();
  }
}

/**
 * Bare ftp-srv with its own file system, as a project would use it out of
 * the box; with `noDelay`, TCP_NODELAY set on its control sockets (the one
 * change that matters for small files), to show what our own layers cost.
 * In a process of its own, like every server measured here but the
 * in-process suite: sharing the client's heap and event loop skewed the
 * measurements that followed.
 */
async function bareFtpSrv(root: string, noDelay = false): Promise<Target> {
  const port = await freePort();
  const child = startProcess(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve-bare', root, String(port), noDelay ? 'nodelay' : 'plain']);
  await waitTcp(port);
  return {
    name: noDelay ? 'bare ftp-srv + TCP_NODELAY' : 'bare ftp-srv 4.6.3',
    url: `ftp://127.0.0.1:${port}`,
    user: 'bench',
    password: 'bench',
    stop: () => stopProcess(child),
  };
}

/** The child side of {@link bareFtpSrv}. */
async function serveBare(root: string, port: number, noDelay: boolean): Promise<void> {
  const srv = new FtpSrv({ url: `ftp://127.0.0.1:${port}`, pasv_url: '127.0.0.1', pasv_min: 0, pasv_max: 0, log: bunyanAdapter(createLogger({ level: 'silent' })) });
  (srv as unknown as NodeJS.EventEmitter).on('login', (_d: unknown, resolve: (r: object) => void) => resolve({ root }));
  const server = (srv as unknown as { server: import('node:net').Server }).server;
  if (noDelay) server.prependListener('connection', (sock: import('node:net').Socket) => sock.setNoDelay(true));
  await srv.listen();
}

/**
 * vsftpd, the reference, in its own process on a loopback port: anonymous
 * upload into a folder owned by the `ftp` user (no system account to make).
 * Undefined when vsftpd or the `ftp` user is not installed.
 */
async function vsftpd(dir: string): Promise<Target | undefined> {
  // vsftpd starts only as root (its chroot and privilege separation), and the upload folder is chowned to `ftp`.
  if (!has('vsftpd') || process.getuid?.() !== 0) return undefined;
  let uid: number;
  let gid: number;
  try {
    uid = Number(execFileSync('id', ['-u', 'ftp'], { encoding: 'utf8' }));
    gid = Number(execFileSync('id', ['-g', 'ftp'], { encoding: 'utf8' }));
  } catch {
    return undefined;
  }
  const root = path.join(dir, 'vsftpd');
  mkdirSync(path.join(root, 'bench'), { recursive: true });
  chownSync(path.join(root, 'bench'), uid, gid);
  mkdirSync('/var/run/vsftpd/empty', { recursive: true });
  const port = await freePort();
  const conf = path.join(dir, 'vsftpd.conf');
  writeFileSync(
    conf,
    [
      'listen=YES', 'listen_ipv6=NO', 'listen_address=127.0.0.1', `listen_port=${port}`, 'background=NO',
      'anonymous_enable=YES', 'no_anon_password=YES', `anon_root=${root}`, 'write_enable=YES', 'anon_upload_enable=YES',
      'anon_mkdir_write_enable=YES', 'anon_other_write_enable=YES', 'local_enable=NO', 'pasv_enable=YES', 'pasv_address=127.0.0.1',
      'seccomp_sandbox=NO', 'xferlog_enable=NO', 'use_localtime=NO', 'secure_chroot_dir=/var/run/vsftpd/empty', '',
    ].join('\n'),
  );
  const child = startProcess('vsftpd', [conf]);
  await waitTcp(port);
  return { name: 'vsftpd (reference, own process)', url: `ftp://127.0.0.1:${port}`, user: 'anonymous', password: '', stop: () => stopProcess(child) };
}

/**
 * A config folder under `dir` for the suite with one tenant, bench.test (FTP
 * user bench, password bench, no quota), FTP on `ftpListen`; its config,
 * sites and data folders are named with `suffix` (two suites side by side).
 */
async function benchConfig(dir: string, suffix: string, ftpListen: string): Promise<string> {
  const configDir = path.join(dir, `config${suffix}`);
  mkdirSync(path.join(configDir, 'tenants'), { recursive: true });
  mkdirSync(path.join(dir, `sites${suffix}`, 'bench.test'), { recursive: true });
  writeFileSync(
    path.join(configDir, 'makewaves.yaml'),
    stringify({ hostname: 'mx.bench.test', data: `../data${suffix}`, sites: `../sites${suffix}`, http: { listen: ['127.0.0.1:0'] }, ftp: { listen: ftpListen } }),
  );
  writeFileSync(path.join(configDir, 'tenants', 'bench.test.yaml'), stringify({ domains: ['bench.test'], ftp: [{ user: 'bench', password: await hashPassword('bench') }] }));
  return configDir;
}

/** The real suite from a temp config with one tenant and no quota, in its own process as `npm start` runs it. */
async function makewavesProcess(dir: string): Promise<Target> {
  const port = await freePort();
  const configDir = await benchConfig(dir, '-proc', `127.0.0.1:${port}`);
  await run(process.execPath, [path.join(ROOT, 'scripts/build.mjs')]);
  const child = startProcess(process.execPath, [path.join(ROOT, 'dist/makewaves.mjs'), 'serve', '--config', configDir], { MAKEWAVES_LOG_LEVEL: 'warn' });
  await waitTcp(port);
  return { name: 'makewaves (own process)', url: `ftp://127.0.0.1:${port}`, user: 'bench@bench.test', password: 'bench', stop: () => stopProcess(child) };
}


/** The real suite from a temp config with one tenant and no quota. */
async function makewaves(dir: string): Promise<Target> {
  const configDir = await benchConfig(dir, '', '127.0.0.1:0');
  const suite = await startSuite({ configDir, watch: false, log: createLogger({ level: 'silent' }) });
  return { name: 'makewaves (jail, quota, atomic)', url: suite.urls.ftp![0]!, user: 'bench@bench.test', password: 'bench', stop: () => suite.stop(1_000) };
}

/** Runs the benchmark; resolves with one row per server (medians over `runs`). */
export async function benchFtp(opts: FtpBenchOptions = {}): Promise<FtpBenchRow[]> {
  const runs = opts.runs ?? 5;
  const files = opts.files ?? 200;
  const fileBytes = opts.fileBytes ?? 4096;
  const largeBytes = opts.largeBytes ?? 100 * 1024 * 1024;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mw-bench-ftp-'));
  const bareRoot = path.join(dir, 'bare');
  const fastRoot = path.join(dir, 'bare-nodelay');
  mkdirSync(bareRoot);
  mkdirSync(fastRoot);
  const wanted = (name: string) => !opts.only?.length || opts.only.some((o) => name.includes(o));
  const reference = wanted('vsftpd') ? await vsftpd(dir) : undefined;
  const targets = [
    ...(wanted('bare ftp-srv 4.6.3') ? [await bareFtpSrv(bareRoot)] : []),
    ...(wanted('bare ftp-srv + TCP_NODELAY') ? [await bareFtpSrv(fastRoot, true)] : []),
    ...(wanted('makewaves (own process)') ? [await makewavesProcess(dir)] : []),
    ...(reference ? [reference] : []),
    // Opt-in (--only jail): it runs in the client's process, and the garbage of its 100 MiB
    // upload slowed whichever server the client measured next.
    ...(opts.only?.some((o) => 'makewaves (jail, quota, atomic)'.includes(o)) ? [await makewaves(dir)] : []),
  ];
  const rows: FtpBenchRow[] = [];
  try {
    const results = new Map(targets.map((t) => [t.name, [] as Measurement[]]));
    // Interleaved, so all servers see the same machine noise, in an order rotated every round
    // and reversed every other one: what a server leaves behind (the kernel freeing and
    // discarding a replaced 100 MiB file, the file system is mounted with `discard` here) lands
    // on the one measured next, and a fixed order, or a rotation alone, which keeps each
    // server's neighbours, made one server pay for the same other most of the time.
    for (const t of targets) await warmUp(t, fileBytes, largeBytes);
    for (let r = 0; r < runs; r++) {
      const rotated = [...targets.slice(r % targets.length), ...targets.slice(0, r % targets.length)];
      for (const t of r % 2 === 1 ? rotated.reverse() : rotated) {
        results.get(t.name)!.push(await measure(t, r, files, fileBytes, largeBytes));
      }
    }
    for (const t of targets) {
      const res = results.get(t.name)!;
      const all = (k: keyof Measurement) => res.map((m) => m[k]);
      rows.push({
        server: t.name,
        smallSeconds: median(all('small')),
        smallOverSeconds: median(all('smallOver')),
        largeMiBs: median(all('large')),
        largeOverMiBs: median(all('largeOver')),
      });
      if (process.env.BENCH_VERBOSE) {
        const fmt = (k: keyof Measurement, d: number) => all(k).map((x) => x.toFixed(d)).join(' ');
        process.stderr.write(
          `${t.name}: small ${fmt('small', 3)} s, overwrite ${fmt('smallOver', 3)} s; large ${fmt('large', 0)} MiB/s, overwrite ${fmt('largeOver', 0)} MiB/s\n`,
        );
      }
    }
  } finally {
    for (const t of targets) await t.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

/** The line above the table: what was measured and how. */
export function ftpHeader(runs: number): string {
  return (
    `FTP upload via basic-ftp, one session, loopback, Node ${process.version}; medians of ${runs} runs after an untimed warm-up; ` +
    `page cache ${canDrop ? 'dropped' : 'NOT dropped (not root)'} before each large upload`
  );
}

/**
 * A Markdown table: time for the small files and MiB/s for the large one,
 * new and overwritten, each with its ratio to vsftpd when it ran (else to
 * the first row). The project's targets are on new files: small ≤ 1.5×
 * vsftpd's time, large ≥ 0.8× its MiB/s.
 */
export function formatFtpTable(rows: FtpBenchRow[], files = 200, largeMb = 100): string {
  const base = rows.find((r) => r.server.startsWith('vsftpd')) ?? rows[0]!;
  const to = base.server.startsWith('vsftpd') ? 'vsftpd' : 'first';
  const cols: { head: string; get: (r: FtpBenchRow) => number; digits: number }[] = [
    { head: `${files} × 4 KiB new (s)`, get: (r) => r.smallSeconds, digits: 3 },
    { head: `${files} × 4 KiB overwrite (s)`, get: (r) => r.smallOverSeconds, digits: 3 },
    { head: `${largeMb} MiB new (MiB/s)`, get: (r) => r.largeMiBs, digits: 0 },
    { head: `${largeMb} MiB overwrite (MiB/s)`, get: (r) => r.largeOverMiBs, digits: 0 },
  ];
  return [
    `| server | ${cols.map((c) => `${c.head} | / ${to}`).join(' | ')} |`,
    `|---|${cols.map(() => '---|---|').join('')}`,
    ...rows.map((r) => `| ${r.server} | ${cols.map((c) => `${c.get(r).toFixed(c.digits)} | ${(c.get(r) / c.get(base)).toFixed(2)}`).join(' | ')} |`),
  ].join('\n');
}

const bareAt = process.argv.indexOf('--serve-bare');
if (bareAt !== -1) {
  await serveBare(process.argv[bareAt + 1]!, Number(process.argv[bareAt + 2]), process.argv[bareAt + 3] === 'nodelay');
} else if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  // Not strict: `npm run bench -- --seconds N` passes options meant for the other benchmarks too.
  const { values } = parseArgs({ strict: false, options: { runs: { type: 'string' }, files: { type: 'string' }, 'large-mb': { type: 'string' }, only: { type: 'string' } } });
  const files = Number(values.files ?? 200);
  const largeMb = Number(values['large-mb'] ?? 100);
  const only = typeof values.only === 'string' ? values.only.split(',') : [];
  const rows = await benchFtp({ runs: Number(values.runs ?? 5), files, largeBytes: largeMb * 1024 * 1024, only });
  process.stdout.write(`${ftpHeader(Number(values.runs ?? 5))}\n\n${formatFtpTable(rows, files, largeMb)}\n`);
}
