import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** The cgroup v2 controllers a tenant's cgroup needs: memory.max, pids.max, cpu.max. */
export const CGROUP_CONTROLLERS = ['cpu', 'memory', 'pids'] as const;

export type CgroupFinding = { ok: true; dir: string } | { ok: false; why: string };

/**
 * A cgroup v2 delegated to this process: its own cgroup or the one above
 * it (systemd's `Delegate=` puts the service in a leaf below its
 * delegated cgroup), writable here, whose `cgroup.subtree_control`
 * enables cpu, memory and pids for its children. Where there is none,
 * why (cgroup v1 or hybrid, not writable, controllers not delegated).
 * `mount` and `self` (the text of /proc/self/cgroup) are for tests.
 */
export function findDelegatedCgroup(opts: { mount?: string; self?: string } = {}): CgroupFinding {
  const mount = opts.mount ?? '/sys/fs/cgroup';
  if (!existsSync(path.join(mount, 'cgroup.controllers'))) {
    return { ok: false, why: `no cgroup v2 at ${mount} (cgroup v1, or v1 and v2 side by side: the controllers are v1's)` };
  }
  let self: string;
  try {
    self = opts.self ?? readFileSync('/proc/self/cgroup', 'utf8');
  } catch {
    return { ok: false, why: 'this process\'s cgroup is unknown (/proc/self/cgroup unreadable)' };
  }
  const own = /^0::(\/.*)$/m.exec(self)?.[1];
  if (own === undefined) return { ok: false, why: 'this process is in no cgroup v2 (no 0:: line in /proc/self/cgroup)' };
  const ownDir = path.join(mount, own);
  const tried: string[] = [];
  for (const dir of own === '/' ? [ownDir] : [ownDir, path.dirname(ownDir)]) {
    let enabled: string[];
    try {
      enabled = readFileSync(path.join(dir, 'cgroup.subtree_control'), 'utf8').trim().split(/\s+/).filter(Boolean);
      accessSync(dir, constants.W_OK);
      accessSync(path.join(dir, 'cgroup.subtree_control'), constants.W_OK);
      // Moving a process below it takes write access to the common ancestor's cgroup.procs.
      accessSync(path.join(dir, 'cgroup.procs'), constants.W_OK);
    } catch {
      tried.push(`${dir} is not writable by this process`);
      continue;
    }
    const missing = CGROUP_CONTROLLERS.filter((c) => !enabled.includes(c));
    if (missing.length === 0) return { ok: true, dir };
    tried.push(`${dir} does not enable ${missing.join(', ')} for its children (cgroup.subtree_control: "${enabled.join(' ')}")`);
  }
  return { ok: false, why: `no delegated cgroup v2: ${tried.join('; ')}` };
}

export interface CgroupLimits {
  /** memory.max, bytes. */
  memory: number;
  /** pids.max: processes and threads. */
  pids: number;
  /** cpu.max: CPUs' worth of time (1 = one core). */
  cpus: number;
}

/**
 * Makes (or sets again) the child cgroup `name` of the delegated `dir`
 * with `limits`; returns its cgroup.procs, which a process writes its own
 * pid to, to join it before it starts anything.
 */
export function childCgroup(dir: string, name: string, limits: CgroupLimits): string {
  const child = path.join(dir, name);
  mkdirSync(child, { recursive: true });
  writeFileSync(path.join(child, 'memory.max'), String(limits.memory));
  writeFileSync(path.join(child, 'pids.max'), String(limits.pids));
  writeFileSync(path.join(child, 'cpu.max'), `${Math.round(limits.cpus * 100_000)} 100000`);
  return path.join(child, 'cgroup.procs');
}

/** What holds each run's limits, in the words of the start-up log and `makewaves check`. */
export function limitsNote(cgroup: CgroupFinding): string {
  return cgroup.ok
    ? `rlimits per process, and per tenant a cgroup v2 below ${cgroup.dir} (makewaves-<tenant>: memory.max cgi.memory × cgi.perTenant, pids.max cgi.tenantProcesses, cpu.max one CPU)`
    : `rlimits per process only (RLIMIT_DATA, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE, RLIMIT_NPROC per tenant uid as root): ${cgroup.why}`;
}

/** Longest tenant cgroup name: cgroup names are file names (255 bytes at most), and short ones read better. */
const MAX_NAME = 64;

/**
 * The cgroup name of tenant `id`: makewaves-<id>, or, when that is longer
 * than 64 characters, its first 40 and a hash of the whole id (a tenant id
 * may be a domain of 253 characters: mkdir said ENAMETOOLONG).
 */
export function tenantCgroupName(id: string): string {
  const plain = `makewaves-${id}`;
  if (plain.length <= MAX_NAME) return plain;
  return `makewaves-${id.slice(0, 40)}-${createHash('sha256').update(id).digest('hex').slice(0, 12)}`;
}

/**
 * Each tenant's cgroup below a delegated cgroup v2, made (with the limits
 * of the config now) at its first run and again after clear() (a reload:
 * limits may have changed). One for the server and the root launcher.
 */
export class TenantCgroups {
  private readonly made = new Map<string, string>();

  constructor(private readonly finding: () => CgroupFinding) {}

  /** The tenant's cgroup.procs; undefined without a delegated cgroup v2. */
  procsOf(tenant: string, limits: CgroupLimits): string | undefined {
    const found = this.finding();
    if (!found.ok) return undefined;
    let procs = this.made.get(tenant);
    if (procs === undefined) {
      procs = childCgroup(found.dir, tenantCgroupName(tenant), limits);
      this.made.set(tenant, procs);
    }
    return procs;
  }

  /**
   * Forgets what was made, and removes the cgroups of tenants no longer in
   * `tenants`; returns those that could not go (processes still in them:
   * EBUSY) with why, to be tried again at the next reload.
   */
  reload(tenants: Iterable<string>): Array<{ dir: string; why: string }> {
    this.made.clear();
    const found = this.finding();
    if (!found.ok) return [];
    const keep = new Set([...tenants].map(tenantCgroupName));
    const left: Array<{ dir: string; why: string }> = [];
    let names: string[];
    try {
      names = readdirSync(found.dir);
    } catch (err) {
      return [{ dir: found.dir, why: (err as Error).message }];
    }
    for (const name of names) {
      if (!name.startsWith('makewaves-') || keep.has(name)) continue;
      const dir = path.join(found.dir, name);
      try {
        // A cgroup goes with rmdir alone (its files are the kernel's), and only once no process is left in it.
        rmdirSync(dir);
      } catch (err) {
        left.push({ dir, why: (err as NodeJS.ErrnoException).code ?? (err as Error).message });
      }
    }
    return left;
  }
}
