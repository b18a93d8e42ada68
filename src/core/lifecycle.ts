import type { HealthReporter } from './contracts.ts';
import type { Logger } from './log.ts';
import type { Registry } from './registry.ts';

/** A scheduled task a service asks the job runner to run (node-cron syntax). */
export interface Job {
  readonly name: string;
  readonly schedule: string;
  run(): Promise<void> | void;
}

/** The one lifecycle every service shares. */
export interface Service {
  readonly name: string;
  /** Binds sockets; resolves once listening with one URL per listener. Rejects naming host:port on failure. */
  start(): Promise<string[]>;
  /** Stops accepting, lets sessions finish for graceMs, then closes them. Never rejects. */
  stop(graceMs: number): Promise<void>;
  /**
   * Prepares a new registry snapshot: whatever can fail (a setting the
   * service cannot take, what it derives from the snapshot) is done here,
   * and a throw refuses the reload everywhere (no service takes it).
   * Returns the switch to the snapshot, which must not fail; sessions
   * already open keep theirs.
   */
  reload(next: Registry): () => void;
  /** Periodic tasks this service needs (log rotation, rescans). */
  jobs?(): Job[];
  /**
   * Start-up work a service finishes while the services after it start (the
   * root launcher loading the config in its own process). Awaited once every
   * service has started; a rejection fails the start like a failed start().
   */
  ready?(): Promise<void>;
  /**
   * What ready() still waits for, in words ("the handler launcher is loading
   * the configuration"), asked once start() has resolved; undefined: nothing.
   * Health shows it (`starting:<name>`) until ready() settles; a service
   * with ready() and without this is shown as not finished with its start.
   */
  awaiting?(): string | undefined;
}

/**
 * Starts services in order. If one fails, stops the ones already started
 * (in reverse order) and rethrows its error, so the process never runs
 * half a suite. `bound` runs once every service has started and before any
 * `ready()` is awaited (the drop from root: no request is served as root
 * for longer than the starts take); its failure fails the start too.
 * `health` says which services are still starting (a degraded
 * `starting:<name>`, from the end of its start() until its ready() settles):
 * listeners may already answer meanwhile, but not with all they serve.
 */
export async function startAll(services: readonly Service[], log: Logger, bound?: () => void, health?: HealthReporter): Promise<void> {
  const started: Service[] = [];
  const settled = (svc: Service) => health?.set(`starting:${svc.name}`, undefined);
  const failed = async (name: string, err: unknown): Promise<never> => {
    for (const svc of started) settled(svc);
    log.error({ svc: name, err: (err as Error).message }, `${name} failed to start; stopping the others`);
    await stopAll(started, 1000, (svc, e) => log.error({ svc, err: e.message }, `${svc} failed to stop`));
    throw err;
  };
  for (const svc of services) {
    try {
      const urls = await svc.start();
      for (const url of urls) log.info({ svc: svc.name, url }, `${svc.name} listening on ${url}`);
      started.push(svc);
      const awaiting = svc.ready && (svc.awaiting ? svc.awaiting() : 'its start is not finished');
      if (awaiting) health?.set(`starting:${svc.name}`, { severity: 'degraded', message: `${svc.name} is still starting: ${awaiting}` });
    } catch (err) {
      await failed(svc.name, err);
    }
  }
  try {
    bound?.();
  } catch (err) {
    await failed('start', err);
  }
  for (const svc of started) {
    await svc.ready?.().catch((err: unknown) => failed(svc.name, err));
    settled(svc);
  }
}

/**
 * Stops services in reverse order within one shared grace: each gets what
 * is left of `graceMs` (at least a moment to close cleanly), so the whole
 * stop is bounded by about `graceMs`, not by services × `graceMs`.
 * Never rejects: a service that fails to stop is reported to `onError`
 * (the caller logs it) and the others still stop.
 */
export async function stopAll(services: readonly Service[], graceMs: number, onError?: (service: string, err: Error) => void): Promise<void> {
  const deadline = Date.now() + graceMs;
  for (const svc of [...services].reverse()) {
    await svc.stop(Math.max(deadline - Date.now(), 100)).catch((err: Error) => onError?.(svc.name, err));
  }
}

/** What {@link reloadAll} did: `applied` false when a service refused the snapshot and none took it. */
export interface ReloadOutcome {
  applied: boolean;
  /** The services that refused it (nothing applied) or, applied, failed to switch to it. */
  failed: Array<{ service: string; error: string }>;
}

const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/**
 * Hands a validated snapshot to every service, all or nothing: every
 * service prepares it first, and one that refuses (its `reload` throws)
 * leaves every service on the previous snapshot. Only when all prepared
 * does each switch. A switch that throws anyway (a fault of ours: a switch
 * must not fail) is logged and named; it cannot be undone in the others.
 * Health (`reload`) says which happened until a reload every service takes.
 */
export function reloadAll(services: readonly Service[], next: Registry, log: Logger, health: HealthReporter): ReloadOutcome {
  const failed: Array<{ service: string; error: string }> = [];
  const switches: Array<[string, () => void]> = [];
  for (const svc of services) {
    try {
      switches.push([svc.name, svc.reload(next)]);
    } catch (err) {
      log.error({ svc: svc.name, err: messageOf(err) }, `${svc.name} refused the new configuration`);
      failed.push({ service: svc.name, error: messageOf(err) });
    }
  }
  const named = () => failed.map((f) => `${f.service} (${f.error})`).join(', ');
  if (failed.length > 0) {
    health.set('reload', { severity: 'degraded', message: `the new configuration is refused by ${named()}; the previous one keeps serving everywhere` });
    return { applied: false, failed };
  }
  for (const [service, commit] of switches) {
    try {
      commit();
    } catch (err) {
      log.error({ svc: service, err: messageOf(err) }, `${service} failed to switch to the new configuration`);
      failed.push({ service, error: messageOf(err) });
    }
  }
  health.set(
    'reload',
    failed.length === 0
      ? undefined
      : { severity: 'degraded', message: `the new configuration is applied except in ${named()}; restart to apply it everywhere` },
  );
  return { applied: true, failed };
}
