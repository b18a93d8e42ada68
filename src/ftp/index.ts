import type { CertStore } from '../core/certs.ts';
import type { WebRootWriter } from '../core/contracts.ts';
import { webRootWriter } from './webroot.ts';
import type { SiteChanges } from '../core/contracts.ts';
import type { Job, Service } from '../core/lifecycle.ts';
import type { Logger } from '../core/log.ts';
import { observeFtpLogin, type Metrics } from '../core/metrics.ts';
import type { Registry } from '../core/registry.ts';
import { formatAddress, listenOn, parseListen } from '../lib/listen.ts';
import type { FtpLoginLocks } from '../state/index.ts';
import { createAdmission } from './admission.ts';
import { createContext, type Session } from './context.ts';
import { openSession } from './control.ts';
import { lsLine } from './facts.ts';
import { loadFtpTls } from './ftps.ts';
import { bunyanAdapter, startFtpSrv, type ControlConnection } from './ftpsrv-adapter.ts';
import { FtpError } from './jailfs.ts';
import { login } from './login.ts';
import { createSftpServer, type SftpServer } from './sftp.ts';
import { loadOrCreateHostKeys } from '../core/hostkeys.ts';

export { activeTarget } from './datachannel.ts';

export interface FtpDeps {
  registry: Registry;
  log: Logger;
  /** Told after every upload, delete, rename and folder change, so HTTP serves the new state at once. */
  siteChanges?: SiteChanges;
  /** The suite's certificate store: FTPS uses its default certificate when `ftp.tls` names no files. */
  certs?: CertStore;
  metrics?: Metrics;
  /** Login failures and locks (state, so the operator's `makewaves ftp unlock` reaches a running server). */
  logins: FtpLoginLocks;
}

/**
 * FTP upload into each tenant's web root: ftp-srv speaks the protocol
 * (through ftpsrv-adapter.ts); this service supplies the jail
 * (jailfs.ts), virtual users and login throttling (login.ts), quotas and
 * atomic uploads (upload.ts), downloads and listings (transfers.ts), data
 * connections that only the client can use and no FTP bounce
 * (datachannel.ts, connectors.ts), FTPS (ftps.ts, tls.ts), command reading
 * and AUTH TLS (control.ts, dispatch.ts, commands.ts), connection caps
 * and idle timeouts (admission.ts).
 */
export function createFtpService({ registry, log: rootLog, siteChanges, certs, metrics, logins }: FtpDeps): Service & { webRoot: WebRootWriter } {
  const ctx = createContext(registry, rootLog.child({ svc: 'ftp' }), siteChanges, metrics);
  const { cfg, log, sessions } = ctx;
  const byConn = new WeakMap<ControlConnection, Session>();
  const admission = createAdmission(ctx);
  let sweeper: NodeJS.Timeout | undefined;
  let ftp: ReturnType<typeof startFtpSrv> | undefined;
  let connId = 0;
  let sftp: SftpServer | undefined;

  return {
    name: 'ftp',
    // The panel's uploads, through this service's jail and quota counters.
    webRoot: webRootWriter(ctx),
    async start() {
      const listen = parseListen(cfg.listen)!;
      ctx.tls = loadFtpTls(ctx, registry.config.dir, certs);
      if (!ctx.tls) log.info({ offer: 'ftps', why: 'ftp.tls is not configured' }, 'FTPS (AUTH TLS) is off: ftp.tls is not configured');
      ftp = startFtpSrv(
        {
          url: `ftp://${formatAddress(listen)}`,
          pasv_url: cfg.passive?.address ?? '127.0.0.1',
          pasv_min: ctx.passive.range[0],
          pasv_max: ctx.passive.range[1],
          anonymous: false,
          greeting: ['makewaves FTP: log in as user@<your domain>'],
          tls: ctx.tls ? { ...ctx.tls.pair, minVersion: 'TLSv1.2' } : false,
          file_format: (st) => lsLine(st as Parameters<typeof lsLine>[0]),
          log: bunyanAdapter(log),
        },
        {
          onSocket: admission.admit,
          onConnection: (conn) => byConn.set(conn, openSession(ctx, conn, ++connId)),
          login(conn, username, password) {
            const s = byConn.get(conn);
            if (!s) return Promise.reject(new FtpError(421, 'Connection closing'));
            return observeFtpLogin(metrics, login(ctx, logins, s, username, password), () => ctx.registry().ftpAccount(username.toLowerCase())?.tenant.id);
          },
        },
      );
      logins.dropPending(); // reservations of a process that stopped mid-check
      for (const id of ctx.registry().tenants.keys()) await ctx.usageOf(id);
      const bound = await listenOn(ftp.server, listen, 'ftp');
      const urls = [`ftp://${formatAddress(bound)}`];
      const sftpCfg = registry.config.main.sftp;
      if (sftpCfg) {
        sftp = createSftpServer(ctx, logins, sftpCfg, loadOrCreateHostKeys(registry.config.main.dataDir));
        urls.push(`sftp://${formatAddress(await listenOn(sftp.server, parseListen(sftpCfg.listen)!, 'sftp'))}`);
      }
      sweeper = setInterval(admission.sweep, Math.max(50, Math.min((cfg.idleTimeout * 1000) / 4, 5_000)));
      sweeper.unref();
      return urls;
    },
    async stop(graceMs) {
      if (sweeper) clearInterval(sweeper);
      if (sftp) {
        const srv = sftp.server;
        const closed = new Promise<void>((r) => srv.close(() => r()));
        // Uploads cut short are dropped before the stop ends: nothing is written into the sites after it.
        await sftp.closeAll(Math.max(graceMs, 2000));
        await closed;
        sftp = undefined;
      }
      if (!ftp) return;
      const srv = ftp.server;
      const closed = new Promise<void>((r) => srv.close(() => r()));
      const deadline = Date.now() + graceMs;
      while (sessions.size > 0 && [...sessions].some((s) => s.busy) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 25));
      }
      // Commands still running (a transfer cut by the shutdown) finish after their sockets go
      // and write their transfer-log line then: the logs are closed after them.
      const running = [...sessions].map((s) => s.queue);
      for (const s of [...sessions]) {
        await Promise.race([s.conn.close(421, 'Service shutting down'), new Promise((r) => setTimeout(r, 200))]);
        s.conn.commandSocket.destroy();
      }
      sessions.clear();
      for (const sock of admission.sockets) sock.destroy();
      await closed;
      ftp.dispose();
      ftp = undefined;
      await Promise.race([Promise.allSettled(running), new Promise((r) => setTimeout(r, 1_000).unref())]);
      await ctx.xfer.close();
    },
    reload(next) {
      return () => {
        ctx.setRegistry(next);
        sftp?.reload(next);
        // A suspension ends the tenant's open sessions too; a transfer cut here was never published.
        for (const s of [...sessions]) {
          if (s.tenant === undefined || !next.tenants.get(s.tenant)?.suspended) continue;
          s.log.info({ why: 'tenant suspended' }, 'ftp session closed');
          sessions.delete(s);
          void s.conn.close(421, 'This account has been suspended; closing the connection');
        }
        ctx.reloadUsages(next);
      };
    },
    jobs(): Job[] {
      return [
        { name: 'ftp quota rescan', schedule: cfg.quotaRescan, run: ctx.rescan },
        { name: 'ftp login throttle prune', schedule: '*/10 * * * *', run: () => logins.prune(ctx.registry().config.main.ftp!.lockout.windowSeconds * 1000) },
        { name: 'rotate ftp transfer logs', schedule: '0 0 * * *', run: () => ctx.xfer.rotate(ctx.registry().config.main.ftp?.transferLog.keepDays ?? 14) },
      ];
    },
  };
}
