import path from 'node:path';
import { normalizeHost } from '../lib/hostname.ts';
import type { LoadedConfig } from './config/load.ts';
import type { TenantConfig } from './config/schema.ts';
import { LIST_SUFFIXES, PARAM_ROLES, type ListRole } from './listaddr.ts';
import { isBarePostmaster, parseRecipient, roleOf } from './recipient.ts';

/** How deep forward targets on hosted domains are followed (Postfix's alias expansion stops at a similar depth). */
export const MAX_FORWARD_DEPTH = 10;

/** The settings of one mailing list (`mail.lists.<name>` in a tenant file). */
export type ListConfig = NonNullable<TenantConfig['mail']>['lists'][string];

/**
 * Where mail for one envelope recipient goes, decided at RCPT time:
 * `forward` to external mailboxes (a list's `-owner` address is one), or
 * `list`, handed to the lists service, which takes members from state.
 */
export type RcptRoute =
  | {
      ok: true;
      kind: 'list';
      tenant: Tenant;
      /** The recipient as parsed: lower-case `local@domain`. */
      address: string;
      list: string;
      role: Exclude<ListRole, 'owner'>;
      /** What followed "+" for `confirm` (the token) and `bounces` (the VERP-encoded member); "" otherwise. */
      param: string;
      /** Always empty: the lists service, not the queue, decides who gets what. */
      targets: readonly string[];
      problems: readonly string[];
    }
  | {
      ok: true;
      kind: 'forward';
      tenant: Tenant;
      /** The recipient as parsed: lower-case `local@domain`. */
      address: string;
      /** External mailboxes after expanding forwards on hosted domains; never empty. */
      targets: readonly string[];
      /** Dead ends met while expanding (a loop, an unknown hosted address): worth a log line, not a refusal. */
      problems: readonly string[];
    }
  | {
      ok: true;
      kind: 'operator';
      /**
       * The recipient as parsed: lower-case `postmaster@domain` or
       * `abuse@domain`, or `postmaster` (no domain). No tenant: the mail is
       * the operator's (`mail.postmaster`), whichever domain it came to.
       */
      address: string;
      role: 'postmaster' | 'abuse';
      /** `mail.postmaster` after expanding forwards on hosted domains; never empty. */
      targets: readonly string[];
      problems: readonly string[];
    }
  | {
      ok: false;
      /**
       * `syntax`: not an address; `relay-denied`: a domain we do not host, or a local part that routes elsewhere
       * (percent hack, bang path, quoted `@`); `unknown-user`: hosted domain, no such address and no catch-all;
       * `loop`: the forwards of this address lead only back to themselves or too deep;
       * `suspended`: the domain's tenant is suspended (a temporary refusal: the sender retries).
       */
      reason: 'syntax' | 'relay-denied' | 'unknown-user' | 'loop' | 'suspended';
      tenant?: Tenant;
      detail: string;
      /** Set for postmaster@ and abuse@ (RFC 5321 §4.5.1, RFC 2142) that `mail.postmaster` would have taken, had it been set. */
      noPostmaster?: true;
    };

interface Expansion {
  targets: string[];
  problems: string[];
  looped: boolean;
}

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
  /** Public keys (authorized_keys lines) that may log in over SFTP. */
  readonly keys: readonly string[];
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
  /** True while the tenant is suspended (`suspended:` in its file): HTTP 503, no FTP login, mail 450. */
  readonly suspended: boolean;
  readonly config: TenantConfig;
  /** The tenant's own certificate files (absolute), when its file names them. */
  readonly tlsFiles: { cert: string; key: string } | undefined;
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
  /** `local@domain` → its forward, expanded once here. */
  private readonly forwards = new Map<string, Expansion>();
  /** domain → its catch-all, expanded once here. */
  private readonly catchAlls = new Map<string, Expansion>();
  private readonly ftpAccounts: Map<string, FtpAccount>;
  /** `local@domain` of every list address (but -owner, a forward) → its list and role. */
  private readonly listAddrs = new Map<string, { tenant: Tenant; list: string; role: Exclude<ListRole, 'owner'> }>();
  /** `mail.postmaster` expanded like a forward (undefined when it is not set): where postmaster@ and abuse@ go when their tenant has no forward of that name. */
  private operator: Expansion | undefined;
  /** The server's own names, which take postmaster@ and abuse@ only: `hostname` and `smtp.srsDomain`. */
  private readonly ownNames: ReadonlySet<string>;
  /** Host name of the personal-pages site (`http://<userdir>/~<id>/`), if configured. */
  readonly userdir: string | undefined;
  /** Host name of the control panel (`panel.host`), if configured. */
  readonly panelHost: string | undefined;

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
        suspended: entry.config.suspended !== false,
        config: entry.config,
        tlsFiles: entry.config.tls
          ? { cert: path.resolve(path.dirname(entry.file), entry.config.tls.cert), key: path.resolve(path.dirname(entry.file), entry.config.tls.key) }
          : undefined,
      });
      tenants.set(tenant.id, tenant);
      for (const d of tenant.domains) hosts.set(d, tenant);
      for (const u of entry.config.ftp) {
        const login = `${u.user}@${tenant.id}`;
        ftpAccounts.set(login, Object.freeze({ login, tenant, hash: u.password, keys: Object.freeze([...u.keys]) }));
      }
    }
    this.tenants = tenants;
    this.hosts = hosts;
    this.ftpAccounts = ftpAccounts;
    this.userdir = config.main.http.userdir;
    this.panelHost = config.main.panel?.host;
    this.ownNames = new Set([config.main.hostname, ...(config.main.smtp?.srsDomain ? [config.main.smtp.srsDomain] : [])]);
    this.precomputeMailRoutes();
  }

  private precomputeMailRoutes(): void {
    const postmaster = this.config.main.mail?.postmaster;
    const rawForward = new Map<string, readonly string[]>();
    const rawCatchAll = new Map<string, string>();
    for (const t of this.tenants.values()) {
      const mail = t.config.mail;
      if (!mail) continue;
      for (const d of t.domains) {
        for (const [local, targets] of Object.entries(mail.forward)) rawForward.set(`${local.toLowerCase()}@${d}`, targets);
        if (mail.catchAll) rawCatchAll.set(d, mail.catchAll);
        for (const [name, list] of Object.entries(mail.lists)) {
          for (const [suffix, role] of LIST_SUFFIXES) {
            // `news-owner` reaches the owner: a forward like any other (expanded below if the owner is hosted here).
            if (role === 'owner') rawForward.set(`${name}${suffix}@${d}`, [list.owner]);
            else this.listAddrs.set(`${name}${suffix}@${d}`, { tenant: t, list: name, role });
          }
        }
      }
    }
    // Depth-first over hosted targets. `path` holds the addresses on the way
    // down (a repeat there is a loop); `seen` drops duplicates reached by two
    // branches, so each external mailbox gets one copy.
    const expand = (start: readonly string[], startPath: readonly string[]): Expansion => {
      const out: Expansion = { targets: [], problems: [], looped: false };
      const seen = new Set<string>();
      const walk = (addr: string, path: string[]): void => {
        if (path.includes(addr)) {
          out.looped = true;
          out.problems.push(`forwarding loop: ${[...path, addr].join(' → ')}`);
          return;
        }
        if (path.length > MAX_FORWARD_DEPTH) {
          out.looped = true;
          out.problems.push(`forwarding deeper than ${MAX_FORWARD_DEPTH}: ${[...path, addr].join(' → ')}`);
          return;
        }
        if (seen.has(addr)) return;
        seen.add(addr);
        const at = addr.lastIndexOf('@');
        const domain = addr.slice(at + 1);
        const hosted = this.hosts.has(domain);
        // postmaster@ and abuse@ reach the operator as they do at RCPT (see route()).
        const toOperator = postmaster !== undefined && roleOf(addr.slice(0, at)) !== undefined && (hosted ? !rawForward.has(addr) && !this.listAddrs.has(addr) : this.ownNames.has(domain));
        if (!hosted && !toOperator) {
          out.targets.push(addr);
          return;
        }
        const next = rawForward.get(addr) ?? (toOperator ? [postmaster] : undefined) ?? (rawCatchAll.has(domain) ? [rawCatchAll.get(domain)!] : undefined);
        if (!next) {
          out.problems.push(`${[...path, addr].join(' → ')}: no such address here`);
          return;
        }
        for (const n of next) walk(n, [...path, addr]);
      };
      for (const a of start) walk(a, [...startPath]);
      return out;
    };
    for (const [addr, targets] of rawForward) this.forwards.set(addr, expand(targets, [addr]));
    for (const [domain, target] of rawCatchAll) this.catchAlls.set(domain, expand([target], [`*@${domain}`]));
    if (postmaster !== undefined) this.operator = expand([postmaster], []);
  }

  /**
   * Routes one envelope recipient (RCPT TO): a forward of a hosted domain,
   * else its catch-all, else a refusal with the reason. postmaster@ and
   * abuse@ of a hosted domain without its own forward (or list) of that
   * name, of the server's own names, and bare `postmaster` go to
   * `mail.postmaster` when it is set (kind `operator`). O(1) after parsing:
   * every forward, catch-all and `mail.postmaster` was expanded in the
   * constructor.
   */
  route(address: string): RcptRoute {
    const p = parseRecipient(address);
    if (!p.ok) {
      if (isBarePostmaster(address)) return this.operatorRoute('postmaster', 'postmaster') ?? { ok: false, reason: 'syntax', detail: 'postmaster without a domain, and mail.postmaster is not set', noPostmaster: true };
      return { ok: false, reason: p.why === 'syntax' ? 'syntax' : 'relay-denied', detail: p.detail };
    }
    const addr = `${p.local}@${p.domain}`;
    // postmaster@ and abuse@ (RFC 5321 §4.5.1, RFC 2142): the tenant's own forward or list of that name, else the operator's mailbox.
    const role = roleOf(p.local);
    const tenant = this.hosts.get(p.domain);
    if (!tenant) {
      if (role && this.ownNames.has(p.domain)) {
        return this.operatorRoute(role, addr) ?? { ok: false, reason: 'relay-denied', detail: `${p.domain} is this server's own name, and mail.postmaster is not set`, noPostmaster: true };
      }
      return { ok: false, reason: 'relay-denied', detail: `${p.domain} is not hosted here` };
    }
    // Before the address lookup: every address of a suspended tenant's domains waits alike, but for the operator's.
    if (tenant.suspended) {
      return (role && this.operatorRoute(role, addr)) || { ok: false, reason: 'suspended', tenant, detail: `tenant ${tenant.id} is suspended`, ...(role && !this.operator ? { noPostmaster: true } : {}) };
    }
    // Lists come between forwards and the catch-all (the config refuses a
    // forward named like a list address, so the order only matters for -owner).
    const list = this.listRoute(p.local, p.domain);
    if (list) return list;
    const own = this.forwards.get(addr);
    if (role && !own?.targets.length) {
      // The tenant's catch-all is not asked: these addresses are for reaching whoever runs the mail service.
      const op = this.operatorRoute(role, addr);
      if (op) return op;
    }
    const exp = own ?? this.catchAlls.get(p.domain);
    const unset = role ? { noPostmaster: true as const } : {};
    if (!exp) return { ok: false, reason: 'unknown-user', tenant, detail: `no forward for ${addr} and no catch-all`, ...unset };
    if (exp.targets.length === 0) {
      return { ok: false, reason: exp.looped ? 'loop' : 'unknown-user', tenant, detail: exp.problems.join('; '), ...unset };
    }
    return { ok: true, kind: 'forward', tenant, address: addr, targets: exp.targets, problems: exp.problems };
  }

  /**
   * The route of `address` (postmaster@ or abuse@ of some domain, or bare
   * postmaster) to `mail.postmaster`: undefined when that is not set; a
   * refusal when it leads nowhere (a loop through hosted forwards).
   */
  private operatorRoute(role: 'postmaster' | 'abuse', address: string): RcptRoute | undefined {
    const op = this.operator;
    if (!op) return undefined;
    if (op.targets.length === 0) return { ok: false, reason: op.looped ? 'loop' : 'unknown-user', detail: `mail.postmaster leads nowhere: ${op.problems.join('; ')}` };
    return { ok: true, kind: 'operator', address, role, targets: op.targets, problems: op.problems };
  }

  /** `mail.postmaster` as routed (undefined when it is not set): its external mailboxes, or the problems that leave it none. */
  postmaster(): { targets: readonly string[]; problems: readonly string[] } | undefined {
    return this.operator && { targets: this.operator.targets, problems: this.operator.problems };
  }

  /** The list route of `local@domain` (lower case), if it is a list address: exact, or `<base>+<param>` for confirm and bounces. */
  private listRoute(local: string, domain: string): RcptRoute | undefined {
    const exact = this.listAddrs.get(`${local}@${domain}`);
    if (exact) return { ok: true, kind: 'list', address: `${local}@${domain}`, param: '', targets: [], problems: [], ...exact };
    const plus = local.indexOf('+');
    if (plus <= 0) return undefined;
    const base = this.listAddrs.get(`${local.slice(0, plus)}@${domain}`);
    if (!base || !PARAM_ROLES.has(base.role)) return undefined;
    return { ok: true, kind: 'list', address: `${local}@${domain}`, param: local.slice(plus + 1), targets: [], problems: [], ...base };
  }

  /** The settings of list `name` of `tenant`, or undefined when it has no such list. O(1). */
  listConfig(tenant: Tenant, name: string): ListConfig | undefined {
    const lists = tenant.config.mail?.lists;
    return lists && Object.hasOwn(lists, name) ? lists[name] : undefined;
  }

  /** True when mail for `domain` (lower case) is ours to accept. */
  hostsDomain(domain: string): boolean {
    return this.hosts.has(domain);
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

  /** True when `host` (a Host field: any case, a port, a final dot) names the control panel. */
  isPanelHost(host: string | undefined): boolean {
    return host !== undefined && this.panelHost !== undefined && normalizeHost(host) === this.panelHost;
  }

  /** True when `host` names the personal-pages site. */
  isUserdirHost(host: string | undefined): boolean {
    return host !== undefined && this.userdir !== undefined && normalizeHost(host) === this.userdir;
  }
}
