import path from 'node:path';
import { normalizeHost } from '../lib/hostname.ts';
import type { LoadedConfig } from './config/load.ts';
import type { TenantConfig } from './config/schema.ts';

export interface ProxyRoute {
  /** URL path prefix, starting and ending with "/". */
  readonly prefix: string;
  /** Upstream origin, e.g. `http://127.0.0.1:9000`. */
  readonly origin: string;
  /**
   * The upstream path that replaces `prefix`, or undefined to pass the
   * request path unchanged (nginx's proxy_pass rule: a URL with a path
   * replaces the matched prefix, one without passes the path as is).
   */
  readonly replace: string | undefined;
}

/** One FTP login: `user@<tenant id>`, its tenant and its password hash. */
export interface FtpAccount {
  readonly login: string;
  readonly tenant: Tenant;
  readonly hash: string;
}

export interface Tenant {
  readonly id: string;
  readonly domains: readonly string[];
  /** Absolute path of the tenant's web root: `<sites>/<id>`. */
  readonly root: string;
  /** Disk quota in bytes, if any. */
  readonly quota: number | undefined;
  /** Proxy routes, longest prefix first. */
  readonly proxy: readonly ProxyRoute[];
  readonly config: TenantConfig;
}

/**
 * An immutable snapshot of the configuration with the lookups the services
 * need. A reload builds a new Registry and swaps it in whole; sessions
 * already open keep the one they started with.
 */
export class Registry {
  readonly config: LoadedConfig;
  readonly tenants: ReadonlyMap<string, Tenant>;
  private readonly hosts: Map<string, Tenant>;
  private readonly ftpAccounts: Map<string, FtpAccount>;
  /** Host name of the personal-pages site (`http://<userdir>/~<id>/`), if configured. */
  readonly userdir: string | undefined;

  constructor(config: LoadedConfig) {
    this.config = config;
    const tenants = new Map<string, Tenant>();
    const hosts = new Map<string, Tenant>();
    const ftpAccounts = new Map<string, FtpAccount>();
    for (const entry of config.tenants) {
      const tenant: Tenant = Object.freeze({
        id: entry.id,
        domains: entry.config.domains,
        root: path.join(config.main.sitesDir, entry.id),
        quota: entry.config.quota,
        proxy: Object.freeze(
          entry.config.proxy
            .map((p): ProxyRoute => {
              const url = new URL(p.to);
              const hasPath = url.pathname !== '/' || p.to.endsWith('/');
              return { prefix: p.path, origin: url.origin, replace: hasPath ? url.pathname : undefined };
            })
            .sort((a, b) => b.prefix.length - a.prefix.length),
        ),
        config: entry.config,
      });
      tenants.set(tenant.id, tenant);
      for (const d of tenant.domains) hosts.set(d, tenant);
      for (const u of entry.config.ftp) {
        const login = `${u.user}@${tenant.id}`;
        ftpAccounts.set(login, Object.freeze({ login, tenant, hash: u.password }));
      }
    }
    this.tenants = tenants;
    this.hosts = hosts;
    this.ftpAccounts = ftpAccounts;
    this.userdir = config.main.http.userdir;
  }

  /**
   * The tenant serving an HTTP Host header value: case-insensitive, port
   * and trailing dot ignored. O(1): one Map lookup (two on a miss).
   */
  tenantForHost(host: string | undefined): Tenant | undefined {
    if (!host) return undefined;
    return this.hosts.get(host) ?? this.hosts.get(normalizeHost(host));
  }

  /** The FTP account for a login name `user@<tenant id>` (case-insensitive). O(1). */
  ftpAccount(login: string): FtpAccount | undefined {
    return this.ftpAccounts.get(login) ?? this.ftpAccounts.get(login.toLowerCase());
  }

  /** True when `host` names the personal-pages site. */
  isUserdirHost(host: string | undefined): boolean {
    return host !== undefined && this.userdir !== undefined && normalizeHost(host) === this.userdir;
  }
}
