import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { Logger } from '../core/log.ts';
import type { Registry, Tenant } from '../core/registry.ts';
import { TenantCgroups, type CgroupFinding } from '../lib/cgroup.ts';
import { nativeDir } from '../lib/paths.ts';
import { compileBoxInit, ForkBox, frame, type BoxInit, type RunRequest } from './forkbox.ts';
import { LaunchedProcess, routeBoxFrames } from './launched.ts';
import { forkBoxSpec, tenantCgroupLimits, type SandboxCapabilities, type SpawnOptions, type SpawnSpec } from './sandbox.ts';

/**
 * Persistent script boxes started by the suite itself (not root: no
 * launcher, every tenant's box built by the suite's own user, or by
 * cgi.user when root without the launcher): the same boxes and box-init as
 * the launcher's, both sockets held here. One box per tenant and what it
 * is made of (`key`); each run a LaunchedProcess fed by the box's frames.
 */
export class LocalForkBoxes {
  private readonly boxes = new Map<string, ForkBox>();
  private readonly runs = new Map<number, LaunchedProcess>();
  private seq = 0;

  constructor(
    private idleMs: number,
    private readonly log: Logger,
  ) {}

  setIdle(ms: number): void {
    this.idleMs = ms;
  }

  /** One run in the tenant's box (started now with `boxSpec` when it has none open). */
  start(key: string, boxSpec: () => SpawnSpec, tenant: string, req: RunRequest): ChildProcess {
    let box = this.boxes.get(key);
    if (!box?.open) {
      const spec = boxSpec();
      const made: ForkBox = new ForkBox(spec, this.idleMs, {
        ended: (id, _status, why) => {
          // Its exit status comes on the data socket; a run that never began is failed here.
          if (why === undefined) return;
          const run = this.runs.get(id);
          this.runs.delete(id);
          run?.fail(why);
        },
      }, this.log);
      made.proc.on('exit', () => this.boxes.get(key) === made && this.boxes.delete(key));
      routeBoxFrames(made.data, tenant, process.getuid?.() ?? 0, this.runs);
      this.boxes.set(key, made);
      box = made;
    }
    const id = ++this.seq;
    const into = box;
    const run: LaunchedProcess = new LaunchedProcess(() => {
      if (run.box) run.box.socket.write(frame(id, 'K'));
      else into.kill(id);
    });
    run.tenant = tenant;
    run.runId = id;
    this.runs.set(id, run);
    try {
      box.run(id, req);
    } catch (err) {
      this.runs.delete(id);
      queueMicrotask(() => run.fail((err as Error).message));
    }
    return run.asChild();
  }

  /** Every box takes no new run and ends once its runs are over (a reload, a stop). */
  retireAll(): void {
    for (const b of this.boxes.values()) b.retire();
    this.boxes.clear();
  }
}

/**
 * What the suite starts itself when there is no root launcher: each
 * tenant's cgroup below the delegated cgroup v2 (found at start) and the
 * persistent script boxes, built with box-init (compiled at start).
 */
export class LocalRuns {
  /** The delegated cgroup v2 tenants' runs go below (found at start), or why rlimits alone hold them. */
  cgroup: CgroupFinding = { ok: false, why: 'not looked for yet' };
  private readonly tenantCgroups = new TenantCgroups(() => this.cgroup);
  /** box-init, for persistent script boxes; or why each run gets a box (set at start, when there is a box). */
  boxInit: BoxInit | undefined;
  private readonly boxes: LocalForkBoxes;

  constructor(
    private readonly current: () => Registry,
    private readonly log: Logger,
  ) {
    this.boxes = new LocalForkBoxes(current().config.main.cgi.idleTimeout * 1000, log);
  }

  /** Compiles box-init (in the package, or in the data folder when the package is read-only). */
  prepareBoxInit(): BoxInit {
    const here = compileBoxInit(nativeDir());
    this.boxInit = here.ok || /no C compiler/.test(here.why) ? here : compileBoxInit(path.join(this.current().config.main.dataDir, 'box-init'));
    return this.boxInit;
  }

  /** The tenant's cgroup.procs (made with the limits now), when a cgroup v2 is delegated. */
  cgroupOf(t: Tenant): { cgroup?: string } {
    const procs = this.tenantCgroups.procsOf(t.id, tenantCgroupLimits(this.current().config.main.cgi));
    return procs ? { cgroup: procs } : {};
  }

  /** A script run in the tenant's persistent box (`whole`: the script's whole environment). */
  run(caps: SandboxCapabilities, tenant: string, box: Omit<SpawnOptions, 'reads'> & { argv: string[]; init: string }, whole: Record<string, string>): SpawnSpec {
    const cfg = this.current().config.main.cgi;
    const file = box.argv[box.argv.length - 1]!;
    const limits = { cpu: cfg.timeout + 1, data: cfg.memory, fsize: cfg.scratchFileMax, nofile: 256, tmp: cfg.scratchFileMax };
    const key = [tenant, ...box.folders, box.scratch].join('\0');
    const client = { start: () => this.boxes.start(key, () => forkBoxSpec(caps, box), tenant, { cwd: path.dirname(file), argv: box.argv, env: whole, limits }) };
    return { command: '', args: [], cwd: '', forks: true, launch: { client, ask: { tenant, kind: 'script', name: path.basename(file), env: {} } } };
  }

  /** Every box ends once its runs are over (a stop). */
  retireAll(): void {
    this.boxes.retireAll();
  }

  /**
   * Follows a reload: the tenant, its folders or limits may have changed, so each box ends once its runs are
   * over; removed tenants' cgroups go (`cgroups`: false when the launcher looks after its own).
   */
  reload(next: Registry, cgroups: boolean): void {
    this.boxes.retireAll();
    this.boxes.setIdle(next.config.main.cgi.idleTimeout * 1000);
    if (!cgroups) return;
    for (const left of this.tenantCgroups.reload(next.tenants.keys())) this.log.warn(left, 'a removed tenant\'s cgroup is still in use: tried again at the next reload');
  }
}
