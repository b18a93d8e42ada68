// The work a server does per answer, counted rather than timed: each server runs under Valgrind's callgrind
// (`apt-get install valgrind`), which counts the instructions it executes (all its threads: the main one, V8's
// concurrent collector and compiler) and simulates its caches, so it shows what a change of data (10,000 tenants
// against 1) costs in instructions and in cache misses, free of the scheduling and clock noise that moves one
// timed round against the next by a fifth on a shared machine. Under callgrind a server runs some 50 times slower,
// so the counts are of its own code only: the kernel's share of an answer (the socket write) is not in them, nor is
// a slowdown from the translation lookaside buffer, which callgrind does not model.
//
// The last-level cache simulated is 8 MiB, 16-way (what one server core commonly shares), not the host's: a virtual
// machine may report a cache no processor has (here 320 MiB, direct-mapped).
//
// Each server is warmed up first (the optimising compiler has seen the path), then measured in windows of a fixed
// number of requests: the counters are zeroed just before a window and dumped just after it, the servers taking turns
// (the order alternating), so a window holds that server's answers and nothing of the time it sat idle.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { startProcess, stopProcess, waitHttp, waitIdle } from './lib.ts';

export interface CountedServer {
  name: string;
  /** The argv of the server (node and its arguments), run under callgrind. */
  argv: string[];
  port: number;
  path: string;
  host: string;
}

interface Window {
  /** Instructions per answer. */
  ir: number;
  /** Simulated first-level data cache misses (reads and writes) per answer. */
  d1: number;
  /** Simulated last-level cache misses (instructions and data) per answer. */
  ll: number;
}

/** Sends exactly `n` GETs over `connections` keep-alive connections; rejects on any answer but 200. */
export function fixedRequests(url: string, host: string, n: number, connections = 4): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  let left = n;
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = http.get(url, { agent, headers: { host } }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`${url} (Host ${host}): ${res.statusCode}`))));
      });
      req.on('error', reject);
    });
  const lane = async (): Promise<void> => {
    while (left > 0) {
      left--;
      await one();
    }
  };
  return Promise.all(Array.from({ length: connections }, lane)).then(
    () => agent.destroy(),
    (err: unknown) => {
      agent.destroy();
      throw err;
    },
  );
}

/** The newest dump of callgrind's `dir/<prefix>.<pid>.out.<k>`, as its events and their totals. */
function lastDump(dir: string, prefix: string): Map<string, number> {
  const dumps = readdirSync(dir)
    .filter((f) => f.startsWith(`${prefix}.`) && /\.out\.\d+$/.test(f))
    .sort((a, b) => Number(a.split('.').at(-1)) - Number(b.split('.').at(-1)));
  const text = readFileSync(path.join(dir, dumps.at(-1)!), 'utf8');
  const events = /^events: (.+)$/m.exec(text)?.[1]?.split(' ') ?? [];
  const totals = /^totals: (.+)$/m.exec(text)?.[1]?.split(' ').map(Number) ?? [];
  return new Map(events.map((e, i) => [e, totals[i] ?? 0]));
}

/**
 * Counts each server's work per answer over `windows` windows of `requests` answers, after `warmup` answers.
 * Returns, per server, every window's counts.
 */
export async function countPerAnswer(servers: CountedServer[], o: { warmup: number; requests: number; windows: number }): Promise<Map<string, Window[]>> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-callgrind-'));
  const up: { s: CountedServer; child: ChildProcess; prefix: string }[] = [];
  const result = new Map<string, Window[]>();
  try {
    for (const [i, s] of servers.entries()) {
      const prefix = `s${i}`;
      const child = startProcess('valgrind', ['--tool=callgrind', '--smc-check=all-non-file', '--cache-sim=yes', `--LL=${8 << 20},16,64`, '--dump-instr=no', '--instr-atstart=no', `--callgrind-out-file=${dir}/${prefix}.%p.out`, ...s.argv], {
        MAKEWAVES_LOG_LEVEL: 'warn',
      });
      up.push({ s, child, prefix });
    }
    // Started and warmed up without instrumentation (a few times slower than bare, not fifty: the start with 10,000
    // tenants is within the handler launcher's minute, and the warm-up takes seconds), which is turned on after it.
    for (const { s } of up) await waitHttp(`http://127.0.0.1:${s.port}${s.path}`, s.host, 300_000);
    await Promise.all(up.map(({ s }) => fixedRequests(`http://127.0.0.1:${s.port}${s.path}`, s.host, o.warmup)));
    for (const { child } of up) execFileSync('callgrind_control', ['-i', 'on', String(child.pid)], { stdio: 'ignore' });
    // Then one window each, not counted: instrumented, a server answers fifty times slower, and what runs by the
    // clock (the access log's flush, the collector's and the compiler's background jobs) settles to that pace.
    for (const { s } of up) await fixedRequests(`http://127.0.0.1:${s.port}${s.path}`, s.host, o.requests);
    for (const { child } of up) await waitIdle(child.pid, 60_000);
    for (let w = 0; w < o.windows; w++) {
      for (const { s, child, prefix } of w % 2 === 0 ? up : [...up].reverse()) {
        const pid = String(child.pid);
        execFileSync('callgrind_control', ['-z', pid], { stdio: 'ignore' });
        await fixedRequests(`http://127.0.0.1:${s.port}${s.path}`, s.host, o.requests);
        execFileSync('callgrind_control', ['-d', pid], { stdio: 'ignore' });
        const t = lastDump(dir, prefix);
        const per = (...events: string[]) => events.reduce((a, e) => a + (t.get(e) ?? 0), 0) / o.requests;
        const win = { ir: per('Ir'), d1: per('D1mr', 'D1mw'), ll: per('ILmr', 'DLmr', 'DLmw') };
        (result.get(s.name) ?? result.set(s.name, []).get(s.name)!).push(win);
        process.stderr.write(`  window ${w + 1} / ${s.name}: ${win.ir.toFixed(0)} instructions, ${win.d1.toFixed(0)} D1 and ${win.ll.toFixed(1)} LL misses per answer\n`);
      }
    }
    return result;
  } finally {
    await Promise.all(up.map(({ child }) => stopProcess(child)));
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * One line comparing server `a` against `b` from {@link countPerAnswer}'s windows. Over all windows: every answer's
 * share of what each server did in them, bursts included (the optimising compiler recompiling a function, a full
 * collection: each takes some windows of either server to several times the quiet count, so a median of the
 * ratios within a window only tells which server had the burst). The quietest window of each: the cost of an
 * answer without them.
 */
export function compareCounts(label: string, a: Window[], b: Window[]): string {
  const sum = (w: Window[], k: keyof Window) => w.reduce((s, x) => s + x[k], 0);
  const least = (w: Window[], k: keyof Window) => Math.min(...w.map((x) => x[k]));
  const pct = (x: number) => `${x >= 1 ? '+' : ''}${((x - 1) * 100).toFixed(1)} %`;
  const line = (what: string, k: keyof Window, digits: number) =>
    `  ${what}: over all windows ${(sum(a, k) / a.length).toFixed(digits)} against ${(sum(b, k) / b.length).toFixed(digits)} (${pct(sum(a, k) / sum(b, k))}); ` +
    `quietest window ${least(a, k).toFixed(digits)} against ${least(b, k).toFixed(digits)} (${pct(least(a, k) / least(b, k))})`;
  return [
    `${label}, per answer (${a.length} windows each):`,
    line('instructions', 'ir', 0),
    line('first-level data cache misses', 'd1', 0),
    line('last-level cache misses (8 MiB simulated)', 'll', 1),
  ].join('\n');
}
