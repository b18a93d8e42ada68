import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { EventEmitter, once } from 'node:events';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { createAdminService } from '../../../src/admin/index.ts';
import { LAUNCHER_RETRY_AFTER, createCgi } from '../../../src/cgi/index.ts';
import { LauncherClient } from '../../../src/cgi/launched.ts';
import type { SandboxCapabilities } from '../../../src/cgi/sandbox.ts';
import { loadConfig } from '../../../src/core/config/load.ts';
import { Health } from '../../../src/core/health.ts';
import { startAll, stopAll, type Service } from '../../../src/core/lifecycle.ts';
import { createLogger } from '../../../src/core/log.ts';
import { Metrics } from '../../../src/core/metrics.ts';
import { Registry } from '../../../src/core/registry.ts';
import { startSuite } from '../../../src/main.ts';
import { createHttpService } from '../../../src/http/index.ts';
import { openState, type State } from '../../../src/state/index.ts';
import { call } from '../../helpers/cgi.ts';
import { writeConfig } from '../../helpers/suite.ts';

// A launcher that does not become ready (test/fixtures/launcher/wedged.mjs, a real child process over the real
// channel) must not hold the suite's start, nor a handler request, forever; /healthz says the start is not over.

const WEDGED = path.resolve(import.meta.dirname, '../../fixtures/launcher/wedged.mjs');
/** A machine with a box: the gateway takes the launcher's road (no handler runs in these tests). */
const caps: SandboxCapabilities = { permissionFlag: '--permission', box: { bwrap: '/usr/bin/bwrap', noNestedUserns: true }, nice: undefined, drop: undefined, prlimit: undefined };

/** Log lines, parsed, with an event per line so a test can await one. */
function recorder() {
  const lines: Array<Record<string, unknown>> = [];
  const seen = new EventEmitter();
  const log = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) {
          const line = JSON.parse(l) as Record<string, unknown>;
          lines.push(line);
          seen.emit('line', line);
        }
        cb();
      },
    }),
  });
  /** The first line (so far or to come) with message `msg` (or that `msg` is true of). */
  const line = (msg: string | ((l: Record<string, unknown>) => boolean)) =>
    new Promise<Record<string, unknown>>((resolve) => {
      const is = typeof msg === 'string' ? (l: Record<string, unknown>) => l.msg === msg : msg;
      const now = lines.find(is);
      if (now) return resolve(now);
      const on = (l: Record<string, unknown>) => {
        if (!is(l)) return;
        seen.off('line', on);
        resolve(l);
      };
      seen.on('line', on);
    });
  return { log, lines, line };
}

/** A service whose start() also resolves `url` with its first URL. */
function listening(svc: Service): { svc: Service; url: Promise<string> } {
  let told: (u: string) => void = () => undefined;
  const url = new Promise<string>((resolve) => (told = resolve));
  return {
    svc: {
      ...svc,
      start: async () => {
        const u = await svc.start();
        told(u[0]!);
        return u;
      },
    },
    url,
  };
}

let cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

/** The handler gateway over `launcher`, the HTTP service and the admin listener, from a temp config (`cgi` merged into its cgi:). */
function compose(launcher: LauncherClient, log: ReturnType<typeof recorder>['log'], cgi: Record<string, unknown> = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-launcher-start-'));
  const { configDir } = writeConfig(dir, { main: { admin: { listen: '127.0.0.1:0' }, cgi }, tenants: { 'a.test': { domains: ['a.test'], cgi: true } } });
  const registry = new Registry(loadConfig(configDir));
  const state: State = openState(registry.config.main.dataDir);
  const health = new Health();
  const metrics = new Metrics();
  const gateway = createCgi({ registry, log, metrics, sandbox: () => caps, launcher: true, launcherStarted: launcher, cgroup: () => ({ ok: false, why: 'none in this test' }) });
  const http = listening(createHttpService({ registry, state, log, gateway: gateway.gateway }));
  const admin = listening(createAdminService({ registry, metrics: new Metrics(), health, log, services: () => ['cgi', 'http', 'admin'] }));
  const services = [gateway.service, http.svc, admin.svc];
  cleanup.push(async () => {
    // Told it is ready first: a test that failed before that leaves no process behind (it ignores the end of its channel till then).
    launcher.sendRaw('say ready');
    await stopAll(services, 500);
    launcher.stop();
    state.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { services, health, metrics, http: http.url, admin: admin.url };
}

/** Whether a TCP connection to `url`'s port is accepted. */
function accepts(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(Number(new URL(url).port), '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe('a handler launcher that does not become ready', () => {
  it('fails the start once its time is up: a line naming the launcher and what it waited for, the other services stopped, the launcher ended', async () => {
    const { log, lines, line } = recorder();
    const launcher = new LauncherClient('/etc/makewaves-test', '/nowhere', log, { entry: WEDGED, readyWithinMs: 300 });
    const { services, health, http } = compose(launcher, log);
    const start = startAll(services, log, undefined, health);
    await expect(start).rejects.toThrow('the handler launcher did not say it was ready within 0.3 s of its start (it was loading the configuration folder /etc/makewaves-test)');
    expect(lines).toContainEqual(expect.objectContaining({ svc: 'cgi', msg: 'cgi failed to start; stopping the others', err: expect.stringMatching(/^the handler launcher did not say it was ready/) }));
    // The others were stopped: the HTTP listener that answered meanwhile is closed.
    expect(await accepts(await http)).toBe(false);
    // Killed, though it ignores the end of its channel (the start was root's: it still may).
    const { pid } = await line('handler launcher not ready in time: ended');
    await line('handler launcher ended');
    expect(() => process.kill(pid as number, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
  });

  it('answers a handler request that waits longer than cgi.timeout with 503 and Retry-After, and logs who and why', async () => {
    const { log, lines } = recorder();
    const launcher = new LauncherClient('/etc/makewaves-test', '/nowhere', log, { entry: WEDGED });
    const { services, health, metrics, http } = compose(launcher, log, { timeout: 0.2 });
    const start = startAll(services, log, undefined, health);
    start.catch(() => undefined); // awaited below, once the launcher is ready
    const r = await call(await http, 'a.test', '/cgi-bin/echo?x=1');
    expect(r.status).toBe(503);
    expect(r.headers['retry-after']).toBe(String(LAUNCHER_RETRY_AFTER));
    expect(lines).toContainEqual(
      expect.objectContaining({
        msg: 'handler request refused: the handler launcher is not ready',
        tenant: 'a.test',
        handler: 'echo',
        remote: '127.0.0.1',
        why: 'the handler launcher was still loading the configuration after cgi.timeout (0.2 s)',
      }),
    );
    expect(await metrics.text()).toMatch(/^makewaves_handler_runs_total\{tenant="a\.test",result="starting"\} 1$/m);
    launcher.sendRaw('say ready');
    await start;
  });
});

describe('/healthz while a service is still starting', () => {
  it('says degraded, naming what is awaited, until the launcher is ready; then ok', async () => {
    const { log } = recorder();
    const launcher = new LauncherClient('/etc/makewaves-test', '/nowhere', log, { entry: WEDGED });
    const { services, health, admin } = compose(launcher, log);
    const start = startAll(services, log, undefined, health);
    start.catch(() => undefined); // awaited below, once the launcher is ready
    const healthz = async () => {
      const res = await fetch(`${await admin}/healthz`);
      return { code: res.status, body: (await res.json()) as { status: string; problems?: unknown[] } };
    };
    expect(await healthz()).toMatchObject({
      code: 200,
      body: { status: 'degraded', problems: [{ key: 'starting:cgi', severity: 'degraded', message: 'cgi is still starting: the handler launcher is loading the configuration' }] },
    });
    launcher.sendRaw('say ready');
    await start;
    const after = await healthz();
    expect(after).toMatchObject({ code: 200, body: { status: 'ok' } });
    expect(after.body.problems).toBeUndefined();
  });
});

describe.skipIf(process.getuid?.() !== 0)('the suite started as root, its launcher slow to become ready', () => {
  function suiteConfig(): string {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-launcher-start-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    return writeConfig(dir, { main: { admin: { listen: '127.0.0.1:0' } }, tenants: { 'a.test': { domains: ['a.test'], cgi: true } } }).configDir;
  }

  it('/healthz says starting:cgi until the launcher is ready, then ok', async () => {
    const { log, line } = recorder();
    const configDir = suiteConfig();
    const starting = startSuite({ configDir, log, watch: false, sandbox: () => caps, launcher: { entry: WEDGED } });
    cleanup.push(async () => {
      // Told it is ready if the test failed before: the launcher must not outlive the test.
      writeFileSync(path.join(configDir, 'say-ready'), '');
      await (await starting.catch(() => undefined))?.stop(500);
    });
    const { url } = await line((l) => l.svc === 'admin' && typeof l.url === 'string');
    const healthz = async () => (await fetch(`${url as string}/healthz`)).json() as Promise<{ status: string; problems?: unknown[] }>;
    expect(await healthz()).toMatchObject({ status: 'degraded', problems: [{ key: 'starting:cgi', message: 'cgi is still starting: the handler launcher is loading the configuration' }] });
    writeFileSync(path.join(configDir, 'say-ready'), '');
    await starting;
    expect(await healthz()).toEqual(expect.objectContaining({ status: 'ok' }));
  });

  it("fails its start once the launcher's time is up, naming it, and the launcher is ended", async () => {
    const { log, line } = recorder();
    const starting = startSuite({ configDir: suiteConfig(), log, watch: false, sandbox: () => caps, launcher: { entry: WEDGED, readyWithinMs: 300 } });
    const { pid } = await line('handler launcher not ready in time: ended');
    await expect(starting).rejects.toThrow(/^the handler launcher did not say it was ready within 0\.3 s of its start \(it was loading the configuration folder .*config\)$/);
    await line('handler launcher ended');
    expect(() => process.kill(pid as number, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
  });
});

// The keeper (src/cgi/keeper-main.ts) starts an ended launcher again; one started again that does not become ready in
// its time is ended and started once more, with backoff, rather than holding every handler request for good.
describe('a launcher started again by its keeper', () => {
  it('is ended when it is not ready in time, and started once more until one is', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mw-keeper-'));
    const l = new LauncherClient(dir, '/nowhere', createLogger({ level: 'silent' }), { entry: WEDGED, readyWithinMs: 1_000 });
    try {
      l.sendRaw('say ready');
      await l.ready;
      const relaunches: Array<[string, number]> = [];
      const relaunched = (n: number) =>
        new Promise<void>((resolve) => {
          const on = (why: string, attempt: number) => {
            relaunches.push([why, attempt]);
            if (relaunches.length < n) return;
            l.events.off('relaunching', on);
            resolve();
          };
          l.events.on('relaunching', on);
        });
      const first = l.launcherPid!;
      // The first end: the next one waits for 'say ready', which nobody sends: its keeper ends it after 1 s.
      const twice = relaunched(2);
      process.kill(first, 'SIGKILL');
      await twice;
      expect(relaunches).toEqual([
        ['it ended (SIGKILL)', 1],
        ['it ended (SIGKILL)', 2],
      ]);
      expect(l.restarting).toMatchObject({ why: 'it ended (SIGKILL)', attempt: 2 });
      // Told by the file this time (wedged.mjs): the next start is ready, and the launcher is a new process.
      const up = once(l.events, 'ready');
      writeFileSync(path.join(dir, 'say-ready'), '');
      await up;
      expect(l.restarting).toBeUndefined();
      expect(l.ended).toBeUndefined();
      expect(l.launcherPid).not.toBe(first);
      expect(alive(first)).toBe(false);
    } finally {
      await l.stop(2_000);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// The server's process ended (killed, crashed) while its launcher is wedged: the kernel ends the launcher too
// (setpriv --pdeathsig), though it ignores the end of its channel and, as root, a server dropped to `user:` could not
// signal it. Before that a wedged launcher stayed behind for good.
describe('a wedged handler launcher whose server is gone', () => {
  it('is ended by the kernel with the server’s process', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mw-orphan-'));
    const script = `
      const { LauncherClient } = await import(${JSON.stringify(path.resolve(import.meta.dirname, '../../../src/cgi/launched.ts'))});
      const { createLogger } = await import(${JSON.stringify(path.resolve(import.meta.dirname, '../../../src/core/log.ts'))});
      const l = new LauncherClient(${JSON.stringify(dir)}, '/nowhere', createLogger({ level: 'silent' }), { entry: ${JSON.stringify(WEDGED)} });
      // Its keeper first (the server's child), then the launcher the keeper forked, once the keeper has told its pid.
      const told = setInterval(() => {
        if (l.launcherPid === undefined) return;
        clearInterval(told);
        console.log(JSON.stringify({ keeper: l.pid, launcher: l.launcherPid, diesWithServer: l.diesWithServer }));
      }, 5);
      setInterval(() => undefined, 1 << 30);
    `;
    const server = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      // The keeper's own log lines (a descriptor the server inherited, closed) may come first on the same stdout.
      let text = '';
      server.stdout!.setEncoding('utf8');
      while (!/^\{"keeper".*\n/m.test(text)) text += ((await once(server.stdout!, 'data')) as [string])[0];
      const told = JSON.parse(/^\{"keeper".*$/m.exec(text)![0]) as { keeper: number; launcher: number; diesWithServer: boolean };
      expect(told.diesWithServer).toBe(true);
      expect(() => process.kill(told.keeper, 0)).not.toThrow();
      expect(() => process.kill(told.launcher, 0)).not.toThrow();
      server.kill('SIGKILL');
      await once(server, 'exit');
      // Not our children: no event tells their end, so ask the kernel until they are gone (bounded by the test's timeout).
      while (alive(told.keeper) || alive(told.launcher)) await new Promise((r) => setImmediate(r));
      expect([alive(told.keeper), alive(told.launcher)]).toEqual([false, false]);
    } finally {
      server.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// util-linux before 2.33 (RHEL 8's 2.32, say) has a setpriv without --pdeathsig: it refuses the option and exits 1,
// and a launcher started through it never runs. One that lacks it starts the launcher as before, without the kernel's
// watch (diesWithServer false), rather than leaving every handler refused.
describe('a setpriv without --pdeathsig', () => {
  it('starts the launcher without it', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mw-setpriv-'));
    const bin = path.join(dir, 'bin');
    mkdirSync(bin);
    // As util-linux 2.32's setpriv answers: its help names no --pdeathsig, and the option is refused.
    writeFileSync(
      path.join(bin, 'setpriv'),
      [
        '#!/bin/sh',
        'if [ "$1" = "--help" ]; then printf "Usage:\\n setpriv [options] <program> [<argument>...]\\n\\n --nnp, --no-new-privs        disallow granting new privileges\\n"; exit 0; fi',
        'for a in "$@"; do [ "$a" = "--pdeathsig" ] && { echo "setpriv: unrecognized option \'--pdeathsig\'" >&2; exit 1; }; done',
        'echo "setpriv: this test\'s setpriv only refuses" >&2; exit 1',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    writeFileSync(path.join(dir, 'say-ready'), '');
    const was = process.env.PATH;
    process.env.PATH = `${bin}:${was ?? ''}`;
    let l: LauncherClient | undefined;
    try {
      l = new LauncherClient(dir, '/nowhere', createLogger({ level: 'silent' }), { entry: WEDGED, readyWithinMs: 10_000 });
      await l.ready;
      expect(l.diesWithServer).toBe(false);
    } finally {
      process.env.PATH = was;
      await l?.stop(1_000);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    // ESRCH: gone (a zombie of init's would still answer; the launcher's parent was the server, so it is reaped).
    return false;
  }
}
