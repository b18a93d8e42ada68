import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { readNoLink } from '../lib/ownfile.ts';
import path from 'node:path';
import { acmeDir, allDomainCerts, commonName, readAcmeStatus, wantsAcme, writeAcmeStatus, type AcmeDomainStatus, type AcmeStatus, type DomainCert } from '../core/acme.ts';
import { certFiles, type CertStore } from '../core/certs.ts';
import type { AcmeChallenges, HealthReporter } from '../core/contracts.ts';
import type { Job, Service } from '../core/lifecycle.ts';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Registry } from '../core/registry.ts';
import { createChallengeAnswers } from './challenges.ts';
import { CaTrouble, createOrderClient, newAccountKey, type OrderClient } from './client.ts';
import { backoffMs, createCaHold } from './hold.ts';
import { createRenewalInfo } from './renewal-info.ts';

export interface AcmeDeps {
  registry: Registry;
  log: Logger;
  /** The store of http.tls: certificates are written into its folder and it is told to look again. */
  certs: CertStore;
  health: HealthReporter;
  metrics?: Metrics;
}

/** The account key: made once, kept (0600); a file that is there but unreadable is an error, never a new account. */
export async function accountKey(dataDir: string): Promise<string> {
  const dir = acmeDir(dataDir);
  const file = path.join(dir, 'account.key');
  let pem: string | undefined;
  try {
    pem = readNoLink(file).toString('utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`${file}: cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (pem !== undefined) {
    try {
      createPrivateKey(pem);
    } catch (err) {
      throw new Error(
        `${file}: not a readable private key (${(err as Error).message}); restore it from a backup, or remove it to register a new ACME account (no certificates are ordered until then)`,
      );
    }
    return pem;
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const made = await newAccountKey();
  writeFileSync(file, made, { mode: 0o600, flag: 'wx' });
  return made;
}

/** The PEM of acme.ca, or an error naming the file. */
function readCa(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`${file} (acme.ca) cannot be read (${(err as NodeJS.ErrnoException).code})`);
  }
}

/** When a certificate is renewed: two thirds into its lifetime, give or take a thirtieth of it (renewals of many domains spread out). */
export function renewalTime(cert: X509Certificate, random = Math.random): number {
  const from = new Date(cert.validFrom).getTime();
  const to = new Date(cert.validTo).getTime();
  const life = to - from;
  return from + (life * 2) / 3 + (random() * 2 - 1) * (life / 30);
}

/**
 * ACME (RFC 8555) for every tenant domain without a certificate file of its
 * own: HTTP-01 answered through the HTTP service, TLS-ALPN-01 through its
 * HTTPS listener, certificates written into the store (it picks them up
 * without a restart), renewed in the CA's ARI window or else at two thirds
 * of their lifetime. Orders run a few at a time; a failed one is retried
 * with doubling delays, and whatever was served before keeps being served.
 * A rate limit or a CA in trouble holds every request to the CA (see
 * {@link CaGate}) for its Retry-After or a doubling backoff.
 */
export function createAcmeService({ registry, log: rootLog, certs, health, metrics }: AcmeDeps): Service & { challenges: AcmeChallenges } {
  const log = rootLog.child({ svc: 'acme' });
  let current = registry;
  const main = registry.config.main;
  const cfg = main.acme!;
  const dataDir = main.dataDir;
  const answers = createChallengeAnswers(log, cfg.challenges);
  /** Due orders in the order they fell due (a Map: one entry per domain, cheap to look up). */
  const queued = new Map<string, DomainCert>();
  const running = new Map<string, Promise<void>>();
  const orders = metrics?.counter('makewaves_acme_orders_total', 'ACME certificate orders by result (issued, failed).', ['result']);
  let status: AcmeStatus = { domains: {} };
  const ca = createCaHold({ cfg, status: () => status, save, log, health, metrics });
  const gate = ca.gate;
  metrics?.labelledGauge('makewaves_acme_certificate_expiry_days', 'Days until the ACME certificate of each tenant domain expires.', ['domain'], () =>
    Object.entries(status.domains).flatMap(([domain, s]) => (s.notAfter ? [[{ domain }, Math.floor((Date.parse(s.notAfter) - Date.now()) / 86_400_000)]] : [])),
  );
  let client: OrderClient | undefined;
  let timer: NodeJS.Timeout | undefined;
  let wakeAt = Infinity;
  let stopped = false;
  const ari = createRenewalInfo({
    log,
    client: () => client,
    status: () => status,
    gate,
    find: (domain) => wanted().find((w) => w.domain === domain),
    busy: (domain) => running.has(domain),
    stopped: () => stopped,
    schedule,
    save,
  });

  function save(): void {
    try {
      writeAcmeStatus(dataDir, status);
    } catch (err) {
      log.error({ err: (err as Error).message }, 'cannot write the ACME status file');
    }
  }

  /** Domains that want a certificate from us, with what is presented for them now. */
  function wanted(): DomainCert[] {
    return allDomainCerts(certs.dir, current, status).filter(wantsAcme);
  }

  function dueAt(c: DomainCert): number {
    const s = status.domains[c.domain];
    const retry = s?.retryAt ? Date.parse(s.retryAt) : 0;
    if (c.source === 'acme') return Math.max(retry, s?.renewAt ? Date.parse(s.renewAt) : 0);
    return retry;
  }

  /**
   * Looks at every tenant domain: queues what is due, forgets what is gone,
   * sets the timer for the next due time, and starts what the concurrency
   * allows. Called at start, on reload, by the timer and the job, and when
   * the queue has run dry (not after every order: with many domains a look
   * costs a stat per domain).
   */
  function wake(): void {
    if (stopped || !client) return;
    const now = Date.now();
    const all = wanted();
    const names = new Set(all.map((c) => c.domain));
    for (const d of Object.keys(status.domains)) {
      if (!names.has(d) && !running.has(d)) delete status.domains[d]; // no longer a tenant's (or now an operator's file): not renewed
    }
    for (const d of queued.keys()) if (!names.has(d)) queued.delete(d);
    let next = Infinity;
    for (const c of all) {
      const at = dueAt(c);
      if (at > now) next = Math.min(next, at);
      else if (!running.has(c.domain)) queued.set(c.domain, c);
      const askAt = ari.dueAt(c);
      if (askAt === undefined || running.has(c.domain) || queued.has(c.domain)) continue;
      if (askAt > now) next = Math.min(next, askAt);
      else ari.ask(c.domain);
    }
    wakeAt = Infinity;
    schedule(next);
    pump();
  }

  /** Sets the timer for `at` unless it is already set earlier: at least a second ahead, at most an hour (a timer cannot be set weeks ahead). */
  function schedule(at: number): void {
    if (stopped || at === Infinity || at >= wakeAt) return;
    if (timer) clearTimeout(timer);
    wakeAt = at;
    timer = setTimeout(wake, Math.min(Math.max(at - Date.now(), 1_000), 3_600_000));
    timer.unref();
  }

  /** Starts queued orders while fewer than acme.concurrency run and the CA is not held. */
  function pump(): void {
    if (gate.heldUntil > Date.now()) return schedule(gate.heldUntil);
    for (const [domain, c] of queued) {
      if (stopped || running.size >= cfg.concurrency) return;
      queued.delete(domain);
      const p = order(c).finally(() => {
        running.delete(domain);
        if (queued.size > 0) pump();
        else if (running.size === 0) wake();
      });
      running.set(domain, p);
    }
  }

  async function order(c: DomainCert): Promise<void> {
    const { domain } = c;
    const s: AcmeDomainStatus = (status.domains[domain] ??= { tenant: c.tenant, failures: 0 });
    s.tenant = c.tenant;
    s.lastAttempt = new Date().toISOString();
    log.info({ domain, tenant: c.tenant, now: c.source }, c.source === 'acme' ? 'ACME renewal started' : 'ACME order started');
    try {
      const got = await client!.order(domain, answers);
      install(domain, got, s);
      ca.answered();
      schedule(Date.parse(s.renewAt!));
      orders?.inc({ result: 'issued' });
      health.set(`acme:${domain}`, undefined);
      log.info({ domain, issuer: s.issuer, notAfter: s.notAfter, renewAt: s.renewAt }, 'ACME certificate installed');
      ari.ask(domain);
    } catch (err) {
      failed(c, s, err as Error);
    } finally {
      save();
    }
  }

  /** Checks what the CA sent, then writes key and certificate side by side; the store is told to look again. */
  function install(domain: string, got: { chain: string; key: string }, s: AcmeDomainStatus): void {
    const cert = new X509Certificate(got.chain);
    if (!cert.checkHost(domain)) throw new Error(`the CA sent a certificate that does not cover ${domain}`);
    if (!cert.checkPrivateKey(createPrivateKey(got.key))) throw new Error('the CA sent a certificate for another key');
    if (stopped) throw new Error('stopping: the certificate is not installed');
    const files = certFiles(certs.dir, domain);
    mkdirSync(certs.dir, { recursive: true, mode: 0o700 });
    writeFileSync(`${files.key}.tmp`, got.key, { mode: 0o600 });
    writeFileSync(`${files.cert}.tmp`, got.chain, { mode: 0o640 });
    // Both renames in one synchronous step: nothing in this process sees a new key with an old certificate.
    renameSync(`${files.key}.tmp`, files.key);
    renameSync(`${files.cert}.tmp`, files.cert);
    certs.reset();
    Object.assign(s, {
      fingerprint: cert.fingerprint256,
      issuer: commonName(cert.issuer),
      notAfter: new Date(cert.validTo).toISOString(),
      renewAt: new Date(renewalTime(cert)).toISOString(),
      renewFrom: 'lifetime',
      ari: undefined,
      failures: 0,
      lastError: undefined,
      retryAt: undefined,
    });
  }

  function failed(c: DomainCert, s: AcmeDomainStatus, err: Error): void {
    s.failures += 1;
    s.lastError = err.message.replace(/\s+/g, ' ').slice(0, 500);
    let waitMs = backoffMs(cfg, s.failures);
    if (err instanceof CaTrouble && err.kind === 'rateLimited') {
      // Never sooner than the CA's Retry-After, nor than the floor (a reply without one, or with a short one).
      waitMs = Math.max(waitMs, err.retryAfterMs, cfg.rateLimitFloorSeconds * 1000);
    } else if (err instanceof CaTrouble) {
      waitMs = Math.max(waitMs, gate.heldUntil - Date.now());
    } else {
      ca.answered();
    }
    s.retryAt = new Date(Date.now() + waitMs).toISOString();
    schedule(Date.now() + waitMs);
    orders?.inc({ result: 'failed' });
    const serving = c.source === 'none' ? 'the default certificate' : `the ${c.source} certificate ${c.file ? path.basename(c.file) : ''}`.trim();
    log.warn({ domain: c.domain, tenant: c.tenant, err: s.lastError, failures: s.failures, retryAt: s.retryAt, serving }, 'ACME order failed; retrying later');
    health.set(`acme:${c.domain}`, {
      severity: 'degraded',
      message: `${c.domain}: no ACME certificate (${s.lastError}); serving ${serving}; next try at ${s.retryAt} (failure ${s.failures})`,
    });
  }

  return {
    name: 'acme',
    challenges: answers.challenges,
    async start() {
      try {
        status = readAcmeStatus(dataDir);
      } catch (err) {
        log.error({ err: (err as Error).message }, 'ACME status unreadable; starting from what the certificate files say');
      }
      try {
        const key = await accountKey(dataDir);
        const caPem = cfg.ca ? readCa(path.resolve(current.config.dir, cfg.ca)) : undefined;
        ca.restore();
        client = createOrderClient({
          directory: cfg.directory,
          email: cfg.email,
          accountKey: key,
          caPem,
          challenges: cfg.challenges,
          gate,
          debug: (msg) => log.debug({ acme: msg }, 'acme-client'),
        });
        health.set('acme', undefined);
      } catch (err) {
        const message = (err as Error).message;
        log.error({ err: message }, 'ACME disabled: no certificates are ordered or renewed');
        health.set('acme', { severity: 'degraded', message: `ACME disabled: ${message}` });
      }
      wake();
      return [];
    },
    async stop(graceMs) {
      stopped = true;
      if (timer) clearTimeout(timer);
      queued.clear();
      const grace = new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref());
      await Promise.race([Promise.allSettled([...running.values()]), grace]);
    },
    reload(next) {
      return () => {
        current = next;
        wake();
      };
    },
    jobs(): Job[] {
      return [{ name: 'acme renewals', schedule: '*/10 * * * *', run: wake }];
    },
  };
}
