import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/core/log.ts';
import { RUN_FILE } from '../../../src/core/runfile.ts';
import { startSuite, type Suite } from '../../../src/main.ts';
import { runCli } from '../../helpers/cli.ts';
import { startTestSuite, writeConfig, type TestSuite } from '../../helpers/suite.ts';

// The running suite says where it is in <data>/run/makewaves.json, and
// `makewaves status` finds it there: an admin listener on port 0 (the
// kernel's pick) is found without any port chosen ahead by the test.

const open: TestSuite[] = [];
const extra: Suite[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const s of extra.splice(0)) await s.stop(500);
  for (const t of open.splice(0)) await t.stop();
});
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A suite with its admin listener on port 0 (and SMTP, for a second service's listener, unless two share the data folder). */
async function suiteOnPort0(smtp = true): Promise<TestSuite> {
  const main = { admin: { listen: '127.0.0.1:0' }, ...(smtp ? { smtp: { listen: ['127.0.0.1:0'] } } : {}) };
  const t = await startTestSuite({ main, tenants: { 'a.test': { domains: ['a.test'] } } });
  open.push(t);
  return t;
}

const runFile = (dataDir: string) => path.join(dataDir, RUN_FILE);
const readRun = (dataDir: string) => JSON.parse(readFileSync(runFile(dataDir), 'utf8')) as Record<string, unknown>;

/** A pid no process has: a child that has already ended. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  expect(r.status).toBe(0);
  return r.pid!;
}

/** A config folder with no server running from it: admin.listen as given, a run file as given. */
function configWithout(admin: string | undefined, run?: (configDir: string) => Record<string, unknown>): { configDir: string; file: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-runfile-'));
  dirs.push(dir);
  const { configDir, dataDir } = writeConfig(dir, { main: admin ? { admin: { listen: admin } } : {}, tenants: { 'a.test': { domains: ['a.test'] } } });
  const file = runFile(dataDir);
  if (run) {
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, JSON.stringify(run(configDir)));
  }
  return { configDir, file };
}

describe('the run file: where the running suite is', () => {
  it('records the pid, the config folder and every bound address; status finds an admin listener on port 0 by it', async () => {
    const t = await suiteOnPort0();
    const file = runFile(t.dataDir);
    expect(statSync(file).mode & 0o777).toBe(0o640);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o750);
    const run = readRun(t.dataDir);
    const admin = new URL(t.suite.urls.admin![0]!);
    expect(admin.port).not.toBe('0');
    expect(run).toMatchObject({ pid: process.pid, config: path.resolve(t.configDir), admin: admin.host, listeners: { http: t.suite.urls.http, smtp: t.suite.urls.smtp, admin: t.suite.urls.admin } });
    expect(Date.parse(String(run.startedAt))).not.toBeNaN();

    const s = await runCli('status', '--config', t.configDir);
    expect(s.err).toBe('');
    expect(s.code).toBe(0);
    expect(s.out).toMatch(new RegExp(`^makewaves ok: pid ${process.pid}, up \\d+ s, 1 tenants$`, 'm'));
  });

  it('is gone after a clean stop, and status then says there is no server to find', async () => {
    const t = await suiteOnPort0();
    expect(existsSync(runFile(t.dataDir))).toBe(true);
    await t.suite.stop(500);
    expect(existsSync(runFile(t.dataDir))).toBe(false);
    const s = await runCli('status', '--config', t.configDir);
    expect(s.code).toBe(1);
    expect(s.err).toBe(
      `makewaves: no running server found: admin.listen in ${path.join(t.configDir, 'makewaves.yaml')} is port 0 (the kernel picks one, and only the run file says which) and no ${runFile(t.dataDir)}; is it running?\n`,
    );
  });

  it('is not removed by a second suite that did not write it: the later start wins, and stays after the first one stops', async () => {
    // No SMTP: its control socket (<data>/mail.sock) is one per data folder.
    const first = await suiteOnPort0(false);
    const mine = readRun(first.dataDir);
    // A second suite on the same folders: it writes its own run file over the first one's.
    const second = await startSuite({ configDir: first.configDir, log: createLogger({ level: 'silent' }), watch: false });
    extra.push(second);
    const theirs = readRun(first.dataDir);
    expect(theirs.id).not.toBe(mine.id);
    expect(theirs.admin).toBe(new URL(second.urls.admin![0]!).host);
    // The first stops: the file is the second's, so it stays (same pid here: the start's own id tells them apart).
    await first.suite.stop(500);
    expect(readRun(first.dataDir)).toEqual(theirs);
    const s = await runCli('status', '--config', first.configDir);
    expect(s.code).toBe(0);
    await second.stop(500);
    expect(existsSync(runFile(first.dataDir))).toBe(false);
  });

  it('is not touched by a suite whose start fails on the same data folder', async () => {
    const t = await suiteOnPort0(false);
    const before = readFileSync(runFile(t.dataDir), 'utf8');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-runfile-'));
    dirs.push(dir);
    // Its HTTP listener asks for the address the running suite holds: EADDRINUSE, the start fails.
    const { configDir } = writeConfig(dir, {
      main: { data: t.dataDir, sites: t.sitesDir, admin: { listen: '127.0.0.1:0' }, http: { listen: [new URL(t.http).host] } },
      tenants: { 'a.test': { domains: ['a.test'] } },
    });
    await expect(startSuite({ configDir, log: createLogger({ level: 'silent' }), watch: false })).rejects.toThrow(/already in use/);
    expect(readFileSync(runFile(t.dataDir), 'utf8')).toBe(before);
    expect((await runCli('status', '--config', t.configDir)).code).toBe(0);
  });

  it('a stale run file (its pid gone) is ignored, and the message names it and says which address was tried', async () => {
    const pid = deadPid();
    const stale = (configDir: string) => ({ pid, id: 'a1', startedAt: new Date().toISOString(), config: configDir, admin: '127.0.0.1:9', listeners: {} });
    // admin.listen on port 1 (tcpmux: nothing listens there, and no unprivileged process can).
    const fixed = configWithout('127.0.0.1:1', stale);
    const s = await runCli('status', '--config', fixed.configDir);
    expect(s.code).toBe(1);
    expect(s.err).toMatch(/^makewaves: the server does not answer at http:\/\/127\.0\.0\.1:1 \(.+\); is it running\? /);
    expect(s.err).toContain(`(address from admin.listen in ${path.join(fixed.configDir, 'makewaves.yaml')}; ignored ${fixed.file}: stale, its pid ${pid} is not running)\n`);

    const zero = configWithout('127.0.0.1:0', stale);
    const z = await runCli('status', '--config', zero.configDir);
    expect(z.code).toBe(1);
    expect(z.err).toContain(`is port 0 (the kernel picks one, and only the run file says which) and ignored ${zero.file}: stale, its pid ${pid} is not running; is it running?`);
  });

  it("a live process's run file for another config folder, or a damaged one, is ignored with the reason", async () => {
    const other = configWithout(undefined);
    const c = configWithout(undefined, () => ({ pid: process.pid, id: 'b2', startedAt: new Date().toISOString(), config: other.configDir, admin: '127.0.0.1:9', listeners: {} }));
    const s = await runCli('status', '--config', c.configDir);
    expect(s.code).toBe(1);
    expect(s.err).toBe(
      `makewaves: no admin listener in ${c.configDir}/makewaves.yaml (add admin: { listen: "127.0.0.1:8081" }); ignored ${c.file}: its pid ${process.pid} serves another config folder, ${other.configDir}\n`,
    );
    for (const [text, why] of [
      ['{"pid": 1', 'it is not JSON'],
      [JSON.stringify({ pid: process.pid, id: 'c3', startedAt: 'now', config: c.configDir, admin: '192.0.2.1:80', listeners: {} }), 'it is not a run file of makewaves'],
    ]) {
      writeFileSync(c.file, text!);
      expect((await runCli('status', '--config', c.configDir)).err).toContain(`; ignored ${c.file}: ${why}\n`);
    }
  });

  it('found but no admin listener in the running suite: says so, rather than trying an address it never bound', async () => {
    const t = await startTestSuite({ tenants: { 'a.test': { domains: ['a.test'] } } });
    open.push(t);
    expect(readRun(t.dataDir)).not.toHaveProperty('admin');
    const s = await runCli('status', '--config', t.configDir);
    expect(s.code).toBe(1);
    expect(s.err).toMatch(/^makewaves: the server running from .+ \(pid \d+, by .+makewaves\.json\) has no admin listener; add admin: \{ listen: "127\.0\.0\.1:8081" \} to .+makewaves\.yaml and restart it\n$/);
  });
});
