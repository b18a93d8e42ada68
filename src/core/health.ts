import { statfsSync } from 'node:fs';
import type { HealthProblem, HealthReporter } from './contracts.ts';

export interface HealthStatus {
  status: 'ok' | 'degraded' | 'down';
  problems: HealthProblem[];
}

/** When permanent delivery failures make the suite degraded: within `windowMs`, at least `min` and at least `share` of the attempts. */
export const PERM_FAILURES = { windowMs: 60 * 60_000, min: 5, share: 0.5 } as const;
/** A certificate that expires within this many days makes the suite degraded. */
export const CERT_WARN_DAYS = 14;
/** The data folder's file system fuller than this makes the suite degraded. */
export const DISK_FULL_SHARE = 0.9;

/**
 * The suite's health: problems services report as they happen (set/clear by
 * key), and probes evaluated when someone asks (certificates, disk). `down`
 * when any problem is `down`, else `degraded` when there is any, else `ok`.
 */
export class Health implements HealthReporter {
  private readonly reported = new Map<string, { problem: HealthProblem; since: number; afterMs: number }>();
  private readonly probes: Array<() => HealthProblem[]> = [];
  /** Delivery outcomes of the window: [time, permanent?]. */
  private deliveries: Array<[number, boolean]> = [];

  constructor(private readonly now: () => number = Date.now) {}

  set(key: string, problem: (Omit<HealthProblem, 'key'> & { afterMs?: number }) | undefined): void {
    if (!problem) {
      this.reported.delete(key);
      return;
    }
    const { afterMs = 0, ...rest } = problem;
    const since = this.reported.get(key)?.since ?? this.now();
    this.reported.set(key, { problem: { key, ...rest }, since, afterMs });
  }

  delivery(status: 'sent' | 'temp' | 'perm'): void {
    const t = this.now();
    this.deliveries.push([t, status === 'perm']);
    if (this.deliveries.length > 10_000 || this.deliveries[0]![0] < t - PERM_FAILURES.windowMs) this.prune(t);
  }

  /** Adds a check run on every {@link check} (it must be cheap: a few stat calls). */
  probe(fn: () => HealthProblem[]): void {
    this.probes.push(fn);
  }

  check(): HealthStatus {
    const now = this.now();
    const problems = [...this.reported.values()].filter((r) => now - r.since >= r.afterMs).map((r) => r.problem);
    for (const p of this.probes) {
      try {
        problems.push(...p());
      } catch (err) {
        problems.push({ key: 'probe', severity: 'degraded', message: `a health check failed: ${(err as Error).message}` });
      }
    }
    const perm = this.permanentFailures();
    if (perm) problems.push(perm);
    const status = problems.some((p) => p.severity === 'down') ? 'down' : problems.length > 0 ? 'degraded' : 'ok';
    return { status, problems };
  }

  private prune(t: number): void {
    const from = t - PERM_FAILURES.windowMs;
    this.deliveries = this.deliveries.filter(([at]) => at >= from).slice(-10_000);
  }

  private permanentFailures(): HealthProblem | undefined {
    this.prune(this.now());
    const total = this.deliveries.length;
    const perm = this.deliveries.filter(([, p]) => p).length;
    if (perm < PERM_FAILURES.min || perm < total * PERM_FAILURES.share) return undefined;
    const minutes = PERM_FAILURES.windowMs / 60_000;
    return {
      key: 'mail-permanent-failures',
      severity: 'degraded',
      message: `${perm} of ${total} delivery attempts in the last ${minutes} minutes failed permanently (see makewaves queue and the log)`,
    };
  }
}

/** The data folder's disk above {@link DISK_FULL_SHARE}, as a problem. */
export function diskProblems(dir: string): HealthProblem[] {
  const s = statfsSync(dir);
  const used = s.blocks - s.bfree;
  const share = used / Math.max(1, used + s.bavail);
  if (share <= DISK_FULL_SHARE) return [];
  return [{ key: 'disk', severity: 'degraded', message: `the disk of ${dir} is ${Math.round(share * 100)} % full (over ${DISK_FULL_SHARE * 100} %)` }];
}
