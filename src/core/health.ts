import { statfsSync } from 'node:fs';
import net from 'node:net';
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

  /** Adds a check that needs I/O (a connect, say), run by {@link checkAll}; it must finish within a second or two. */
  probeAsync(fn: () => Promise<HealthProblem[]>): void {
    this.asyncProbes.push(fn);
  }

  private readonly asyncProbes: Array<() => Promise<HealthProblem[]>> = [];

  /** {@link check} and the asynchronous probes (what /healthz answers). */
  async checkAll(): Promise<HealthStatus> {
    const extra = await Promise.all(
      this.asyncProbes.map((p) =>
        p().catch((err: Error): HealthProblem[] => [{ key: 'probe', severity: 'degraded', message: `a health check failed: ${err.message}` }]),
      ),
    );
    const { problems } = this.check();
    problems.push(...extra.flat());
    return { status: statusOf(problems), problems };
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
    return { status: statusOf(problems), problems };
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

function statusOf(problems: readonly HealthProblem[]): HealthStatus['status'] {
  return problems.some((p) => p.severity === 'down') ? 'down' : problems.length > 0 ? 'degraded' : 'ok';
}

/** The figures of statfs(2) that {@link diskProblems} reads. */
export interface DiskFigures {
  blocks: number;
  bfree: number;
  bavail: number;
}

/** The data folder's disk above {@link DISK_FULL_SHARE}, as a problem; `statfs` gives the figures (the real call unless told). */
export function diskProblems(dir: string, statfs: (dir: string) => DiskFigures = statfsSync): HealthProblem[] {
  const s = statfs(dir);
  const used = s.blocks - s.bfree;
  const share = used / Math.max(1, used + s.bavail);
  if (share <= DISK_FULL_SHARE) return [];
  return [{ key: 'disk', severity: 'degraded', message: `the disk of ${dir} is ${Math.round(share * 100)} % full (over ${DISK_FULL_SHARE * 100} %)` }];
}

/**
 * Every listener of `urls` (service name → URLs as the services report
 * them) that does not accept a TCP connection within `timeoutMs`, as a
 * `down` problem naming the service and address. A wildcard address is
 * tried on loopback.
 */
export async function listenerProblems(urls: Readonly<Record<string, readonly string[]>>, timeoutMs = 2_000): Promise<HealthProblem[]> {
  const checks: Array<Promise<HealthProblem | undefined>> = [];
  for (const [svc, list] of Object.entries(urls)) {
    for (const u of list) {
      let url: URL;
      try {
        url = new URL(u);
      } catch {
        // Not a URL (nothing a service returns today): nothing to connect to.
        continue;
      }
      if (!url.port) continue;
      const bare = url.hostname.replace(/^\[|\]$/g, '');
      const host = bare === '0.0.0.0' ? '127.0.0.1' : bare === '::' ? '::1' : bare;
      const where = `${url.hostname}:${url.port}`;
      checks.push(
        new Promise((resolve) => {
          const sock = net.connect({ host, port: Number(url.port) });
          const fail = (why: string) => {
            sock.destroy();
            resolve({ key: `listener:${svc}:${where}`, severity: 'down', message: `${svc} is not accepting connections on ${where} (${why})` });
          };
          sock.setTimeout(timeoutMs, () => fail(`no answer within ${timeoutMs} ms`));
          sock.once('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
          sock.once('connect', () => {
            sock.destroy();
            resolve(undefined);
          });
        }),
      );
    }
  }
  return (await Promise.all(checks)).filter((p): p is HealthProblem => p !== undefined);
}
