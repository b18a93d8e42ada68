import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { certFiles } from './certs.ts';
import type { Registry, Tenant } from './registry.ts';

/**
 * What the ACME service keeps about each domain (data/acme/status.json), and
 * where each domain's certificate comes from: read by the service to decide
 * what to order and by `makewaves certs` to show it, running or not.
 */

/** Where the account key and the status file live. */
export function acmeDir(dataDir: string): string {
  return path.join(dataDir, 'acme');
}

export interface AcmeDomainStatus {
  tenant: string;
  /** SHA-256 fingerprint of the certificate this service wrote (so it is told apart from an operator's file). */
  fingerprint?: string;
  issuer?: string;
  notAfter?: string;
  /** When the certificate is renewed (two thirds of its lifetime, with jitter). */
  renewAt?: string;
  /** After a failure: when the next order is made. */
  retryAt?: string;
  failures: number;
  lastError?: string;
  lastAttempt?: string;
  /** Where renewAt comes from: the CA's ARI window (RFC 9773) or two thirds of the lifetime. */
  renewFrom?: 'ari' | 'lifetime';
  /** The CA's last suggested renewal window (ISO times) and when renewalInfo is asked again. */
  ari?: { start: string; end: string; nextCheck: string; explanationURL?: string };
}

/** The CA as a whole: after a rate limit or a CA fault, nothing is sent to it before `heldUntil`. */
export interface AcmeCaStatus {
  heldUntil?: string;
  /** CA faults in a row (5xx, garbage, no answer): the backoff doubles with each. */
  failures: number;
  reason?: string;
}

export interface AcmeStatus {
  domains: Record<string, AcmeDomainStatus>;
  ca?: AcmeCaStatus;
}

export function statusFile(dataDir: string): string {
  return path.join(acmeDir(dataDir), 'status.json');
}

/** The status file, or an empty status when there is none yet. A damaged file throws, naming it. */
export function readAcmeStatus(dataDir: string): AcmeStatus {
  const file = statusFile(dataDir);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { domains: {} };
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as AcmeStatus;
    if (!parsed || typeof parsed.domains !== 'object') throw new Error('no "domains" object');
    return parsed;
  } catch (err) {
    throw new Error(`${file}: not a readable ACME status file (${(err as Error).message})`);
  }
}

/** Written whole and renamed into place (mode 0600), so a reader never sees half of it. */
export function writeAcmeStatus(dataDir: string, status: AcmeStatus): void {
  const dir = acmeDir(dataDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = statusFile(dataDir);
  writeFileSync(`${file}.tmp`, `${JSON.stringify(status, null, 2)}\n`, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

export type CertSource = 'acme' | 'file' | 'self-signed' | 'none';

export interface DomainCert {
  domain: string;
  tenant: string;
  /** What the store presents for this name: the file it comes from and what kind it is. */
  source: CertSource;
  file?: string;
  cert?: X509Certificate;
  /** The presented certificate covers the name (a tenant's other certificate may not). */
  covers: boolean;
}

/** Parsed certificates by file, kept while the file's mtime and size stay the same (a look at every domain is a stat each). */
const parsed = new Map<string, { mtimeMs: number; size: number; cert: X509Certificate }>();

function readCert(file: string): X509Certificate | undefined {
  try {
    const st = statSync(file);
    if (!st.isFile()) return undefined;
    const hit = parsed.get(file);
    if (hit && hit.mtimeMs === st.mtimeMs && hit.size === st.size) return hit.cert;
    const cert = new X509Certificate(readFileSync(file));
    parsed.set(file, { mtimeMs: st.mtimeMs, size: st.size, cert });
    return cert;
  } catch {
    parsed.delete(file);
    return undefined; // Missing or unreadable: the store does not present it either (`makewaves check` names it).
  }
}

function kind(cert: X509Certificate, fingerprint: string | undefined): CertSource {
  if (fingerprint && cert.fingerprint256 === fingerprint) return 'acme';
  if (cert.issuer === cert.subject && cert.verify(cert.publicKey)) return 'self-signed';
  return 'file';
}

/**
 * The certificate the store presents for `domain` (see CertStore.contextFor:
 * the tenant's own files, then `<domain>.crt`, then the tenant's other
 * domains' files, then none of the tenant's).
 */
export function domainCert(certsDir: string, tenant: Tenant, domain: string, status: AcmeStatus): DomainCert {
  const base = { domain, tenant: tenant.id };
  if (tenant.tlsFiles) {
    const cert = readCert(tenant.tlsFiles.cert);
    if (cert) return { ...base, source: 'file', file: tenant.tlsFiles.cert, cert, covers: Boolean(cert.checkHost(domain)) };
  }
  for (const name of [domain, ...tenant.domains.filter((d) => d !== domain)]) {
    const file = certFiles(certsDir, name).cert;
    const cert = readCert(file);
    if (cert) return { ...base, source: kind(cert, status.domains[name]?.fingerprint), file, cert, covers: Boolean(cert.checkHost(domain)) };
  }
  return { ...base, source: 'none', covers: false };
}

/**
 * Whether ACME should get `domain` a certificate of its own: not when an
 * operator's certificate covers it; yes when what is presented is
 * self-signed, missing, another name's, or one this service got (renewals).
 */
export function wantsAcme(c: DomainCert): boolean {
  return !(c.source === 'file' && c.covers);
}

/** Every tenant domain with what is presented for it. */
export function allDomainCerts(certsDir: string, registry: Registry, status: AcmeStatus): DomainCert[] {
  const out: DomainCert[] = [];
  for (const t of registry.tenants.values()) for (const d of t.domains) out.push(domainCert(certsDir, t, d, status));
  return out;
}

/** The CN of an X.509 name ("CN=Pebble Intermediate CA 1a2b3c" → that), or the whole name. */
export function commonName(name: string): string {
  return /(?:^|\n|,\s*)CN=([^\n,]+)/.exec(name)?.[1] ?? name.replace(/\n/g, ', ');
}
