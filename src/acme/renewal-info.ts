import type { AcmeStatus, DomainCert } from '../core/acme.ts';
import type { Logger } from '../core/log.ts';
import { certId, nextAriCheckMs, parseRenewalInfo, pickInWindow } from './ari.ts';
import { CaTrouble, type CaGate, type OrderClient } from './client.ts';

/**
 * ARI (RFC 9773): asks the CA's renewalInfo for each due ACME certificate,
 * one at a time, and sets its renewal to a random time in the suggested
 * window (chosen again only when the window moves). A CA without
 * renewalInfo, or an answer that cannot be used, leaves the renewal at two
 * thirds of the lifetime; it is asked again after the CA's Retry-After
 * (or six hours), the directory of a CA without ARI after a day.
 */
export function createRenewalInfo(deps: {
  log: Logger;
  client: () => OrderClient | undefined;
  status: () => AcmeStatus;
  gate: CaGate;
  /** The domain's certificate as presented now, when it still wants ACME. */
  find: (domain: string) => DomainCert | undefined;
  /** An order for the domain is under way (it sets the renewal itself). */
  busy: (domain: string) => boolean;
  stopped: () => boolean;
  schedule: (at: number) => void;
  save: () => void;
}): { dueAt(c: DomainCert): number | undefined; ask(domain: string): void } {
  const { log, gate } = deps;
  const due = new Set<string>();
  let running = false;

  async function run(): Promise<void> {
    if (running || !deps.client()) return;
    running = true;
    try {
      while (!deps.stopped() && due.size > 0 && gate.heldUntil <= Date.now()) {
        const domain = due.values().next().value!;
        due.delete(domain);
        await check(domain, deps.client()!);
      }
    } finally {
      running = false;
    }
  }

  async function check(domain: string, client: OrderClient): Promise<void> {
    const s = deps.status().domains[domain];
    const c = deps.find(domain);
    if (!s || !c || c.source !== 'acme' || !c.cert || deps.busy(domain)) return;
    let nextMs = nextAriCheckMs(0);
    try {
      const base = (await client.directory()).renewalInfo;
      if (typeof base !== 'string') {
        s.ari = { start: '', end: '', nextCheck: new Date(Date.now() + 86_400_000).toISOString() };
        return; // the CA offers no ARI: two thirds of the lifetime stands
      }
      const id = certId(c.cert);
      if (!id) throw new Error('the certificate has no Authority Key Identifier');
      const got = await client.getJson(`${base.replace(/\/+$/, '')}/${id}`);
      nextMs = nextAriCheckMs(got.retryAfterMs);
      const w = parseRenewalInfo(got.body);
      const [start, end] = [new Date(w.start).toISOString(), new Date(w.end).toISOString()];
      if (s.ari?.start !== start || s.ari?.end !== end || s.renewFrom !== 'ari') {
        s.renewAt = new Date(pickInWindow(w)).toISOString();
        s.renewFrom = 'ari';
        log.info({ domain, windowStart: start, windowEnd: end, renewAt: s.renewAt, explanationURL: w.explanationURL }, 'ACME renewal window from the CA (ARI)');
      }
      s.ari = { start, end, nextCheck: '', ...(w.explanationURL ? { explanationURL: w.explanationURL } : {}) };
    } catch (err) {
      log.warn({ domain, err: (err as Error).message, renewAt: s.renewAt }, 'ACME renewal information unavailable; the renewal time stands');
      if (err instanceof CaTrouble) nextMs = Math.max(nextMs, gate.heldUntil - Date.now());
      s.ari = { ...(s.ari ?? { start: '', end: '' }), nextCheck: '' };
    } finally {
      if (s.ari && !s.ari.nextCheck) s.ari.nextCheck = new Date(Date.now() + nextMs).toISOString();
      if (s.ari) deps.schedule(Date.parse(s.ari.nextCheck));
      if (s.renewAt) deps.schedule(Date.parse(s.renewAt));
      deps.save();
    }
  }

  return {
    /** When the renewalInfo of `c` is asked next (0: never yet); undefined when it is not an ACME certificate. */
    dueAt(c) {
      if (c.source !== 'acme' || !c.cert) return undefined;
      const next = deps.status().domains[c.domain]?.ari?.nextCheck;
      return next ? Date.parse(next) : 0;
    },
    ask(domain) {
      due.add(domain);
      void run();
    },
  };
}
