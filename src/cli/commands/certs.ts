import { certOverview } from '../../core/certview.ts';
import { ConfigError, loadConfig } from '../../core/config/load.ts';
import { Registry } from '../../core/registry.ts';

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
  const view = certOverview(registry);
  if (!view) {
    process.stderr.write(`makewaves: no http.tls in ${configDir}/makewaves.yaml: nothing is served over HTTPS\n`);
    return 1;
  }
  if (view.statusError) process.stderr.write(`makewaves: ${view.statusError}\n`);
  const rows = [['DOMAIN', 'TENANT', 'SOURCE', 'ISSUER', 'NOT AFTER', 'NEXT RENEWAL', 'LAST ERROR']];
  for (const c of view.rows) rows.push([c.domain, c.tenant, c.source, c.issuer, c.notAfter, c.next, c.lastError]);
  const widths = rows[0]!.slice(0, -1).map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  // One write: a reader that stops early (`| head`) gets a whole table or nothing.
  out.write(rows.map((r) => `${r.map((v, i) => (i < widths.length ? v.padEnd(widths[i]!) : v)).join('  ')}\n`).join(''));
  return 0;
}
