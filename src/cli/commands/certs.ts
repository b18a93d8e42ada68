import path from 'node:path';
import { allDomainCerts, commonName, readAcmeStatus, wantsAcme, type AcmeStatus } from '../../core/acme.ts';
import { ConfigError, loadConfig } from '../../core/config/load.ts';
import { Registry } from '../../core/registry.ts';

const day = (iso: string | undefined) => (iso ? `${iso.slice(0, 16).replace('T', ' ')}Z` : '-');

/**
 * `makewaves certs`: each tenant domain with the certificate presented for it
 * (source acme, file, self-signed or none), its issuer and end of validity,
 * when ACME renews or retries it, and the last ACME error. Read from the
 * certificate folder and data/acme/status.json, so it works with the server
 * stopped too.
 */
export function certs(configDir: string, out: NodeJS.WritableStream = process.stdout): number {
  let registry: Registry;
  try {
    registry = new Registry(loadConfig(configDir));
  } catch (err) {
    process.stderr.write(`makewaves: ${err instanceof ConfigError ? err.message : (err as Error).message}\n`);
    return 1;
  }
  const main = registry.config.main;
  const tls = main.http.tls;
  if (!tls) {
    process.stderr.write(`makewaves: no http.tls in ${configDir}/makewaves.yaml: nothing is served over HTTPS\n`);
    return 1;
  }
  let status: AcmeStatus = { domains: {} };
  try {
    status = readAcmeStatus(main.dataDir);
  } catch (err) {
    process.stderr.write(`makewaves: ${(err as Error).message}\n`);
  }
  const rows = [['DOMAIN', 'TENANT', 'SOURCE', 'ISSUER', 'NOT AFTER', 'NEXT RENEWAL', 'LAST ERROR']];
  for (const c of allDomainCerts(path.resolve(registry.config.dir, tls.certs), registry, status)) {
    const s = status.domains[c.domain];
    let next = '-';
    if (main.acme && wantsAcme(c)) next = s?.retryAt ? `${day(s.retryAt)} (retry)` : c.source === 'acme' ? `${day(s?.renewAt)}${s?.renewFrom === 'ari' ? ' (ARI)' : ''}` : 'now (ordering)';
    const source = c.source === 'file' && !c.covers ? 'file (another name)' : c.source;
    rows.push([c.domain, c.tenant, source, c.cert ? commonName(c.cert.issuer) : '-', c.cert ? day(new Date(c.cert.validTo).toISOString()) : '-', next, s?.lastError ?? '-']);
  }
  const widths = rows[0]!.slice(0, -1).map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  // One write: a reader that stops early (`| head`) gets a whole table or nothing.
  out.write(rows.map((r) => `${r.map((v, i) => (i < widths.length ? v.padEnd(widths[i]!) : v)).join('  ')}\n`).join(''));
  return 0;
}
