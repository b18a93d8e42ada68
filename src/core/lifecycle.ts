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
  /** Takes a new registry snapshot; sessions already open keep theirs. */
  reload(next: Registry): void;
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

/**
 * Hands a validated snapshot to every service. A service whose reload
 * throws is logged and named in the result; the others still take the
 * snapshot (one service's fault does not hold the rest on the old one).
 * Health (`reload`) names the failed ones until a reload every service
 * takes: they are not serving `next`, nor surely the old snapshot either.
 */
export function reloadAll(services: readonly Service[], next: Registry, log: Logger, health: HealthReporter): Array<{ service: string; error: string }> {
  const failed: Array<{ service: string; error: string }> = [];
  for (const svc of services) {
    try {
      svc.reload(next);
    } catch (err) {
      const error = (err as Error).message ?? String(err);
      log.error({ svc: svc.name, err: error }, `${svc.name} failed to take the new configuration`);
      failed.push({ service: svc.name, error });
    }
  }
  health.set(
    'reload',
    failed.length === 0
      ? undefined
      : {
          severity: 'degraded',
          message: `the new configuration is applied except in ${failed.map((f) => `${f.service} (${f.error})`).join(', ')}; restart to apply it everywhere`,
        },
  );
  return failed;
}
