import { X509Certificate, createPrivateKey } from 'node:crypto';
import tls, { type SecureContext } from 'node:tls';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { acmeDir, allDomainCerts, commonName, readAcmeStatus, wantsAcme, writeAcmeStatus, type AcmeDomainStatus, type AcmeStatus, type DomainCert } from '../core/acme.ts';
import { certFiles, type CertStore } from '../core/certs.ts';
import { ACME_CHALLENGE_PATH, type AcmeChallenges, type HealthReporter } from '../core/contracts.ts';
import type { Job, Service } from '../core/lifecycle.ts';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Registry } from '../core/registry.ts';
import { certId, nextAriCheckMs, parseRenewalInfo, pickInWindow } from './ari.ts';
import { CaTrouble, createOrderClient, newAccountKey, type CaGate, type Challenge, type OrderClient } from './client.ts';

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
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`${file}: cannot be read (${(err as NodeJS.ErrnoException).code})`);
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

/** The longest a rate limit holds every request to the CA (a longer Retry-After holds the refused domain alone). */
export const RATE_LIMIT_HOLD_MAX_MS = 3_600_000;

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
  /** HTTP-01 by token; TLS-ALPN-01 by domain (the handshake names only the domain). */
  const pending = new Map<string, Extract<Challenge, { type: 'http-01' }>>();
  const pendingAlpn = new Map<string, { token: string; context: SecureContext }>();
  /** Due orders in the order they fell due (a Map: one entry per domain, cheap to look up). */
  const queued = new Map<string, DomainCert>();
  const running = new Map<string, Promise<void>>();
  const orders = metrics?.counter('makewaves_acme_orders_total', 'ACME certificate orders by result (issued, failed).', ['result']);
  const caTrouble = metrics?.counter('makewaves_acme_ca_trouble_total', 'Answers of the ACME CA that held every request to it, by kind (rateLimited, unavailable).', ['kind']);
  let status: AcmeStatus = { domains: {} };
  const gate: CaGate = { heldUntil: 0, onTrouble: (t) => hold(t) };
  /** Domains whose renewalInfo is due to be asked, asked one at a time. */
  const ariDue = new Set<string>();
  let ariRunning = false;
  metrics?.labelledGauge('makewaves_acme_certificate_expiry_days', 'Days until the ACME certificate of each tenant domain expires.', ['domain'], () =>
    Object.entries(status.domains).flatMap(([domain, s]) => (s.notAfter ? [[{ domain }, Math.floor((Date.parse(s.notAfter) - Date.now()) / 86_400_000)]] : [])),
  );
  let client: OrderClient | undefined;
  let timer: NodeJS.Timeout | undefined;
  let wakeAt = Infinity;
  let stopped = false;

  const challenges: AcmeChallenges = {
    answer(req, res) {
      const url = req.url ?? '';
      if (!url.startsWith(ACME_CHALLENGE_PATH) || (req.method !== 'GET' && req.method !== 'HEAD')) return undefined;
      const c = pending.get(url.slice(ACME_CHALLENGE_PATH.length));
      const host = (req.headers.host ?? '').toLowerCase().replace(/:\d+$/, '').replace(/\.$/, '');
      if (!c || c.domain !== host) return undefined;
      const body = Buffer.from(c.keyAuthorization);
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length, 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
      log.info({ domain: c.domain, remote: req.socket.remoteAddress, challenge: 'http-01' }, 'ACME challenge answered');
      return { status: 200, bytes: req.method === 'HEAD' ? 0 : body.length };
    },
    ...(cfg.challenges.includes('tls-alpn-01')
      ? {
          tlsAlpn: {
            context: (servername: string) => pendingAlpn.get(servername.toLowerCase().replace(/\.$/, ''))?.context,
            answered: (domain: string, remote: string | undefined) => log.info({ domain, remote, challenge: 'tls-alpn-01' }, 'ACME challenge answered'),
          },
        }
      : {}),
  };

  function addChallenge(c: Challenge): void {
    if (c.type === 'http-01') pending.set(c.token, c);
    else pendingAlpn.set(c.domain, { token: c.token, context: tls.createSecureContext({ cert: c.cert, key: c.key, minVersion: 'TLSv1.2' }) });
  }

  function removeChallenge(c: Challenge): void {
    if (c.type === 'http-01') pending.delete(c.token);
    else if (pendingAlpn.get(c.domain)?.token === c.token) pendingAlpn.delete(c.domain);
  }

  /**
   * The CA said something that concerns every request to it: nothing is sent
   * until the hold ends. A rate limit holds for its Retry-After (the floor,
   * rateLimitFloorSeconds, when it gave none), at most {@link RATE_LIMIT_HOLD_MAX_MS}:
   * a longer limit is one name's (Let's Encrypt's account-wide limits refill
   * in seconds or minutes), and that name waits it out alone (see failed()).
   * 5xx, garbage or no answer hold for a doubling backoff (retrySeconds up
   * to maxRetrySeconds), or the Retry-After when that is longer.
   */
  function hold(t: CaTrouble): void {
    if (t.kind === 'held') return;
    const ca = (status.ca ??= { failures: 0 });
    let waitMs: number;
    if (t.kind === 'rateLimited') {
      waitMs = Math.min(t.retryAfterMs || cfg.rateLimitFloorSeconds * 1000, RATE_LIMIT_HOLD_MAX_MS);
    } else {
      ca.failures += 1;
      waitMs = Math.max(t.retryAfterMs, backoffMs(ca.failures));
    }
    const until = Date.now() + waitMs;
    if (until <= gate.heldUntil) return;
    gate.heldUntil = until;
    ca.heldUntil = new Date(until).toISOString();
    ca.reason = t.message;
    caTrouble?.inc({ kind: t.kind });
    log.warn({ kind: t.kind, err: t.message, heldUntil: ca.heldUntil, failures: ca.failures }, 'ACME CA held: no request to it until then');
    health.set('acme:ca', { severity: 'degraded', message: `ACME CA: ${t.message}; nothing is sent to it before ${ca.heldUntil}` });
    save();
  }

  /** The CA answered an order properly (issued, or refused for the domain's own reason): its backoff starts again from the bottom. */
  function caAnswered(): void {
    if (!status.ca || (status.ca.failures === 0 && !status.ca.reason)) return;
    if (gate.heldUntil > Date.now()) return;
    status.ca = { failures: 0 };
    health.set('acme:ca', undefined);
  }

  /** Doubling from retrySeconds up to maxRetrySeconds, plus up to a tenth more (many domains do not retry in step). */
  function backoffMs(failures: number): number {
    return Math.min(cfg.retrySeconds * 2 ** (failures - 1), cfg.maxRetrySeconds) * 1000 * (1 + Math.random() / 10);
  }

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

  /** When the renewalInfo of an ACME certificate is asked next (0: never yet). */
  function ariDueAt(c: DomainCert): number | undefined {
    if (c.source !== 'acme' || !c.cert) return undefined;
    const next = status.domains[c.domain]?.ari?.nextCheck;
    return next ? Date.parse(next) : 0;
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
      const ari = ariDueAt(c);
      if (ari === undefined || running.has(c.domain) || queued.has(c.domain)) continue;
      if (ari > now) next = Math.min(next, ari);
      else ariDue.add(c.domain);
    }
    wakeAt = Infinity;
    schedule(next);
    pump();
    void askRenewalInfo();
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
      const got = await client!.order(domain, { create: addChallenge, remove: removeChallenge });
      install(domain, got, s);
      caAnswered();
      schedule(Date.parse(s.renewAt!));
      orders?.inc({ result: 'issued' });
      health.set(`acme:${domain}`, undefined);
      log.info({ domain, issuer: s.issuer, notAfter: s.notAfter, renewAt: s.renewAt }, 'ACME certificate installed');
      ariDue.add(domain);
      void askRenewalInfo();
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

  /**
   * ARI (RFC 9773): asks the CA's renewalInfo for each due ACME certificate,
   * one at a time, and sets its renewal to a random time in the suggested
   * window (chosen again only when the window moves). A CA without
   * renewalInfo, or an answer that cannot be used, leaves the renewal at two
   * thirds of the lifetime; it is asked again after the CA's Retry-After
   * (or six hours).
   */
  async function askRenewalInfo(): Promise<void> {
    if (ariRunning || !client) return;
    ariRunning = true;
    try {
      while (!stopped && ariDue.size > 0 && gate.heldUntil <= Date.now()) {
        const domain = ariDue.values().next().value!;
        ariDue.delete(domain);
        await renewalInfo(domain);
      }
    } finally {
      ariRunning = false;
    }
  }

  async function renewalInfo(domain: string): Promise<void> {
    const s = status.domains[domain];
    const c = wanted().find((w) => w.domain === domain);
    if (!s || !c || c.source !== 'acme' || !c.cert || running.has(domain)) return;
    let nextMs = nextAriCheckMs(0);
    try {
      const base = (await client!.directory()).renewalInfo;
      if (typeof base !== 'string') {
        s.ari = { start: '', end: '', nextCheck: new Date(Date.now() + 86_400_000).toISOString() };
        return; // the CA offers no ARI: two thirds of the lifetime stands; the directory is looked at again tomorrow
      }
      const id = certId(c.cert);
      if (!id) throw new Error('the certificate has no Authority Key Identifier');
      const got = await client!.getJson(`${base.replace(/\/+$/, '')}/${id}`);
      nextMs = nextAriCheckMs(got.retryAfterMs);
      const w = parseRenewalInfo(got.body);
      const moved = s.ari?.start !== new Date(w.start).toISOString() || s.ari?.end !== new Date(w.end).toISOString();
      if (moved || s.renewFrom !== 'ari') {
        s.renewAt = new Date(pickInWindow(w)).toISOString();
        s.renewFrom = 'ari';
        log.info({ domain, windowStart: new Date(w.start).toISOString(), windowEnd: new Date(w.end).toISOString(), renewAt: s.renewAt, explanationURL: w.explanationURL }, 'ACME renewal window from the CA (ARI)');
      }
      s.ari = { start: new Date(w.start).toISOString(), end: new Date(w.end).toISOString(), nextCheck: '', ...(w.explanationURL ? { explanationURL: w.explanationURL } : {}) };
    } catch (err) {
      log.warn({ domain, err: (err as Error).message, renewAt: s.renewAt }, 'ACME renewal information unavailable; the renewal time stands');
      if (err instanceof CaTrouble) nextMs = Math.max(nextMs, gate.heldUntil - Date.now());
      s.ari = { ...(s.ari ?? { start: '', end: '' }), nextCheck: '' };
    } finally {
      if (s.ari && !s.ari.nextCheck) s.ari.nextCheck = new Date(Date.now() + nextMs).toISOString();
      if (s.ari) schedule(Date.parse(s.ari.nextCheck));
      if (s.renewAt) schedule(Date.parse(s.renewAt));
      save();
    }
  }

  function failed(c: DomainCert, s: AcmeDomainStatus, err: Error): void {
    s.failures += 1;
    s.lastError = err.message.replace(/\s+/g, ' ').slice(0, 500);
    let waitMs = backoffMs(s.failures);
    if (err instanceof CaTrouble && err.kind === 'rateLimited') {
      // Never sooner than the CA's Retry-After, nor than the floor (a reply without one, or with a short one).
      waitMs = Math.max(waitMs, err.retryAfterMs, cfg.rateLimitFloorSeconds * 1000);
    } else if (err instanceof CaTrouble) {
      waitMs = Math.max(waitMs, gate.heldUntil - Date.now());
    } else {
      caAnswered();
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
    challenges,
    async start() {
      try {
        status = readAcmeStatus(dataDir);
      } catch (err) {
        log.error({ err: (err as Error).message }, 'ACME status unreadable; starting from what the certificate files say');
      }
      try {
        const key = await accountKey(dataDir);
        const caPem = cfg.ca ? readCa(path.resolve(current.config.dir, cfg.ca)) : undefined;
        const held = status.ca?.heldUntil ? Date.parse(status.ca.heldUntil) : 0;
        if (held > Date.now()) gate.heldUntil = held; // a hold from before a restart still stands
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
      current = next;
      wake();
    },
    jobs(): Job[] {
      return [{ name: 'acme renewals', schedule: '*/10 * * * *', run: wake }];
    },
  };
}
