import type { AcmeStatus } from '../core/acme.ts';
import type { HealthReporter } from '../core/contracts.ts';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { CaGate, CaTrouble } from './client.ts';

/** The longest a rate limit holds every request to the CA (a longer Retry-After holds the refused domain alone). */
export const RATE_LIMIT_HOLD_MAX_MS = 3_600_000;

export interface BackoffSettings {
  retrySeconds: number;
  maxRetrySeconds: number;
  rateLimitFloorSeconds: number;
}

/** Doubling from retrySeconds up to maxRetrySeconds, plus up to a tenth more (many domains do not retry in step). */
export function backoffMs(cfg: BackoffSettings, failures: number): number {
  return Math.min(cfg.retrySeconds * 2 ** (failures - 1), cfg.maxRetrySeconds) * 1000 * (1 + Math.random() / 10);
}

/**
 * The hold on the CA as a whole (kept in the status file as `ca`).
 *
 * The CA said something that concerns every request to it: nothing is sent
 * until the hold ends. A rate limit holds for its Retry-After (the floor,
 * rateLimitFloorSeconds, when it gave none), at most {@link RATE_LIMIT_HOLD_MAX_MS}:
 * a longer limit is one name's (Let's Encrypt's account-wide limits refill
 * in seconds or minutes), and that name waits it out alone. 5xx, garbage
 * or no answer hold for a doubling backoff (retrySeconds up to
 * maxRetrySeconds), or the Retry-After when that is longer.
 */
export function createCaHold(deps: {
  cfg: BackoffSettings;
  status: () => AcmeStatus;
  save: () => void;
  log: Logger;
  health: HealthReporter;
  metrics?: Metrics;
}): { gate: CaGate; restore(): void; answered(): void } {
  const { cfg, log, health } = deps;
  const trouble = deps.metrics?.counter('makewaves_acme_ca_trouble_total', 'Answers of the ACME CA that held every request to it, by kind (rateLimited, unavailable).', ['kind']);
  const gate: CaGate = {
    heldUntil: 0,
    onTrouble(t: CaTrouble) {
      if (t.kind === 'held') return;
      const status = deps.status();
      const ca = (status.ca ??= { failures: 0 });
      let waitMs: number;
      if (t.kind === 'rateLimited') {
        waitMs = Math.min(t.retryAfterMs || cfg.rateLimitFloorSeconds * 1000, RATE_LIMIT_HOLD_MAX_MS);
      } else {
        ca.failures += 1;
        waitMs = Math.max(t.retryAfterMs, backoffMs(cfg, ca.failures));
      }
      const until = Date.now() + waitMs;
      if (until <= gate.heldUntil) return;
      gate.heldUntil = until;
      ca.heldUntil = new Date(until).toISOString();
      ca.reason = t.message;
      trouble?.inc({ kind: t.kind });
      log.warn({ kind: t.kind, err: t.message, heldUntil: ca.heldUntil, failures: ca.failures }, 'ACME CA held: no request to it until then');
      health.set('acme:ca', { severity: 'degraded', message: `ACME CA: ${t.message}; nothing is sent to it before ${ca.heldUntil}` });
      deps.save();
    },
  };
  return {
    gate,
    /** A hold from before a restart still stands. */
    restore() {
      const held = deps.status().ca?.heldUntil;
      if (held && Date.parse(held) > Date.now()) gate.heldUntil = Date.parse(held);
    },
    /** The CA answered an order properly (issued, or refused for the domain's own reason): its backoff starts again from the bottom. */
    answered() {
      const status = deps.status();
      if (!status.ca || (status.ca.failures === 0 && !status.ca.reason)) return;
      if (gate.heldUntil > Date.now()) return;
      status.ca = { failures: 0 };
      health.set('acme:ca', undefined);
    },
  };
}
