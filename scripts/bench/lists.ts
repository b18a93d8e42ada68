/**
 * Mailing-list benchmark: one post to a list of 10,000 members (default),
 * timed from the SMTP 250 for the post until every copy (one per member,
 * VERP envelope sender, through the durable queue) reached a bare
 * smtp-server used as `smtp.relay`; copies/s and the suite's RSS (before,
 * peak, growth). Targets: ≤ 10 s, RSS growth ≤ 100 MB.
 *
 * The suite and the sink run in child processes of their own, so the
 * figures are the suite's alone.
 *
 *   node --import tsx scripts/bench/lists.ts [--members 10000]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import nodemailer from 'nodemailer';
import { rssMiB } from './lib.ts';

const SELF = fileURLToPath(import.meta.url);

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i === -1 ? fallback : Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be a positive whole number`);
  return v;
}

async function serveSuite(relay: string, members: number): Promise<void> {
  const { writeConfig } = await import('../../test/helpers/suite.ts');
  const { startSuite } = await import('../../src/main.ts');
  const { createLogger } = await import('../../src/core/log.ts');
  const { openState } = await import('../../src/state/index.ts');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-bench-'));
  const { configDir, dataDir } = writeConfig(dir, {
    main: { smtp: { listen: ['127.0.0.1:0'], relay, queue: { concurrency: 100 } } },
    tenants: { 'bench.test': { domains: ['bench.test'], mail: { lists: { news: { owner: 'owner@remote.test', posting: 'open' } } } } },
  });
  // Members are imported straight into state (as `makewaves list add --no-confirm` does).
  const state = openState(dataDir);
  state.lists.transaction(() => {
    for (let i = 0; i < members; i++) state.lists.addMember('bench.test', 'news', `member${i}@remote${i % 50}.test`, 'single', Date.now());
  });
  state.close();
  const suite = await startSuite({ configDir, watch: false, log: createLogger({ level: 'warn' }) });
  process.stdout.write(`port ${new URL(suite.urls.smtp![0]!).port}\n`);
  process.on('SIGTERM', () =>
    void suite.stop(1000).then(() => {
      rmSync(dir, { recursive: true, force: true });
      process.exit(0);
    }),
  );
}

interface Child {
  proc: ChildProcess;
  port: number;
  count: () => number;
  stop(): Promise<void>;
}

/** Starts `script` in a child process; it prints `port N` once listening and, for the sink, `count N` as messages arrive. */
function start(script: string, args: string[]): Promise<Child> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, ['--import', 'tsx', script, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let count = 0;
    let buf = '';
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const m = /^(port|count) (\d+)$/.exec(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (m?.[1] === 'port') resolve(child(Number(m[2])));
        if (m?.[1] === 'count') count = Number(m[2]);
      }
    });
    proc.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}`)));
    const child = (port: number): Child => ({
      proc,
      port,
      count: () => count,
      stop: () =>
        new Promise((r) => {
          proc.removeAllListeners('exit');
          if (proc.exitCode !== null) return r();
          const hard = setTimeout(() => proc.kill('SIGKILL'), 10_000);
          proc.once('exit', () => {
            clearTimeout(hard);
            r();
          });
          proc.kill('SIGTERM');
        }),
    });
  });
}

async function main(): Promise<void> {
  const members = arg('members', 10_000);
  // The relay sink is the SMTP benchmark's bare smtp-server (it counts what it receives).
  const sink = await start(path.join(path.dirname(SELF), 'smtp.ts'), ['--serve', 'bare']);
  let suite: Child | undefined;
  try {
    suite = await start(SELF, ['--role', 'suite', `smtp://127.0.0.1:${sink.port}`, String(members)]);
    const before = rssMiB(suite.proc.pid);
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(suite!.proc.pid))), 50);
    const client = nodemailer.createTransport({ host: '127.0.0.1', port: suite.port, ignoreTLS: true, name: 'client.test' });
    const body = `From: poster@remote.test\r\nTo: news@bench.test\r\nSubject: bench\r\n\r\n${`${'x'.repeat(78)}\r\n`.repeat(12)}`;
    const t0 = performance.now();
    await client.sendMail({ envelope: { from: 'poster@remote.test', to: ['news@bench.test'] }, raw: body });
    client.close();
    const deadline = Date.now() + 120_000;
    while (sink.count() < members && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const secs = (performance.now() - t0) / 1000;
    clearInterval(sampler);
    peak = Math.max(peak, rssMiB(suite.proc.pid));
    const got = sink.count();
    console.log(`\n## lists: one post to ${members} members, until every copy reached the relay\n`);
    console.log('| copies | seconds | copies/s | RSS before MiB | RSS peak MiB | growth MiB |');
    console.log('|-------:|--------:|---------:|---------------:|-------------:|-----------:|');
    console.log(`| ${got} | ${secs.toFixed(2)} | ${(got / secs).toFixed(0)} | ${before.toFixed(0)} | ${peak.toFixed(0)} | ${(peak - before).toFixed(0)} |`);
    // The target is in MB (10^6 bytes); the table is in MiB.
    const growthMB = ((peak - before) * 1048576) / 1e6;
    const ok = got === members && secs <= 10 && growthMB <= 100;
    console.log(`\ntargets (all ${members} in ≤ 10 s, growth ≤ 100 MB; here ${growthMB.toFixed(0)} MB): ${ok ? 'met' : 'NOT met'}`);
    if (got < members) process.exitCode = 1;
  } finally {
    await suite?.stop();
    await sink.stop();
  }
}

const role = process.argv.indexOf('--role');
if (role === -1) await main();
else await serveSuite(process.argv[role + 2]!, Number(process.argv[role + 3]));
