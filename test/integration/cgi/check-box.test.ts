import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { boxMissing } from '../../helpers/cgi.ts';
import { cliWith } from '../../helpers/cli.ts';
import { writeConfig } from '../../helpers/suite.ts';

// `makewaves check` looks for the handlers' box as the server does at start:
// without bwrap no handler runs, and check says so, naming the package.

const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-check-box-'));
const { configDir } = writeConfig(dir, { tenants: { 'a.test': { domains: ['a.test'] } } });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('makewaves check and the handlers\' box', () => {
  it('exits 1 and names the Debian package where bwrap is not installed', async () => {
    const empty = mkdtempSync(path.join(dir, 'bin-'));
    const r = await cliWith({ ...process.env, PATH: empty }, 'check', '--config', configDir);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/bwrap not found: handlers \(\/cgi-bin\/\) are refused until the Debian package bubblewrap is installed \(apt-get install bubblewrap\)/);
    expect(r.err).toMatch(/1 problem found/);
  });

  it.skipIf(boxMissing)('exits 0 where bwrap builds its box', async () => {
    const r = await cliWith(process.env, 'check', '--config', configDir);
    expect(r).toMatchObject({ code: 0, err: '' });
    // And says what holds each run's limits: here rlimits alone (this machine has no delegated cgroup v2), and why.
    expect(r.out).toMatch(/note: handler and script limits: (rlimits per process only \(.*\): .+|rlimits per process, and per tenant a cgroup v2 below \S+)/);
  });

  it.skipIf(process.getuid?.() !== 0)('says, as root, that each tenant gets its own uid, and refuses a range too small for the tenants', async () => {
    const r = await cliWith(process.env, 'check', '--config', configDir);
    expect(r.out).toMatch(/note: handlers and scripts run as each tenant's own uid from cgi.uids 200000-299999 \(1 tenants, room for 100000\)/);
    const small = mkdtempSync(path.join(dir, 'small-'));
    const cfg = writeConfig(small, { main: { cgi: { uids: '250000-250000' } }, tenants: { 'a.test': { domains: ['a.test'] }, 'b.test': { domains: ['b.test'] } } });
    const bad = await cliWith(process.env, 'check', '--config', cfg.configDir);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/cgi.uids 250000-250000 holds 1 uids for 2 tenants/);
  });

  it.skipIf(process.getuid?.() !== 0 || boxMissing)('says plainly, run without root, that every tenant\'s handlers run as one uid', () => {
    chmodSync(dir, 0o755);
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, path.resolve('bin/makewaves.js'), 'check', '--config', configDir], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH, HOME: '/tmp' },
    });
    expect(r.stdout).toMatch(/note: not run as root: every tenant's handlers and scripts run as one uid \(65534, this account\), each in its own box \(namespaces still on\)/);
  });
});
