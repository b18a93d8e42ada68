import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/core/log.ts';
import { startSuite, type Suite } from '../../../src/main.ts';
import { boxMissing, call } from '../../helpers/cgi.ts';
import { writeConfig } from '../../helpers/suite.ts';

// Started as root, the suite forks a small keeper, which forks the handler launcher. A launcher that ends unasked
// (the OOM killer, a crash, a stray kill) is started again by the keeper: the server, dropped to `user:`, could not
// start a root process itself. Before the keeper, every handler request was refused until the operator restarted.

const isRoot = process.getuid?.() === 0;
const UID_JS = "module.exports = function (cgi) { cgi.stdout.write('Content-Type: text/plain\\r\\n\\r\\nuid ' + process.getuid() + '\\n'); };\n";

describe.skipIf(!isRoot || boxMissing)('a handler launcher that ends unasked', () => {
  let dir: string;
  let suite: Suite;
  const lines: Array<Record<string, unknown>> = [];
  const waiting: Array<{ is: (l: Record<string, unknown>) => boolean; then: (l: Record<string, unknown>) => void }> = [];
  /** The next log line (from now on) that `is` is true of. */
  const next = (is: (l: Record<string, unknown>) => boolean) => new Promise<Record<string, unknown>>((then) => waiting.push({ is, then }));
  const launcherProblems = () => suite.health.check().problems.filter((p) => p.key === 'launcher');
  const get = async () => {
    const r = await call(suite.urls.http![0]!, 'a.test', '/cgi-bin/uid');
    return `${r.status} ${(await r.text()).trim()}`;
  };
  /** Processes of `uid` now, but zombies (whatever reaps orphans here may be slow to). */
  const live = (uid: number) =>
    readdirSync('/proc').filter((pid) => {
      try {
        const status = readFileSync(`/proc/${pid}/status`, 'latin1');
        return Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) === uid && !/^State:\s+Z/m.test(status);
      } catch {
        return false; // not a process, or ended while we looked
      }
    });
  const endedUnasked = (l: Record<string, unknown>) => l.msg === 'handler launcher ended unasked: it is started again; handler requests wait for it';
  const startedAgain = (l: Record<string, unknown>) => l.msg === 'handler launcher started again: handlers run again';

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-keeper-'));
    chmodSync(dir, 0o755);
    const { configDir } = writeConfig(dir, {
      main: { cgi: { uids: '232040-232049', timeout: 10 } },
      tenants: { 'a.test': { domains: ['a.test'], cgi: true } },
      files: { 'a.test/cgi-bin/uid.js': UID_JS, 'a.test/cgi-bin/slow.sh': '#!/bin/sh\nsleep 30\n' },
    });
    const log = createLogger({
      level: 'info',
      destination: {
        write: (text: string) => {
          const l = JSON.parse(text) as Record<string, unknown>;
          lines.push(l);
          for (const w of waiting.splice(0)) (w.is(l) ? w.then(l) : waiting.push(w));
        },
      },
    });
    suite = await startSuite({ configDir, log, watch: false });
  });
  afterAll(async () => {
    await suite?.stop(500);
    rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
  });

  it('is started again by its keeper; a request made meanwhile waits for it and is served', async () => {
    const uid = await get();
    expect(uid).toMatch(/^200 uid 23204\d$/);
    const launcher = suite.launcher()!;
    const first = launcher.launcherPid!;
    expect(first).toBeGreaterThan(0);
    expect(first).not.toBe(launcher.pid);
    // Ended as the OOM killer ends a process.
    const told = next(endedUnasked);
    process.kill(first, 'SIGKILL');
    expect(await told).toMatchObject({ level: 50, why: 'it ended (SIGKILL)', attempt: 1 });
    // Said by /healthz until it is up again, and a request now waits for it rather than being refused.
    expect(launcherProblems()).toEqual([
      expect.objectContaining({ severity: 'degraded', message: 'the handler launcher ended unasked (it ended (SIGKILL)) and is being started again (attempt 1); handler requests wait for it' }),
    ]);
    const again = next(startedAgain);
    expect(await get()).toBe(uid);
    await again;
    expect(launcher.launcherPid).not.toBe(first);
    expect(launcherProblems()).toEqual([]);
    expect(launcher.ended).toBeUndefined();
  });

  it('one that cannot start again (its config broken since) is tried again with backoff, and runs once the file is mended', async () => {
    const file = path.join(dir, 'config', 'tenants', 'b.test.yaml');
    writeFileSync(file, 'domains: [b.test\n');
    const launcher = suite.launcher()!;
    const first = next(endedUnasked);
    process.kill(launcher.launcherPid!, 'SIGKILL');
    expect(await first).toMatchObject({ why: 'it ended (SIGKILL)' });
    // Its next start fails on the broken file, named; the one after waits longer.
    const failed = await next(endedUnasked);
    expect(failed.why).toMatch(/^it could not start again: .*b\.test\.yaml/s);
    expect(failed.inMs as number).toBeGreaterThan(100);
    expect(launcherProblems()[0]?.message).toMatch(/^the handler launcher ended unasked \(it could not start again: .*b\.test\.yaml/s);
    const again = next(startedAgain);
    writeFileSync(file, 'domains: [b.test]\n');
    await again;
    expect(launcherProblems()).toEqual([]);
    expect(await get()).toMatch(/^200 uid 23204\d$/);
  });

  it('leaves no box of the launcher that ended behind: a warm handler process it had started ends too', async () => {
    const uid = Number(/uid (\d+)/.exec(await get())![1]);
    const launcher = suite.launcher()!;
    // The tenant's processes now: its warm handler's box (bwrap and node), maybe a script box started ahead.
    const before = live(uid);
    expect(before.length).toBeGreaterThan(0);
    const up = next(startedAgain);
    process.kill(launcher.launcherPid!, 'SIGKILL');
    await up;
    // Not our children: no event tells their end, so ask the kernel (bounded here, not by the test's timeout).
    const until = Date.now() + 5_000;
    while (before.some((p) => live(uid).includes(p)) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    expect(before.filter((p) => live(uid).includes(p))).toEqual([]);
    expect(await get()).toBe(`200 uid ${uid}`);
  });

  it('ends a run killed before the launcher has started it (its request and its kill in one read)', async () => {
    const uid = Number(/uid (\d+)/.exec(await get())![1]);
    const launcher = suite.launcher()!;
    const sleeping = () => live(uid).filter((pid) => readFileSync(`/proc/${pid}/cmdline`, 'latin1').startsWith('sleep\0'));
    // One write, so one read: the kill comes while the launcher checks the run (an await), before it starts it.
    const refused = new Promise((said) => launcher.events.on('refused', (why: string, id?: number) => id === 9100 && said(why)));
    launcher.sendRaw(`${JSON.stringify({ op: 'run', id: 9100, tenant: 'a.test', kind: 'script', name: 'slow.sh', env: {} })}\n${JSON.stringify({ op: 'kill', id: 9100 })}`);
    expect(await refused).toBe('run 9100 was ended before it started');
    // What the kill missed would be running by now. Its script must not be.
    const until = Date.now() + 2_000;
    while (Date.now() < until && sleeping().length === 0) await new Promise((r) => setTimeout(r, 20));
    expect(sleeping()).toEqual([]);
  });

  it('its keeper ended too is said, and every handler is refused until a restart', async () => {
    const launcher = suite.launcher()!;
    const gone = next((l) => l.msg === 'handler launcher gone: every handler is refused until a restart');
    process.kill(launcher.pid!, 'SIGKILL');
    await gone;
    expect(launcherProblems()).toEqual([expect.objectContaining({ severity: 'degraded', message: expect.stringMatching(/^the handler launcher is gone \(the launcher ended \(SIGKILL\)\)/) })]);
    expect(await get()).toMatch(/^502 /);
    // The launcher ends with its keeper (setpriv --pdeathsig), not left behind as root.
    const pid = launcher.launcherPid!;
    const alive = () => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false; // ESRCH: ended
      }
    };
    while (alive()) await new Promise((r) => setImmediate(r));
    expect(alive()).toBe(false);
  });
});
