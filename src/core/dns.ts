import { promises as dnsPromises } from 'node:dns';

/** The top-level `dns:` setting (smtp.dns is its old name). */
export interface DnsSettings {
  servers: readonly string[];
  /** Seconds to wait for one answer. */
  timeout: number;
}

/**
 * The resolver for every lookup the suite makes (MX for delivery, the DNS
 * records `makewaves dns --check` reads): the configured servers (two tries,
 * `timeout` seconds each), or the system's (/etc/resolv.conf) without a setting.
 */
export function suiteResolver(dns: DnsSettings | undefined): dnsPromises.Resolver {
  if (!dns) return new dnsPromises.Resolver();
  const r = new dnsPromises.Resolver({ timeout: Math.round(dns.timeout * 1000), tries: 2 });
  r.setServers([...dns.servers]);
  return r;
}
