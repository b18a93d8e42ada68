import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Launcher } from '../../../src/cgi/launcher.ts';
import type { SandboxCapabilities } from '../../../src/cgi/sandbox.ts';
import { createLogger } from '../../../src/core/log.ts';
import { childCgroup, findDelegatedCgroup, limitsNote, TenantCgroups, tenantCgroupName } from '../../../src/lib/cgroup.ts';
import { writeConfig } from '../../helpers/suite.ts';
import { tempDirs } from '../../helpers/tmp.ts';

// Limits per tenant in a cgroup v2, where one is delegated. This machine has
// cgroup v1 only, so the kernel's side (memory.max, pids.max, cpu.max
// enforced) is not tested here: only finding a delegated cgroup (in made-up
// cgroup trees), what is written where, and how a run joins its cgroup.

const tmp = tempDirs('makewaves-cgroup-');

/** A made-up cgroup2 mount: `tree` maps a cgroup path to its cgroup.subtree_control. */
function fakeMount(tree: Record<string, string>): string {
  const mount = tmp();
  writeFileSync(path.join(mount, 'cgroup.controllers'), 'cpuset cpu io memory pids\n');
  for (const [cg, subtree] of Object.entries(tree)) {
    const dir = path.join(mount, cg);
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'cgroup.subtree_control'), subtree);
    writeFileSync(path.join(dir, 'cgroup.procs'), '');
  }
  return mount;
}

describe('findDelegatedCgroup', () => {
  it('finds none without a cgroup2 mount, and says so (this machine: cgroup v1)', () => {
    const r = findDelegatedCgroup({ mount: tmp(), self: '0::/\n' });
    expect(r).toMatchObject({ ok: false, why: expect.stringMatching(/no cgroup v2 at .* \(cgroup v1/) });
    const here = findDelegatedCgroup();
    if (!here.ok) expect(limitsNote(here)).toMatch(/^rlimits per process only .*: /);
  });

  it('takes the cgroup above a service leaf when it enables cpu, memory and pids for its children', () => {
    const mount = fakeMount({ 'svc.service': 'cpu memory pids', 'svc.service/supervisor': '' });
    const r = findDelegatedCgroup({ mount, self: '0::/svc.service/supervisor\n' });
    expect(r).toEqual({ ok: true, dir: path.join(mount, 'svc.service') });
    expect(limitsNote(r)).toMatch(/per tenant a cgroup v2 below .*svc\.service/);
  });

  it('refuses one that does not enable all three controllers, naming what is missing', () => {
    const mount = fakeMount({ 'svc.service': 'cpu', 'svc.service/supervisor': '' });
    const r = findDelegatedCgroup({ mount, self: '0::/svc.service/supervisor\n' });
    expect(r).toMatchObject({ ok: false, why: expect.stringMatching(/does not enable memory, pids for its children \(cgroup.subtree_control: "cpu"\)/) });
    expect(findDelegatedCgroup({ mount, self: '12:cpuacct:/\n' })).toMatchObject({ ok: false, why: expect.stringMatching(/no 0:: line/) });
  });
});

describe('a tenant\'s cgroup', () => {
  it('is made with its limits, and a run joins it before anything else starts (its own pid, then exec)', () => {
    const dir = tmp();
    const procs = childCgroup(dir, 'makewaves-a.test', { memory: 512 * 1024 * 1024, pids: 256, cpus: 1 });
    const cg = path.join(dir, 'makewaves-a.test');
    expect(readFileSync(path.join(cg, 'memory.max'), 'utf8')).toBe(String(512 * 1024 * 1024));
    expect(readFileSync(path.join(cg, 'pids.max'), 'utf8')).toBe('256');
    expect(readFileSync(path.join(cg, 'cpu.max'), 'utf8')).toBe('100000 100000');
    expect(procs).toBe(path.join(cg, 'cgroup.procs'));
    // The launcher's prefix: the same process writes its pid, then becomes the rest of the command line.
    const r = spawnSync('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', procs, '/bin/sh', '-c', 'echo $$'], { encoding: 'utf8' });
    expect(readFileSync(procs, 'utf8').trim()).toBe(r.stdout.trim());
  });

  it('holds every run the launcher builds for the tenant, when a cgroup v2 is delegated', async () => {
    const dir = tmp();
    const cgroups = tmp();
    const { configDir } = writeConfig(dir, {
      main: { cgi: { uids: '241000-241099', perTenant: 3, tenantProcesses: 100 } },
      tenants: { 'a.test': { domains: ['a.test'], cgi: true } },
      files: { 'a.test/cgi-bin/hi.sh': '#!/bin/sh\necho hi\n' },
    });
    const caps: SandboxCapabilities = { permissionFlag: '--permission', box: { bwrap: '/usr/bin/bwrap', noNestedUserns: true }, nice: undefined, drop: undefined, prlimit: undefined };
    const launcher = new Launcher({ configDir, suiteDir: tmp(), log: createLogger({ level: 'silent' }), sandbox: () => caps, cgroup: { ok: true, dir: cgroups } });
    const checked = await launcher.check({ op: 'run', id: 1, tenant: 'a.test', kind: 'script', name: 'hi.sh', env: {} });
    expect(checked.ok).toBe(true);
    if (!checked.ok) return;
    const procs = path.join(cgroups, 'makewaves-a.test', 'cgroup.procs');
    expect([checked.run.spec.command, ...checked.run.spec.args.slice(0, 3)]).toEqual(['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', procs]);
    expect(readFileSync(path.join(cgroups, 'makewaves-a.test', 'memory.max'), 'utf8')).toBe(String(3 * 128 * 1024 * 1024));
    expect(readFileSync(path.join(cgroups, 'makewaves-a.test', 'pids.max'), 'utf8')).toBe('100');
  });
});

describe('tenant cgroups over time', () => {
  it('gives a tenant with a long id a bounded name (a 253-character domain made mkdir fail with ENAMETOOLONG)', () => {
    const dir = tmp();
    const long = `${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.${'d'.repeat(60)}.example`;
    const other = `${long.slice(0, -7)}.test`;
    const cgroups = new TenantCgroups(() => ({ ok: true, dir }));
    const procs = cgroups.procsOf(long, { memory: 1, pids: 1, cpus: 1 })!;
    const name = path.basename(path.dirname(procs));
    expect(name.length).toBeLessThanOrEqual(64);
    expect(name).toBe(tenantCgroupName(long));
    expect(tenantCgroupName(other)).not.toBe(name);
    expect(tenantCgroupName('a.test')).toBe('makewaves-a.test');
  });

  it('removes the cgroups of tenants gone at a reload, and says which it could not (still in use)', () => {
    const dir = tmp();
    for (const n of ['makewaves-a.test', 'makewaves-gone.test', 'makewaves-busy.test', 'other-service']) mkdirSync(path.join(dir, n));
    // A cgroup still holding processes refuses rmdir; here a folder with a file in it does.
    writeFileSync(path.join(dir, 'makewaves-busy.test', 'cgroup.procs'), '123\n');
    const left = new TenantCgroups(() => ({ ok: true, dir })).reload(['a.test']);
    expect(readdirSync(dir).sort()).toEqual(['makewaves-a.test', 'makewaves-busy.test', 'other-service']);
    expect(left).toEqual([{ dir: path.join(dir, 'makewaves-busy.test'), why: 'ENOTEMPTY' }]);
  });
});
