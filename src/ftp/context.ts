import path from 'node:path';
import type { SiteChanges } from '../core/contracts.ts';
import type { MainConfig } from '../core/config/schema.ts';
import { errorRef, replyCode } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Registry } from '../core/registry.ts';
import { parseListen } from '../lib/listen.ts';
import { TenantLogFiles } from '../lib/tenantlogs.ts';
import type { ControlConnection, FtpCommand } from './ftpsrv-adapter.ts';
import type { Fact } from './facts.ts';
import { FtpError, type JailFileSystem, TEMP_PREFIX } from './jailfs.ts';
import type { TlsAcceptor } from './tls.ts';
import { scanUsage, TenantUsage } from './usage.ts';
import { transferLine } from './xferlog.ts';

export type FtpConfig = NonNullable<MainConfig['ftp']>;
export type Command = FtpCommand;

/** One control connection. */
export interface Session {
  conn: ControlConnection;
  remote: string;
  log: Logger;
  login?: string;
  tenant?: string;
  fs?: JailFileSystem;
  /** A command (usually a transfer) is running. */
  busy: boolean;
  lastActivity: number;
  /** Data-socket byte count at the last idle check, to tell a slow transfer from a stalled one. */
  lastBytes: number;
  mlstFacts: Set<Fact>;
  queue: Promise<void>;
  /** Jail-relative source of a pending RNFR. */
  renameFrom?: string;
  /** The session's TLS acceptor, after AUTH TLS: its data connections must resume its TLS session. */
  tls?: TlsAcceptor;
  /** EPSV ALL was sent (RFC 2428 §4): PORT, PASV and EPRT are refused from then on. */
  epsvAll?: boolean;
}

/** FTPS, as start() set it up from the certificate files or the suite's store. */
export interface FtpTls {
  pair: { cert: Buffer; key: Buffer };
  /** The server side of TLS for one session (its control and data connections). */
  newAcceptor(): TlsAcceptor;
}

/** What every part of the FTP service shares: configuration, open sessions, quotas, the transfer log. */
export interface FtpContext {
  readonly cfg: FtpConfig;
  readonly log: Logger;
  /** The registry snapshot in force (a reload replaces it). */
  registry(): Registry;
  readonly siteChanges?: SiteChanges;
  readonly sessions: Set<Session>;
  /** Where passive listeners bind (where the control listener does) and the ports they may take ([0, 0]: the kernel's choice). */
  readonly passive: { host: string; range: [number, number] };
  /** Set by start() when FTPS is configured. */
  tls?: FtpTls;
  /** The usage of a tenant, scanned on first use. */
  usageOf(tenantId: string): Promise<TenantUsage>;
  /** A line in the tenant's transfer log; `command` names the protocol's verb (STOR, RETR, SFTP-PUT, SFTP-GET...). */
  transferLog(s: Pick<Session, 'tenant' | 'remote' | 'login'>, command: string, clientPath: string, bytes: number, t0: number, status: string): void;
  /** Replies with an FtpError's own code; anything else is our fault: a generic reply and a reference in the log. */
  replyError(s: Session, err: unknown, what: string): Promise<unknown>;
}

/** The context plus what only the service's lifecycle uses. */
export interface FtpState extends FtpContext {
  setRegistry(next: Registry): void;
  /** Rescans every tenant's usage (the quota rescan job). */
  rescan(): Promise<void>;
  /** Follows a reload: new quotas, usages of removed tenants dropped, new tenants scanned. */
  reloadUsages(next: Registry): void;
  /** The per-tenant transfer logs. */
  readonly xfer: TenantLogFiles;
}

export function createContext(registry: Registry, log: Logger, siteChanges: SiteChanges | undefined, metrics: Metrics | undefined): FtpState {
  let current = registry;
  const main = registry.config.main;
  const cfg = main.ftp!;
  const usages = new Map<string, TenantUsage>();
  const xfer = new TenantLogFiles(path.join(main.dataDir, 'logs'), 'ftp.log', log);
  const sessions = new Set<Session>();
  const [pasvMin = 0, pasvMax = 0] = cfg.passive ? cfg.passive.ports.split('-').map(Number) : [];

  /**
   * The usage of a tenant, scanned on first use (at start, or when a reload
   * adds the tenant: no upload of its can be running then, so upload
   * temporaries found are leftovers of a crash and are removed).
   */
  async function usageOf(tenantId: string): Promise<TenantUsage> {
    let u = usages.get(tenantId);
    if (u) return u;
    const tenant = current.tenants.get(tenantId)!;
    u = new TenantUsage(tenant.quota);
    usages.set(tenantId, u);
    u.used = await scanUsage(tenant.root, { removeTemps: TEMP_PREFIX });
    return u;
  }

  const transferred = metrics?.counter('makewaves_ftp_bytes_total', 'FTP file bytes moved, by direction (in: uploads, out: downloads).', ['direction']);
  metrics?.gauge('makewaves_ftp_sessions', 'Open FTP sessions.', () => sessions.size);

  return {
    cfg,
    log,
    siteChanges,
    sessions,
    xfer,
    passive: { host: parseListen(cfg.listen)!.host, range: [pasvMin, pasvMax] },
    registry: () => current,
    setRegistry(next) {
      current = next;
    },
    usageOf,
    async rescan() {
      for (const [id, tenant] of current.tenants) {
        const u = usages.get(id);
        if (!u) continue;
        const used = await scanUsage(tenant.root);
        if (used !== u.used) log.info({ tenant: id, was: u.used, now: used }, 'quota usage corrected by rescan');
        u.used = used;
      }
    },
    reloadUsages(next) {
      for (const [id, u] of usages) {
        const t = next.tenants.get(id);
        if (t) u.quota = t.quota;
        else usages.delete(id);
      }
      for (const id of next.tenants.keys()) if (!usages.has(id)) void usageOf(id).catch((err: Error) => log.error({ tenant: id, err: err.message }, 'quota scan failed'));
    },
    transferLog(s, command, clientPath, bytes, t0, status) {
      if (!s.tenant) return;
      if (bytes > 0) transferred?.inc({ direction: command === 'RETR' || command === 'SFTP-GET' ? 'out' : 'in' }, bytes);
      xfer.write(s.tenant, transferLine({ remote: s.remote, user: s.login ?? '-', command, path: clientPath, bytes, ms: Date.now() - t0, status }));
    },
    replyError(s, err, what) {
      if (err instanceof FtpError) return s.conn.reply(err.code, err.message);
      const ref = errorRef();
      s.log.error({ ref, err: (err as Error).stack ?? String(err), what }, 'ftp command failed');
      return s.conn.reply(replyCode('INTERNAL', 'ftp'), `Local error, ref ${ref}`);
    },
  };
}
