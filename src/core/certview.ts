import path from 'node:path';
import { allDomainCerts, commonName, readAcmeStatus, wantsAcme, type AcmeStatus } from './acme.ts';
import type { Registry } from './registry.ts';

/** One tenant domain's certificate, as `makewaves certs` prints it and the operator's panel shows it. */
export interface CertRow {
  domain: string;
  tenant: string;
  /** acme, file, file (another name), self-signed or none. */
  source: string;
  issuer: string;
  /** End of validity, `YYYY-MM-DD HH:MMZ`, or '-'. */
  notAfter: string;
  /** When ACME renews or retries it, or '-'. */
  next: string;
  lastError: string;
  /** Milliseconds of validity left (undefined without a certificate). */
  leftMs: number | undefined;
}

const day = (iso: string | undefined) => (iso ? `${iso.slice(0, 16).replace('T', ' ')}Z` : '-');

/**
 * Every tenant domain with the certificate presented for it, from the
 * certificate folder of `http.tls` and `<data>/acme/status.json` (so it
 * works with the server stopped too). Undefined without `http.tls`.
 * `statusError` is set when the ACME status file could not be read.
 */
export function certOverview(registry: Registry, now = Date.now()): { rows: CertRow[]; statusError?: string } | undefined {
  const main = registry.config.main;
  const tls = main.http.tls;
  if (!tls) return undefined;
  let status: AcmeStatus = { domains: {} };
  let statusError: string | undefined;
  try {
    status = readAcmeStatus(main.dataDir);
  } catch (err) {
    statusError = (err as Error).message;
  }
  const rows: CertRow[] = [];
  for (const c of allDomainCerts(path.resolve(registry.config.dir, tls.certs), registry, status)) {
    const s = status.domains[c.domain];
    let next = '-';
    if (main.acme && wantsAcme(c)) next = s?.retryAt ? `${day(s.retryAt)} (retry)` : c.source === 'acme' ? `${day(s?.renewAt)}${s?.renewFrom === 'ari' ? ' (ARI)' : ''}` : 'now (ordering)';
    rows.push({
      domain: c.domain,
      tenant: c.tenant,
      source: c.source === 'file' && !c.covers ? 'file (another name)' : c.source,
      issuer: c.cert ? commonName(c.cert.issuer) : '-',
      notAfter: c.cert ? day(new Date(c.cert.validTo).toISOString()) : '-',
      next,
      lastError: s?.lastError ?? '-',
      leftMs: c.cert ? new Date(c.cert.validTo).getTime() - now : undefined,
    });
  }
  return { rows, statusError };
}
