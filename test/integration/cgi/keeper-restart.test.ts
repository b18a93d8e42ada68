import { spawn } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LauncherClient } from '../../../src/cgi/launched.ts';
import { createLogger } from '../../../src/core/log.ts';

// The keeper (src/cgi/keeper-main.ts) with a launcher that starts in an instant (test/fixtures/launcher/flaky.mjs):
// how it is started again, and what the server makes of it, with the keeper's times made short.

const FLAKY = path.resolve(import.meta.dirname, '../../fixtures/launcher/flaky.mjs');
const WEDGED = path.resolve(import.meta.dirname, '../../fixtures/launcher/wedged.mjs');
const isRoot = process.getuid?.() === 0;
const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0)) await c();
});

function launcher(restartMs = { first: 50, most: 30_000, calm: 300 }) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-keeper-restart-'));
  const l = new LauncherClient(dir, '/nowhere', createLogger({ level: 'silent' }), { entry: FLAKY, restartMs });
  cleanup.push(async () => {
    await l.stop(2_000);
    rmSync(dir, { recursive: true, force: true });
  });
  return { l, dir };
}
const relaunching = (l: LauncherClient) => once(l.events, 'relaunching') as Promise<[string, number]>;

describe.skipIf(!isRoot)('the keeper starting a launcher again', () => {
  it('backs off for a launcher that cannot start, even after one that had run a while (no 100 ms loop)', async () => {
    const { l, dir } = launcher();
    await l.ready;
    // Up longer than `calm`: its end counts as a first one.
    await new Promise((r) => setTimeout(r, 400));
    writeFileSync(path.join(dir, 'broken'), '');
    const first = relaunching(l);
    process.kill(l.launcherPid!, 'SIGKILL');
    expect((await first)[1]).toBe(1);
    // Each start again fails at once: never reset to a first end, whatever ran a while before.
    for (const want of [2, 3, 4]) {
      const [why, attempt] = await relaunching(l);
      expect(why).toMatch(/could not start again: .*broken is there/);
      expect(attempt).toBe(want);
    }
  });

  it('a refused reload is no longer said once a launcher started again has loaded the folder as it is', async () => {
    const { l, dir } = launcher();
    await l.ready;
    writeFileSync(path.join(dir, 'refuse-reload'), '');
    const answered = once(l.events, 'reloaded');
    l.reload();
    await answered;
    expect(l.reloadRefused).toBe('refused by the test');
    rmSync(path.join(dir, 'refuse-reload'));
    const up = once(l.events, 'ready');
    process.kill(l.launcherPid!, 'SIGKILL');
    await up;
    expect(l.restarting).toBeUndefined();
    expect(l.reloadRefused).toBeUndefined();
  });

  it('passes no file the server inherited to the launcher (nor so to its boxes)', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-keeper-fds-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    // A server started with a descriptor open beyond its stdio, as a shell, a CI runner or a service manager may
    // leave one (fd 40 here, not close-on-exec): Node's own are all close-on-exec, that one is not.
    const FD = 40;
    const script = `
      const { LauncherClient } = await import(${JSON.stringify(path.resolve(import.meta.dirname, '../../../src/cgi/launched.ts'))});
      const { createLogger } = await import(${JSON.stringify(path.resolve(import.meta.dirname, '../../../src/core/log.ts'))});
      const l = new LauncherClient(${JSON.stringify(dir)}, '/nowhere', createLogger({ level: 'silent' }), { entry: ${JSON.stringify(FLAKY)} });
      await l.ready;
      console.log(JSON.stringify({ keeper: l.pid, launcher: l.launcherPid }));
      setInterval(() => undefined, 1 << 30);
    `;
    const server = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit', ...Array<'ignore'>(FD - 3).fill('ignore'), 'pipe'],
    });
    cleanup.push(() => {
      server.kill('SIGKILL');
    });
    // The keeper's log lines come on the same stdout, the pids after them.
    const out: Array<Record<string, unknown>> = [];
    let rest = '';
    server.stdout!.setEncoding('utf8');
    while (!out.some((l) => 'keeper' in l)) {
      const [text] = (await once(server.stdout!, 'data')) as [string];
      const lines = (rest + text).split('\n');
      rest = lines.pop()!;
      out.push(...lines.filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>));
    }
    const told = out.find((l) => 'keeper' in l) as { keeper: number; launcher: number };
    // Said, with which.
    expect(out).toContainEqual(expect.objectContaining({ svc: 'cgi-keeper', level: 40, fds: expect.arrayContaining([FD]) }));
    const inherited = readlinkSync(`/proc/${server.pid}/fd/${FD}`);
    expect(inherited).toMatch(/^(pipe|socket):/);
    const files = (pid: number) => readdirSync(`/proc/${pid}/fd`).map((fd) => readlinkSync(`/proc/${pid}/fd/${fd}`));
    expect(files(told.keeper)).not.toContain(inherited);
    expect(files(told.launcher)).not.toContain(inherited);
  });

  it('gives the launcher a PATH without folders anyone but root may write', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-keeper-path-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    // A folder the server's account (after its drop) could plant a `setpriv` or `bwrap` in, for a launcher started
    // again as root to run; one writable by its group; one named relative to the working folder.
    const theirs = path.join(dir, 'theirs');
    const group = path.join(dir, 'group');
    mkdirSync(theirs);
    mkdirSync(group);
    chmodSync(group, 0o775);
    chownSync(theirs, 65534, 65534);
    const was = process.env.PATH;
    // A folder not there yet counts as the one above it would: root's alone here, the other account's there.
    process.env.PATH = `${theirs}:${group}:bin:${theirs}/later:${dir}/later:/usr/sbin:/usr/bin:/sbin:/bin`;
    try {
      const { l } = launcher();
      await l.ready;
      const env = readFileSync(`/proc/${l.launcherPid}/environ`, 'latin1').split('\0');
      expect(env.filter((e) => e.startsWith('PATH='))).toEqual([`PATH=${dir}/later:/usr/sbin:/usr/bin:/sbin:/bin`]);
    } finally {
      process.env.PATH = was;
    }
  });

  it('asks a launcher started again to reload when the server reloaded while it was starting', async () => {
    const { l, dir } = launcher();
    await l.ready;
    writeFileSync(path.join(dir, 'hold'), '');
    const starting = relaunching(l);
    process.kill(l.launcherPid!, 'SIGKILL');
    await starting;
    // The server takes a new config now; the launcher starting may have read the folder before it changed.
    l.reload();
    const answered = new Promise((said) => l.events.once('reloaded', () => said('reloaded')));
    rmSync(path.join(dir, 'hold'));
    await once(l.events, 'ready');
    expect(await Promise.race([answered, new Promise((r) => setTimeout(() => r('never asked'), 2_000))])).toBe('reloaded');
  });

  it('a stop while the launcher started again is wedged in its start ends it and the keeper, root, at once', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-keeper-wedged-'));
    writeFileSync(path.join(dir, 'say-ready'), '');
    const l = new LauncherClient(dir, '/nowhere', createLogger({ level: 'silent' }), { entry: WEDGED, restartMs: { first: 10, most: 10, calm: 60_000 } });
    cleanup.push(async () => {
      await l.stop(2_000);
      rmSync(dir, { recursive: true, force: true });
    });
    await l.ready;
    const first = l.launcherPid!;
    // The next one does not say it is ready, nor ends with its channel (as one stuck reading a hung disk).
    rmSync(path.join(dir, 'say-ready'));
    const starting = relaunching(l);
    process.kill(first, 'SIGKILL');
    await starting;
    while (l.launcherPid === first) await new Promise((r) => setImmediate(r));
    const wedged = l.launcherPid!;
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false; // ESRCH: ended
      }
    };
    expect(alive(wedged)).toBe(true);
    const t0 = Date.now();
    await l.stop(10_000);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect([alive(l.pid!), alive(wedged)]).toEqual([false, false]);
  }, 20_000);

  it('tries again when the launcher cannot even be forked (its program gone), rather than waiting for an end that never comes', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-keeper-fork-'));
    // The setpriv the server found (before its drop) is this one: it passes everything to the real one.
    const bin = path.join(dir, 'bin');
    mkdirSync(bin);
    const setpriv = path.join(bin, 'setpriv');
    const script = `#!/bin/sh\nexec /usr/bin/setpriv "$@"\n`;
    writeFileSync(setpriv, script, { mode: 0o755 });
    const was = process.env.PATH;
    process.env.PATH = `${bin}:${was ?? ''}`;
    let l: LauncherClient;
    try {
      l = new LauncherClient(dir, '/nowhere', createLogger({ level: 'silent' }), { entry: FLAKY, restartMs: { first: 50, most: 200, calm: 60_000 } });
    } finally {
      process.env.PATH = was;
    }
    cleanup.push(async () => {
      await l.stop(2_000);
      rmSync(dir, { recursive: true, force: true });
    });
    await l.ready;
    // Gone (a package upgrade in progress, say) when the launcher has to be started again: the fork itself fails.
    rmSync(setpriv);
    const first = relaunching(l);
    process.kill(l.launcherPid!, 'SIGKILL');
    await first;
    const [why] = await relaunching(l);
    expect(why).toMatch(/could not be started: .*ENOENT/);
    // Back: it runs again.
    writeFileSync(setpriv, script, { mode: 0o755 });
    await once(l.events, 'ready');
    expect(l.restarting).toBeUndefined();
  });
});
