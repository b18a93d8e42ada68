import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boxMissing } from '../../helpers/cgi.ts';
import { cli } from '../../helpers/cli.ts';
import { rawRequest } from '../../helpers/http.ts';
import { type MailSink, startSink } from '../../helpers/mailsink.ts';
import { BIN, serveChild } from '../../helpers/serve.ts';
import { waitFor, writeConfig } from '../../helpers/suite.ts';

// The privilege drop can only be tested as root (CI runs as root); elsewhere these tests are skipped.
const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

let dir: string;
let configDir: string;
let sink: MailSink;

function serve(config: string, spawnAs?: number) {
  return serveChild(config, spawnAs ? { uid: spawnAs, gid: spawnAs } : {});
}

/** The real and effective uid/gid and the supplementary groups of a process, from /proc. */
function ids(pid: number): { uids: number[]; gids: number[]; groups: number[] } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => (new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number);
  return { uids: field('Uid'), gids: field('Gid'), groups: field('Groups') };
}

beforeAll(async () => {
  sink = await startSink();
  dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-priv-'));
  // mkdtemp makes a 0700 folder; the service account must be able to pass through it.
  chmodSync(dir, 0o755);
  ({ configDir } = writeConfig(dir, {
    main: { user: 'nobody', group: 'nogroup', smtp: { listen: ['127.0.0.1:0'], relay: sink.url }, admin: { listen: '127.0.0.1:0' } },
    tenants: { 'a.test': { domains: ['a.test'], forms: { recipients: ['owner@remote.test'] }, mail: { forward: { info: ['owner@remote.test'] } } } },
    files: { 'a.test/index.html': 'served after the drop' },
  }));
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await sink?.close();
});

describe.skipIf(!isRoot)('privilege drop (as root)', () => {
  it('makewaves init gives <data> and <sites> to the service user and lets its group read the config', () => {
    const r = spawnSync(process.execPath, [BIN, 'init', '--config', configDir], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    for (const d of [path.join(dir, 'data'), path.join(dir, 'sites'), path.join(dir, 'sites', 'a.test', 'index.html')]) {
      expect(statSync(d).uid, d).toBe(NOBODY);
    }
    expect(statSync(path.join(dir, 'data')).mode & 0o777).toBe(0o750);
    const tenantFile = statSync(path.join(configDir, 'tenants', 'a.test.yaml'));
    expect([tenantFile.uid, tenantFile.gid, tenantFile.mode & 0o777]).toEqual([0, NOBODY, 0o640]);
  });

  it.skipIf(boxMissing)('binds as root, then serves HTTP, SMTP and forms as the configured user; reloads and stops cleanly', async () => {
    const p = serve(configDir);
    try {
      const url = await waitFor(() => /http listening on (http:\/\/[\d.:]+)/.exec(p.out())?.[1], 20_000, 'the HTTP listener');
      const smtp = await waitFor(() => /smtp listening on smtp:\/\/[\d.]+:(\d+)/.exec(p.out())?.[1], 5_000, 'the SMTP listener');
      await waitFor(() => p.out().includes('running as nobody (65534:65534) from now on'), 5_000, 'the drop');
      const { uids, gids, groups } = ids(p.child.pid!);
      expect(uids).toEqual([NOBODY, NOBODY, NOBODY, NOBODY]); // real, effective, saved, file system
      expect(gids).toEqual([NOBODY, NOBODY, NOBODY, NOBODY]);
      expect(groups).toEqual([NOBODY]);
      // The run file is written after the drop, by the service user who removes it at the stop; status finds the server by it.
      const runFile = path.join(dir, 'data', 'run', 'makewaves.json');
      await waitFor(() => existsSync(runFile), 5_000, 'the run file');
      const run = statSync(runFile);
      expect([run.uid, run.mode & 0o777]).toEqual([NOBODY, 0o640]);
      expect(JSON.parse(readFileSync(runFile, 'utf8'))).toMatchObject({ pid: p.child.pid });
      const status = await cli('status', '--config', configDir);
      expect(status.out).toMatch(new RegExp(`^makewaves (ok|degraded): pid ${p.child.pid},`));

      expect((await rawRequest(url, '/', { host: 'a.test' })).body.toString()).toBe('served after the drop');

      // Mail is spooled and delivered by the unprivileged process.
      const { createTransport } = await import('nodemailer');
      await createTransport({ host: '127.0.0.1', port: Number(smtp), ignoreTLS: true }).sendMail({
        envelope: { from: 's@elsewhere.test', to: ['info@a.test'] },
        raw: 'Subject: relay test\r\n\r\nhello\r\n',
      });
      await waitFor(() => sink.messages.some((m) => m.raw.toString().includes('relay test')), 10_000, 'the mail at the relay');
      // Handlers are started by the root launcher, each tenant's with its own uid from cgi.uids; the server itself is nobody.
      // Logged once the launcher is ready, which may come after the drop and the first answers.
      const line = await waitFor(() => p.out().split('\n').find((l) => l.includes('form handler sandbox ready')), 15_000, 'the sandbox line');
      const ready = JSON.parse(line) as Record<string, unknown>;
      expect(ready.user).toMatch(/each tenant its own uid from cgi.uids 200000-299999, set by a root launcher/);
      const tenantUid = (ready.uids as Record<string, number>)['a.test']!;
      expect(tenantUid >= 200000 && tenantUid <= 299999).toBe(true);
      expect(String(ready.box)).toMatch(/bwrap: own user, mount, PID/);
      // A form post runs a sandboxed handler spawned by the unprivileged suite and queues its mail.
      const form = new URLSearchParams({ name: 'V', email: 'v@visitor.test', subject: 'after the drop', message: 'hi' }).toString();
      const res = await rawRequest(url, '/cgi-bin/formmail', { host: 'a.test', 'content-type': 'application/x-www-form-urlencoded' }, 'POST', form);
      expect(res.status, res.body.toString()).toBe(200);
      await waitFor(() => sink.messages.some((m) => m.raw.toString().includes('after the drop')), 10_000, 'the form mail at the relay');

      // The launcher ended as the OOM killer ends a process: its keeper (root, the server's child) starts it again, which
      // the server, nobody by now, could not; a form posted meanwhile waits for it and is handled.
      const childrenOf = (pid: number) => readdirSync(`/proc/${pid}/task`).flatMap((t) => readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' ').filter(Boolean).map(Number));
      const named = (pids: number[], name: string) => pids.filter((c) => readFileSync(`/proc/${c}/cmdline`, 'utf8').includes(name));
      const [keeper] = named(childrenOf(p.child.pid!), 'keeper-main');
      const [launcher] = named(childrenOf(keeper!), 'launcher-main');
      expect(ids(keeper!).uids[0]).toBe(0);
      expect(ids(launcher!).uids[0]).toBe(0);
      process.kill(launcher!, 'SIGKILL');
      // A run in flight at that moment fails with it (502); one asked once the server knows waits for the next launcher.
      await waitFor(() => p.out().includes('"msg":"handler launcher ended unasked: it is started again; handler requests wait for it"'), 5_000, 'the end told');
      const again = new URLSearchParams({ name: 'V', email: 'v@visitor.test', subject: 'after the launcher ended', message: 'hi' }).toString();
      const res2 = await rawRequest(url, '/cgi-bin/formmail', { host: 'a.test', 'content-type': 'application/x-www-form-urlencoded' }, 'POST', again);
      expect(res2.status, res2.body.toString()).toBe(200);
      await waitFor(() => sink.messages.some((m) => m.raw.toString().includes('after the launcher ended')), 10_000, 'the second form mail at the relay');
      expect(p.out()).toContain('"msg":"handler launcher started again: handlers run again"');
      expect(childrenOf(keeper!)).not.toContain(launcher);

      // The scratch folder belongs to the tenant's uid, not to the server's.
      const scratch = statSync(path.join(dir, 'data', 'cgi', 'a.test'));
      expect([scratch.uid, scratch.mode & 0o777]).toEqual([tenantUid, 0o700]);

      // Files the server writes after the drop belong to the service user.
      expect(statSync(path.join(dir, 'data', 'makewaves.db')).uid).toBe(NOBODY);

      // The config is still readable after the drop: a reload takes a new domain.
      writeFileSync(path.join(configDir, 'tenants', 'a.test.yaml'), 'domains: [a.test, b.test]\nforms: { recipients: [owner@remote.test] }\n');
      p.child.kill('SIGHUP');
      await waitFor(async () => (await rawRequest(url, '/', { host: 'b.test' })).status === 200, 5_000, 'the reload');

      // A tenant added by root with the CLI: its web root belongs to the service user, its file is readable by its group,
      // and the unprivileged server picks it up.
      const add = spawnSync(process.execPath, [BIN, 'tenant', 'add', 'c.test', '--domain', 'c.test', '--config', configDir], { encoding: 'utf8' });
      expect(add.stderr).toBe('');
      expect(statSync(path.join(dir, 'sites', 'c.test')).uid).toBe(NOBODY);
      expect(statSync(path.join(dir, 'sites', 'c.test', 'index.html')).uid).toBe(NOBODY);
      const added = statSync(path.join(configDir, 'tenants', 'c.test.yaml'));
      expect([added.uid, added.gid, added.mode & 0o777]).toEqual([0, NOBODY, 0o640]);
      await waitFor(async () => (await rawRequest(url, '/', { host: 'c.test' })).status === 200, 5_000, 'the added tenant');
    } finally {
      p.child.kill('SIGTERM');
    }
    expect(await p.exited).toBe(0);
    expect(existsSync(path.join(dir, 'data', 'run', 'makewaves.json'))).toBe(false);
  });

  it('refuses to start when the configured user does not exist', async () => {
    const bad = mkdtempSync(path.join(os.tmpdir(), 'makewaves-priv-bad-'));
    const { configDir: c } = writeConfig(bad, { main: { user: 'no-such-user-here' }, tenants: {} });
    const p = serve(c);
    expect(await p.exited).toBe(1);
    expect(p.err()).toMatch(/^makewaves: user "no-such-user-here" \(user: in makewaves\.yaml\) does not exist/m);
    rmSync(bad, { recursive: true, force: true });
  });

  it('refuses to start when it is neither root nor the configured user', async () => {
    const bad = mkdtempSync(path.join(os.tmpdir(), 'makewaves-priv-other-'));
    chmodSync(bad, 0o755);
    const { configDir: c } = writeConfig(bad, { main: { user: 'daemon' }, tenants: {} });
    const p = serve(c, NOBODY);
    expect(await p.exited).toBe(1);
    expect(p.err()).toMatch(/user: daemon is configured, but makewaves runs as uid 65534, neither root nor daemon: start it as root/);
    rmSync(bad, { recursive: true, force: true });
  });
});
