import type { Logger } from '../core/log.ts';
import type { SpawnSpec } from './sandbox.ts';
import { Worker, type WorkerLimits } from './worker.ts';

export interface PoolLimits extends WorkerLimits {
  perTenant: number;
  total: number;
  queue: number;
  requestsPerProcess: number;
  idleMs: number;
}

interface Pool {
  key: string;
  /** The tenant: `perTenant` counts the processes of all its pools together. */
  group: string;
  spec: SpawnSpec;
  idle: Worker[];
  live: number;
  waiters: Array<{ resolve: (w: Worker | undefined) => void; timer: NodeJS.Timeout }>;
  /** Set by a reload: its processes end after their current run. */
  retired: boolean;
}

/**
 * Warm handler processes, one pool per tenant and kind (suite handlers and
 * a tenant's own handlers never share a process; nor do two tenants). A
 * process serves one run at a time. Per tenant (its pools together) at most
 * `perTenant` processes, across tenants at most `total`; beyond either, up
 * to `queue` requests per pool wait (at most one run timeout) for a
 * process. Whatever does not fit is refused (the caller answers 503).
 */
export class Pools {
  private readonly pools = new Map<string, Pool>();
  private live = 0;
  private readonly groupLive = new Map<string, number>();
  private readonly rssTimer: NodeJS.Timeout;
  private readonly all = new Set<Worker>();
  private readonly owner = new Map<Worker, Pool>();
  /** Per tenant: classic CGI scripts running now (see claim). */
  private readonly claimed = new Map<string, number>();
  private readonly claimWaiters: Array<{ group: string; resolve: (ok: boolean) => void; timer: NodeJS.Timeout }> = [];

  constructor(
    private limits: PoolLimits,
    private readonly log: Logger,
  ) {
    // RSS watch: --max-old-space-size bounds the JS heap only; Buffers and
    // native memory are caught here.
    this.rssTimer = setInterval(() => {
      for (const w of this.all) {
        const rss = w.rss();
        if (rss !== undefined && rss > this.limits.memory) {
          this.log.info({ pool: w.pool, rss, limit: this.limits.memory }, 'handler process over its memory limit; killed');
          w.kill('memory');
        } else if (w.idleTooBusy()) {
          // Work left running after its answer (a timer loop): nobody waits for it, nobody should pay for it.
          this.log.info({ pool: w.pool }, 'idle handler process kept using the CPU; killed');
          this.forget(w);
          w.kill();
        }
      }
    }, 100);
    this.rssTimer.unref();
  }

  /** Limits for processes started from now on. */
  setLimits(limits: PoolLimits): void {
    this.limits = limits;
  }

  /** Processes alive now (for tests and metrics). */
  get size(): number {
    return this.live;
  }

  /** Processes of `group` in the middle of a run now. */
  running(group: string): number {
    let n = this.claimed.get(group) ?? 0;
    for (const w of this.all) if (w.busy && this.owner.get(w)?.group === group) n++;
    return n;
  }

  /**
   * A process for `key`, started from `spec` when none is idle. Resolves
   * undefined when the limits leave no room within the run timeout.
   */
  acquire(key: string, group: string, spec: SpawnSpec): Promise<Worker | undefined> {
    let pool = this.pools.get(key);
    if (!pool) {
      pool = { key, group, spec, idle: [], live: 0, waiters: [], retired: false };
      this.pools.set(key, pool);
    }
    // Processes started from now on get the latest command line (the grants may have changed).
    pool.spec = spec;
    const idle = pool.idle.pop();
    if (idle) {
      clearTimeout(idle.idleTimer);
      return Promise.resolve(idle);
    }
    if (this.groupRoom(pool.group) && this.makeRoom()) return Promise.resolve(this.start(pool));
    if (pool.waiters.length >= this.limits.queue) return Promise.resolve(undefined);
    const p = pool;
    return new Promise((resolve) => {
      const waiter = {
        resolve,
        timer: setTimeout(() => {
          p.waiters.splice(p.waiters.indexOf(waiter), 1);
          resolve(undefined);
          // A slot frees within one run timeout (runs are killed then); the second is slack for the start.
        }, this.limits.timeoutMs + 1000),
      };
      p.waiters.push(waiter);
    });
  }

  /**
   * Room for one process outside the pools (a classic CGI script, started
   * for one run): counted against `perTenant` and `total` like a warm
   * one, evicting an idle one if need be. Without room, up to `queue`
   * requests per tenant wait (at most one run timeout) as for a pool;
   * false when none comes. Every true is followed by exactly one
   * {@link unclaim}.
   */
  claim(group: string): Promise<boolean> {
    if (this.tryClaim(group)) return Promise.resolve(true);
    if (this.claimWaiters.filter((w) => w.group === group).length >= this.limits.queue) return Promise.resolve(false);
    return new Promise((resolve) => {
      const waiter = {
        group,
        resolve,
        timer: setTimeout(() => {
          this.claimWaiters.splice(this.claimWaiters.indexOf(waiter), 1);
          resolve(false);
        }, this.limits.timeoutMs + 1000),
      };
      this.claimWaiters.push(waiter);
    });
  }

  private tryClaim(group: string): boolean {
    if (!this.groupRoom(group) || !this.makeRoom()) return false;
    this.live++;
    this.groupLive.set(group, (this.groupLive.get(group) ?? 0) + 1);
    this.claimed.set(group, (this.claimed.get(group) ?? 0) + 1);
    return true;
  }

  /** The process of a {@link claim} has ended: its room goes to whoever waits. */
  unclaim(group: string): void {
    this.live--;
    const n = (this.groupLive.get(group) ?? 1) - 1;
    if (n === 0) this.groupLive.delete(group);
    else this.groupLive.set(group, n);
    const c = (this.claimed.get(group) ?? 1) - 1;
    if (c === 0) this.claimed.delete(group);
    else this.claimed.set(group, c);
    this.serveWaiters();
  }

  /** Gives a process back after a run; `reusable` false (or too many runs) retires it. */
  release(w: Worker, reusable: boolean): void {
    const pool = this.owner.get(w);
    if (!pool || pool.retired || !reusable || !w.alive || w.runs >= this.limits.requestsPerProcess) {
      this.forget(w);
      // Retired after its quota of runs: a clean close (SIGKILL if it lingers); after a failure: SIGKILL now.
      if (reusable) w.close();
      else w.kill();
      this.serveWaiters();
      return;
    }
    const waiter = pool.waiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.resolve(w);
      return;
    }
    if (this.someoneWaits()) {
      // Another pool waits for room (the tenant's other kind, or another tenant under `total`): this process makes way.
      this.forget(w);
      w.close();
      this.serveWaiters();
      return;
    }
    pool.idle.push(w);
    w.markIdle();
    w.idleTimer = setTimeout(() => {
      this.forget(w);
      w.close();
    }, this.limits.idleMs);
    w.idleTimer.unref();
  }

  /** Retires every pool (after a reload): idle processes end now, busy ones after their run. */
  retireAll(): void {
    for (const key of [...this.pools.keys()]) this.retire(key);
  }

  /**
   * Retires one pool (its handler files changed): idle processes end now,
   * busy ones after their run; requests already waiting stay queued for
   * the fresh pool that takes its place.
   */
  retire(key: string): void {
    const pool = this.pools.get(key);
    if (!pool) return;
    pool.retired = true;
    for (const w of [...pool.idle]) {
      this.forget(w);
      w.close();
    }
    this.pools.delete(key);
    if (pool.waiters.length > 0) {
      const fresh: Pool = { ...pool, idle: [], live: 0, waiters: pool.waiters, retired: false };
      this.pools.set(key, fresh);
      this.serveWaiters();
    }
  }

  /** Ends every process: closes stdin, then SIGKILL after graceMs. Never rejects. */
  async stop(graceMs: number): Promise<void> {
    clearInterval(this.rssTimer);
    for (const w of this.claimWaiters.splice(0)) {
      clearTimeout(w.timer);
      w.resolve(false);
    }
    for (const pool of this.pools.values()) {
      for (const w of pool.waiters.splice(0)) {
        clearTimeout(w.timer);
        w.resolve(undefined);
      }
      for (const w of pool.idle) clearTimeout(w.idleTimer);
    }
    const alive = [...this.all];
    for (const w of alive) w.close();
    const all = Promise.all(alive.map((w) => w.exited));
    const within = (ms: number) =>
      new Promise<void>((resolve) => {
        const t = setTimeout(resolve, ms);
        void all.then(() => {
          clearTimeout(t);
          resolve();
        });
      });
    await within(graceMs);
    for (const w of alive) w.kill();
    await within(2000);
  }

  private start(pool: Pool): Worker {
    pool.live++;
    this.live++;
    this.groupLive.set(pool.group, (this.groupLive.get(pool.group) ?? 0) + 1);
    const w = new Worker(pool.spec, pool.key, this.limits, this.log, (dead) => {
      this.all.delete(dead);
      const stderr = dead.takeStderr();
      if (stderr) this.log.info({ pool: dead.pool, stderr }, 'handler process wrote to stderr');
      this.forget(dead);
      this.owner.delete(dead);
      this.serveWaiters();
    });
    this.all.add(w);
    this.owner.set(w, pool);
    return w;
  }

  private forget(w: Worker): void {
    if (!w.counted) return;
    w.counted = false;
    clearTimeout(w.idleTimer);
    this.live--;
    const pool = this.owner.get(w);
    if (!pool) return;
    pool.live--;
    const n = (this.groupLive.get(pool.group) ?? 1) - 1;
    if (n === 0) this.groupLive.delete(pool.group);
    else this.groupLive.set(pool.group, n);
    const i = pool.idle.indexOf(w);
    if (i !== -1) pool.idle.splice(i, 1);
  }

  /** After a process left, starts processes for waiters as far as the limits allow. */
  private serveWaiters(): void {
    for (const pool of this.pools.values()) {
      while (pool.waiters.length > 0 && this.groupRoom(pool.group) && this.makeRoom()) {
        const waiter = pool.waiters.shift()!;
        clearTimeout(waiter.timer);
        waiter.resolve(this.start(pool));
      }
    }
    for (let i = 0; i < this.claimWaiters.length; ) {
      const waiter = this.claimWaiters[i]!;
      if (!this.tryClaim(waiter.group)) {
        i++;
        continue;
      }
      this.claimWaiters.splice(i, 1);
      clearTimeout(waiter.timer);
      waiter.resolve(true);
    }
  }

  private someoneWaits(): boolean {
    for (const pool of this.pools.values()) if (pool.waiters.length > 0) return true;
    return this.claimWaiters.length > 0;
  }

  /** True when `group` may have one more process, retiring an idle one of its own if need be. */
  private groupRoom(group: string): boolean {
    return (this.groupLive.get(group) ?? 0) < this.limits.perTenant || this.evictIdle(group);
  }

  /** True when one more process fits under `total`, evicting an idle one of any pool if need be. */
  private makeRoom(): boolean {
    return this.live < this.limits.total || this.evictIdle(undefined);
  }

  /** Ends one idle process (of `group`, or of any pool); false when there is none. */
  private evictIdle(group: string | undefined): boolean {
    for (const pool of this.pools.values()) {
      if (group !== undefined && pool.group !== group) continue;
      const w = pool.idle.shift();
      if (w) {
        this.forget(w);
        w.kill();
        return true;
      }
    }
    return false;
  }
}
