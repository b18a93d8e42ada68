import { closeSync, openSync, readFileSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { mkdir, realpath } from 'node:fs/promises';
import { isIP, type Server as NetServer, type Socket } from 'node:net';
import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { TLSSocket } from 'node:tls';
import { FtpSrv } from 'ftp-srv';
import type { CertStore } from '../core/certs.ts';
import { observeFtpLogin, type Metrics } from '../core/metrics.ts';
import type { SiteChanges } from '../core/contracts.ts';
import { errorRef } from '../core/errors.ts';
import type { Job, Service } from '../core/lifecycle.ts';
import type { Logger } from '../core/log.ts';
import type { Registry } from '../core/registry.ts';
import type { FtpLoginLocks, LoginRule } from '../state/index.ts';
import { formatAddress, listenOn, parseListen } from '../lib/listen.ts';
import { DUMMY_HASH, verifyPassword } from '../lib/password.ts';
import { bunyanAdapter } from './bunyan.ts';
import { Bluebird } from './promise.ts';
import { ActiveConnector, PassiveConnector, plainIp, sameIp, type DataConnector } from './connectors.ts';
import { TlsAcceptor } from './tls.ts';
import { factLine, lsLine, MLST_FACTS, timeVal, type Fact } from './facts.ts';
import { FtpError, JailFileSystem, TEMP_PREFIX } from './jailfs.ts';
import { DiskError, receive, SMALL_UPLOAD } from './receive.ts';
import { scanUsage, TenantUsage } from './usage.ts';
import { transferLine } from './xferlog.ts';
import { TenantLogFiles } from '../lib/tenantlogs.ts';

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

/** ftp-srv's connection internals this service drives (not in its typings). */
interface Conn {
  id: string;
  commandSocket: Socket;
  connector: DataConnector;
  commands: { parse(line: string): Command; handle(cmd: Command): Promise<unknown> };
  authenticated?: boolean;
  username?: string;
  restByteCount: number | undefined;
  secure: boolean;
  encoding: string;
  reply(options: number | object, ...letters: unknown[]): Promise<unknown>;
  close(code?: number, message?: string): Promise<unknown>;
  on(event: string, fn: (...args: never[]) => void): void;
}
interface Command {
  directive: string;
  arg: string | null;
  flags: string[];
  raw: string;
}

/** One control connection. */
interface Session {
  conn: Conn;
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

/** After a quota cut, at most this much of the rest of an upload is read (and dropped) before the connection is reset. */
const DISCARD_MAX = 64 * 1024 * 1024;

/** Commands read but not yet answered, per session, before reading pauses. */
const MAX_PENDING = 64;

/** Longest command line accepted (RFC 959 sets none; 4 KiB is ample for a 1 KiB path). */
const MAX_LINE = 4096;

/** Parses a PORT (RFC 959 §4.1.2) or EPRT (RFC 2428 §2) argument; undefined when malformed. */
export function activeTarget(directive: 'PORT' | 'EPRT', arg: string | null): { host: string; port: number } | undefined {
  if (!arg) return undefined;
  if (directive === 'PORT') {
    const m = /^\s*(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})\s*$/.exec(arg);
    if (!m) return undefined;
    const n = m.slice(1).map(Number);
    if (n.some((x) => x > 255)) return undefined;
    return { host: n.slice(0, 4).join('.'), port: n[4]! * 256 + n[5]! };
  }
  const d = arg.trim()[0];
  if (!d) return undefined;
  const parts = arg.trim().split(d);
  if (parts.length !== 5 || parts[0] !== '' || parts[4] !== '') return undefined;
  const [, proto, host, portText] = parts;
  const port = Number(portText);
  if (!/^\d{1,5}$/.test(portText!) || port > 65535) return undefined;
  if ((proto === '1' && isIP(host!) !== 4) || (proto === '2' && isIP(host!) !== 6) || (proto !== '1' && proto !== '2')) return undefined;
  return { host: host!, port };
}

/**
 * FTP upload into each tenant's web root: ftp-srv speaks the protocol; this
 * service supplies the jail ({@link JailFileSystem}), virtual users
 * (`user@<tenant id>`, scrypt), quotas, atomic uploads, login throttling,
 * connection caps, idle timeouts, MLSD/MLST, and refuses SITE and PORT/EPRT
 * toward any address but the client's own (FTP bounce).
 */
export function createFtpService({ registry, log: rootLog, siteChanges, certs, metrics, logins }: FtpDeps): Service {
  const log = rootLog.child({ svc: 'ftp' });
  let current = registry;
  const main = registry.config.main;
  const cfg = main.ftp!;
  const usages = new Map<string, TenantUsage>();
  const xfer = new TenantLogFiles(path.join(main.dataDir, 'logs'), 'ftp.log', log);
  const sessions = new Set<Session>();
  const byConn = new WeakMap<Conn, Session>();
  const perIp = new Map<string, number>();
  /** Every accepted control socket, so stop() can end the ones that never became sessions. */
  const sockets = new Set<Socket>();
  const idleMs = cfg.idleTimeout * 1000;
  let sweeper: NodeJS.Timeout | undefined;
  let ftp: FtpSrv | undefined;
  let connId = 0;

  /** Read in start(), so a missing file is a start failure naming it (and startAll rolls back). */
  let tlsOptions: { cert: Buffer; key: Buffer } | undefined;
  /** Makes the server side of TLS for one FTPS session (its control and data connections); set in start(). */
  let newAcceptor: (() => TlsAcceptor) | undefined;
  const [pasvMin = 0, pasvMax = 0] = cfg.passive ? cfg.passive.ports.split('-').map(Number) : [];
  /** Passive listeners bind where the control listener does. */
  const listenHost = parseListen(cfg.listen)!.host;

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

  async function rescan(): Promise<void> {
    for (const [id, tenant] of current.tenants) {
      const u = usages.get(id);
      if (!u) continue;
      const used = await scanUsage(tenant.root);
      if (used !== u.used) log.info({ tenant: id, was: u.used, now: used }, 'quota usage corrected by rescan');
      u.used = used;
    }
  }

  const transferred = metrics?.counter('makewaves_ftp_bytes_total', 'FTP file bytes moved, by direction (in: uploads, out: downloads).', ['direction']);
  metrics?.gauge('makewaves_ftp_sessions', 'Open FTP sessions.', () => sessions.size);

  function transferLog(s: Session, command: string, clientPath: string, bytes: number, t0: number, status: string): void {
    if (!s.tenant) return;
    if (bytes > 0) transferred?.inc({ direction: command === 'RETR' ? 'out' : 'in' }, bytes);
    xfer.write(s.tenant, transferLine({ remote: s.remote, user: s.login ?? '-', command, path: clientPath, bytes, ms: Date.now() - t0, status }));
  }

  /** Replies with an FtpError's own code; anything else is our fault: a generic reply and a reference in the log. */
  function replyError(s: Session, err: unknown, what: string): Promise<unknown> {
    if (err instanceof FtpError) return s.conn.reply(err.code, err.message);
    const ref = errorRef();
    s.log.error({ ref, err: (err as Error).stack ?? String(err), what }, 'ftp command failed');
    return s.conn.reply(451, `Local error, ref ${ref}`);
  }

  /** The file system handed to ftp-srv: the jail, with every unexpected error turned into a reply without host paths. */
  function forFtpSrv(s: Session, fs: JailFileSystem): object {
    const wrap =
      <A extends unknown[], R>(name: string, fn: (...a: A) => Promise<R> | R) =>
      async (...a: A): Promise<R> => {
        try {
          return await fn.apply(fs, a);
        } catch (err) {
          if (err instanceof FtpError) throw err;
          const ref = errorRef();
          s.log.error({ ref, op: name, err: (err as Error).message }, 'ftp file operation failed');
          throw new FtpError(451, `Local error, ref ${ref}`);
        }
      };
    return {
      currentDirectory: () => fs.currentDirectory(),
      get: wrap('get', fs.get),
      list: wrap('list', fs.list),
      chdir: wrap('chdir', fs.chdir),
      read: wrap('read', fs.read),
      delete: wrap('delete', fs.delete),
      mkdir: wrap('mkdir', fs.mkdir),
      rename: wrap('rename', fs.rename),
      chmod: wrap('chmod', fs.chmod),
      write: wrap('write', fs.write),
      getUniqueName: (n: string) => fs.getUniqueName(n),
    };
  }

  /**
   * What one login attempt counts against: the account from this address
   * (locks the address out of that account only: anyone can still fail at
   * someone else's account without locking its owner out), the account from
   * everywhere (a slower ceiling against guessing from many addresses), and
   * the address for every account (one address guessing at many).
   */
  function loginRules(name: string, remote: string): LoginRule[] {
    const l = cfg.lockout;
    return [
      { key: `pair:${name}|${remote}`, account: name, limit: l.failures },
      { key: `account:${name}`, account: name, limit: l.accountFailures },
      { key: `address:${remote}`, account: '', limit: l.addressFailures },
    ];
  }

  async function login(s: Session, username: string, password: string): Promise<object> {
    const name = username.toLowerCase();
    const windowMs = cfg.lockout.windowSeconds * 1000;
    const rules = loginRules(name, s.remote);
    // Counted before the (slow) password check: parallel attempts cannot all pass while the count is low.
    const reserved = logins.reserve(rules, windowMs);
    if ('lockedMs' in reserved) {
      s.log.warn({ user: name, why: 'locked', key: reserved.key }, 'ftp login refused: too many failures');
      throw new FtpError(530, `Too many failed logins; try again in ${Math.ceil(reserved.lockedMs / 60_000)} minutes`);
    }
    const account = current.ftpAccount(name);
    let ok: boolean;
    try {
      // An unknown user costs the same scrypt work as a known one (no user enumeration by timing).
      ok = (await verifyPassword(password, account?.hash ?? DUMMY_HASH)) && account !== undefined;
    } catch (err) {
      logins.succeeded(reserved.ticket, []); // our failure, not the client's: the reservation goes, nothing is forgiven
      throw err;
    }
    if (!account || !ok) {
      const why = !name.includes('@') ? 'not a user@tenant login' : !account ? 'no such user' : 'wrong password';
      const locked = logins.failed(reserved.ticket, rules, windowMs, cfg.lockout.lockSeconds * 1000);
      s.log.info({ user: name, why }, 'ftp login failed');
      if (locked.length > 0) {
        s.log.warn({ user: name, locked, minutes: cfg.lockout.lockSeconds / 60 }, 'ftp login locked after repeated failures');
      }
      throw new FtpError(530, 'Login incorrect');
    }
    // This address's failures at this account are forgiven; the account's and the address's are
    // not, or one valid login would reset the count between guesses at other passwords.
    logins.succeeded(reserved.ticket, [rules[0]!.key]);
    const tenant = account.tenant;
    // Checked after the password, so the reply tells a suspension only to someone who knows it.
    if (tenant.suspended) {
      s.log.info({ user: name, tenant: tenant.id, why: 'tenant suspended' }, 'ftp login refused');
      throw new FtpError(530, 'This account is suspended; please contact your hosting provider');
    }
    await mkdir(tenant.root, { recursive: true });
    const root = await realpath(tenant.root);
    s.login = account.login;
    s.tenant = tenant.id;
    s.log = s.log.child({ tenant: tenant.id, user: account.login });
    s.fs = new JailFileSystem(root, await usageOf(tenant.id), s.log);
    s.log.info('ftp login');
    return { fs: forFtpSrv(s, s.fs) };
  }

  /**
   * The data connection of a transfer command, with its 150. Over TLS the
   * data connection's handshake completes only once the client starts it,
   * and clients such as lftp start it after the 150 (as vsftpd answers):
   * then the 150 comes first. Without a connection: `cleanup`, 425, and
   * undefined.
   */
  async function dataConnection(s: Session, text: string, cleanup?: () => unknown): Promise<Socket | undefined> {
    const conn = s.conn;
    const early = conn.secure;
    if (early) await conn.reply(150, text);
    let socket: Socket;
    try {
      socket = await conn.connector.waitForConnection();
    } catch {
      await cleanup?.();
      conn.connector.end();
      await conn.reply(425, 'No data connection: send PASV, EPSV, PORT or EPRT first');
      return undefined;
    }
    if (!early) await conn.reply(150, text);
    return socket;
  }

  /** STOR, APPE, STOU: into a hidden temporary, renamed over the target when complete (atomic for HTTP readers). */
  async function store(s: Session, cmd: Command): Promise<void> {
    const conn = s.conn;
    const fs = s.fs!;
    const start = conn.restByteCount ?? 0;
    conn.restByteCount = 0;
    const t0 = Date.now();
    const unique = cmd.directive === 'STOU';
    // A bare STOU names no file: one is made up in the working folder (RFC 1123 §4.1.2.9).
    const arg = unique && !cmd.arg?.trim() ? fs.getUniqueName('upload') : cmd.arg;
    let up;
    try {
      up = await fs.startUpload(arg, { append: cmd.directive === 'APPE', start, unique });
    } catch (err) {
      conn.connector.end();
      await replyError(s, err, cmd.directive);
      return;
    }
    // 'wx' (O_EXCL): never opens through a link planted at the temporary's name. Opened in
    // place, before the 150 (see resolveInJailSync): a thread-pool round trip cost the loop
    // more than the open itself, and a failure is answered before any data moves.
    let fd: number;
    try {
      fd = openSync(up.temp, up.prefix > 0 ? 'a' : 'wx', 0o644);
    } catch (err) {
      conn.connector.end();
      await fs.abortUpload(up, 0);
      await replyError(s, err, cmd.directive);
      return;
    }
    // RFC 1123 §4.1.2.9: the reply to STOU names the file ("150 FILE: name"), relative to the working folder when in it.
    const inCwd = path.posix.dirname(up.clientPath) === fs.currentDirectory();
    const text = unique ? `FILE: ${inCwd ? path.posix.basename(up.clientPath) : up.clientPath}` : `Ready to receive ${up.clientPath}`;
    const socket = await dataConnection(s, text, async () => {
      closeSync(fd);
      await fs.abortUpload(up, 0);
    });
    if (!socket) return;
    let written = 0;
    let quotaHit = false;
    const usage = fs.usage;
    let discarded = 0;
    let cut: FtpError | undefined;
    const accept = (chunk: Buffer): boolean => {
      if (quotaHit || !usage.fits(chunk.length, up.oldSize)) {
        // Over quota: nothing more is written; the rest is read and dropped so the client
        // finishes sending and reads a clean 552 (a reset data connection makes clients
        // report a network error instead). Past DISCARD_MAX the connection is cut.
        quotaHit = true;
        discarded += chunk.length;
        if (discarded > DISCARD_MAX && !cut) {
          cut = new FtpError(552, 'quota');
          socket.destroy(cut);
        }
        return false;
      }
      usage.used += chunk.length;
      written += chunk.length;
      return true;
    };
    let diskError: Error | undefined;
    try {
      let transferError: unknown;
      try {
        await receive(socket, fd, accept);
      } catch (err) {
        if (err instanceof DiskError) diskError = err.cause;
        else transferError = err;
        socket.destroy();
      }
      try {
        closeSync(fd); // a file just written: no flush is due at its close, so in place (see resolveInJailSync)
      } catch (err) {
        diskError ??= err as Error; // a late write error (NFS, quota of the file system) shows at close
      }
      if (transferError === undefined && !diskError && !quotaHit) {
        try {
          await fs.commitUpload(up, up.prefix + written < SMALL_UPLOAD);
          siteChanges?.changed(s.tenant!);
          const replied = conn.reply(226, `Transfer complete: ${up.clientPath}`); // the logs need not delay it
          transferLog(s, cmd.directive, up.clientPath, written, t0, 'ok');
          s.log.debug({ path: up.clientPath, bytes: written }, 'ftp upload');
          await replied;
          return;
        } catch (err) {
          diskError = err as Error;
        }
      }
      await fs.abortUpload(up, written);
      if (quotaHit) {
        transferLog(s, cmd.directive, up.clientPath, written, t0, 'quota');
        s.log.info({ path: up.clientPath, bytes: written, quota: usage.quota }, 'ftp upload cut off: quota exceeded');
        await conn.reply(552, `Quota exceeded: ${up.clientPath} not stored (quota ${usage.quota} bytes)`);
      } else if (diskError) {
        transferLog(s, cmd.directive, up.clientPath, written, t0, 'failed');
        await replyError(s, diskError, cmd.directive);
      } else {
        transferLog(s, cmd.directive, up.clientPath, written, t0, 'aborted');
        s.log.info({ path: up.clientPath, bytes: written, err: (transferError as Error).message }, 'ftp upload aborted by the client or the network; nothing stored');
        await conn.reply(426, `Connection closed; transfer aborted, ${up.clientPath} not stored`);
      }
    } finally {
      conn.connector.end();
    }
  }

  /** Path commands without a data connection, answered with the jail's own reply codes (ftp-srv's use fixed ones). */
  async function fileCommand(s: Session, cmd: Command): Promise<void> {
    const conn = s.conn;
    const fs = s.fs!;
    const quoted = (p: string) => `"${p.replace(/"/g, '""')}"`; // RFC 959 §7: a quote in a 257 path is doubled
    try {
      switch (cmd.directive) {
        case 'CWD':
        case 'XCWD':
          await conn.reply(250, `Folder is now ${quoted(await fs.chdir(cmd.arg ?? '/'))}`);
          break;
        case 'CDUP':
        case 'XCUP':
          await conn.reply(250, `Folder is now ${quoted(await fs.chdir('..'))}`);
          break;
        case 'MKD':
        case 'XMKD': {
          const made = await fs.mkdir(cmd.arg);
          siteChanges?.changed(s.tenant!); // a folder can turn a 404 into a listing or a redirect
          await conn.reply(257, `${quoted(made)} created`);
          break;
        }
        case 'RMD':
        case 'XRMD':
        case 'DELE': {
          const st = await fs.get(cmd.arg ?? '');
          if (cmd.directive === 'DELE' && st.isDirectory()) throw new FtpError(550, `${fs.parse(cmd.arg).clientPath}: is a folder; use RMD`);
          if (cmd.directive !== 'DELE' && !st.isDirectory()) throw new FtpError(550, `${fs.parse(cmd.arg).clientPath}: not a folder; use DELE`);
          await fs.delete(cmd.arg);
          siteChanges?.changed(s.tenant!);
          await conn.reply(250, `${fs.parse(cmd.arg).clientPath} removed`);
          break;
        }
        case 'RNFR': {
          await fs.get(cmd.arg ?? '');
          s.renameFrom = fs.parse(cmd.arg).clientPath;
          await conn.reply(350, 'Ready for RNTO');
          break;
        }
        case 'RNTO': {
          const from = s.renameFrom;
          s.renameFrom = undefined;
          if (!from) throw new FtpError(503, 'RNFR first');
          await fs.rename(from, cmd.arg ?? '');
          siteChanges?.changed(s.tenant!);
          await conn.reply(250, `Renamed to ${fs.parse(cmd.arg).clientPath}`);
          break;
        }
        case 'SIZE': {
          const st = await fs.get(cmd.arg ?? '');
          if (!st.isFile()) throw new FtpError(550, `${fs.parse(cmd.arg).clientPath}: not a plain file`);
          await conn.reply(213, String(st.size));
          break;
        }
        case 'MDTM': {
          const st = await fs.get(cmd.arg ?? '');
          await conn.reply(213, timeVal(st.mtime));
          break;
        }
        case 'MFMT': {
          // draft-somers-ftp-mfxx §3: MFMT YYYYMMDDHHMMSS[.sss] path, in UTC; answered with the time set.
          const m = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:\.\d{1,3})?\s+(\S.*)$/.exec(cmd.arg ?? '');
          const [y, mo, d, h, mi, sec] = (m?.slice(1, 7) ?? []).map(Number) as number[];
          const when = m ? new Date(Date.UTC(y!, mo! - 1, d, h, mi, sec)) : undefined;
          if (!m || !when || when.getUTCMonth() !== mo! - 1 || when.getUTCDate() !== d || when.getUTCHours() !== h || when.getUTCMinutes() !== mi || when.getUTCSeconds() !== sec) {
            throw new FtpError(501, 'Syntax: MFMT YYYYMMDDHHMMSS path (UTC)');
          }
          const clientPath = await fs.setModified(m[7], when);
          siteChanges?.changed(s.tenant!); // Last-Modified and the ETag follow the file time
          await conn.reply(213, `Modify=${timeVal(when)}; ${clientPath}`);
          break;
        }
      }
    } catch (err) {
      if (cmd.directive === 'RNFR') s.renameFrom = undefined;
      await replyError(s, err, cmd.directive);
    }
  }

  async function mlsd(s: Session, cmd: Command): Promise<void> {
    const conn = s.conn;
    let lines: string;
    try {
      const fs = s.fs!;
      const dir = await fs.get(cmd.arg ?? '.');
      if (!dir.isDirectory()) throw new FtpError(501, 'MLSD needs a folder; use MLST for a file');
      const entries = await fs.list(cmd.arg ?? '.');
      lines = `${factLine(dir, s.mlstFacts, 'cdir')} .\r\n` + entries.map((e) => `${factLine(e, s.mlstFacts)} ${e.name}\r\n`).join('');
    } catch (err) {
      conn.connector.end();
      await replyError(s, err, 'MLSD');
      return;
    }
    const socket = await dataConnection(s, 'Listing follows');
    if (!socket) return;
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.resume();
        socket.end(lines, () => resolve());
      });
      await conn.reply(226, 'Listing complete');
    } catch {
      await conn.reply(426, 'Connection closed; listing aborted');
    } finally {
      conn.connector.end();
    }
  }

  async function mlst(s: Session, cmd: Command): Promise<void> {
    try {
      const fs = s.fs!;
      const { clientPath } = fs.parse(cmd.arg ?? '.');
      const st = await fs.get(cmd.arg ?? '.');
      await s.conn.reply(250, `Listing ${clientPath}`, { raw: true, message: ` ${factLine(st, s.mlstFacts)} ${clientPath}` }, 'End');
    } catch (err) {
      await replyError(s, err, 'MLST');
    }
  }

  function feat(s: Session): Promise<unknown> {
    const lines = [
      ...(tlsOptions ? ['AUTH TLS', 'PBSZ', 'PROT'] : []),
      'EPRT',
      'EPSV',
      'MDTM',
      'MFMT',
      `MLST ${MLST_FACTS.map((f) => `${f === 'unix.mode' ? 'UNIX.mode' : f}${s.mlstFacts.has(f) ? '*' : ''};`).join('')}`,
      'PASV',
      'REST STREAM',
      'SIZE',
      'TVFS',
      'UTF8',
    ];
    return s.conn.reply(211, 'Extensions supported:', ...lines.map((l) => ({ raw: true, message: ` ${l}` })), 'End');
  }

  /** PASV (RFC 959) and EPSV (RFC 2428): one data listener per session at a time. */
  async function passive(s: Session, cmd: Command): Promise<void> {
    const conn = s.conn;
    if (cmd.directive === 'EPSV' && cmd.arg?.trim()) {
      // RFC 2428 §3: EPSV <net-prt> asks for a protocol; only the control connection's own is offered.
      const arg = cmd.arg.trim().toUpperCase();
      const own = isIP(plainIp(conn.commandSocket.localAddress)) === 6 ? '2' : '1';
      if (arg === 'ALL') {
        s.epsvAll = true;
        await conn.reply(200, 'EPSV ALL ok: PORT, PASV and EPRT are refused from now on');
        return;
      }
      if (arg !== own) {
        await conn.reply(522, `Network protocol not supported, use (${own})`);
        return;
      }
    }
    if (cmd.directive === 'PASV' && (await refusedAfterEpsvAll(s, cmd))) return;
    const addr = plainIp(cfg.passive?.address ?? conn.commandSocket.localAddress);
    if (cmd.directive === 'PASV' && isIP(addr) !== 4) {
      await conn.reply(425, 'PASV needs an IPv4 address; use EPSV');
      return;
    }
    conn.connector.end();
    const connector = new PassiveConnector(conn, { host: listenHost, range: [pasvMin, pasvMax], tls: s.tls, log: s.log });
    conn.connector = connector;
    let port: number;
    try {
      port = await connector.listen();
    } catch (err) {
      s.log.warn({ err: (err as Error).message }, 'no passive port available');
      await conn.reply(425, 'No passive port available; try again');
      return;
    }
    if (cmd.directive === 'PASV') await conn.reply(227, `Entering Passive Mode (${addr.replace(/\./g, ',')},${port >> 8},${port & 255})`);
    else await conn.reply(229, `Entering Extended Passive Mode (|||${port}|)`);
  }

  /** After EPSV ALL (RFC 2428 §4) every other way of setting up a data connection is refused. */
  async function refusedAfterEpsvAll(s: Session, cmd: Command): Promise<boolean> {
    if (!s.epsvAll) return false;
    s.log.info({ why: 'EPSV ALL', command: cmd.directive }, 'ftp command refused');
    await s.conn.reply(503, `EPSV ALL is in effect: ${cmd.directive} refused; use EPSV`);
    return true;
  }

  /** PORT/EPRT: only toward the client's own address and an unprivileged port (FTP bounce, CVE-2020-15152 class). */
  async function active(s: Session, cmd: Command): Promise<void> {
    const conn = s.conn;
    if (await refusedAfterEpsvAll(s, cmd)) return;
    const t = activeTarget(cmd.directive as 'PORT' | 'EPRT', cmd.arg);
    if (!t && cmd.directive === 'EPRT' && /^(.)(\d+)\1/.test(cmd.arg?.trim() ?? '') && !/^.[12]\D/.test(cmd.arg!.trim())) {
      await conn.reply(522, 'Network protocol not supported, use (1,2)'); // RFC 2428 §2
      return;
    }
    if (!t) {
      await conn.reply(501, `Syntax error in ${cmd.directive} argument`);
      return;
    }
    if (!sameIp(t.host, conn.commandSocket.remoteAddress) || t.port < 1024) {
      s.log.warn({ target: formatAddress(t), why: t.port < 1024 ? 'privileged port' : 'not the client address' }, 'ftp active connection refused (bounce)');
      await conn.reply(500, `Illegal ${cmd.directive} command: data connections go only to your own address, port 1024 or above`);
      return;
    }
    conn.connector.end();
    conn.connector = new ActiveConnector(conn, t.host, t.port, s.tls, s.log);
    await conn.reply(200, `${cmd.directive} command successful`);
  }

  /**
   * LIST, NLST: the path is checked before ftp-srv waits for the data
   * connection, so a refused path gets 550 (ftp-srv would answer 451 or 551)
   * and no data connection is left waiting.
   */
  async function checkedTransfer(s: Session, cmd: Command): Promise<void> {
    try {
      await s.fs!.get(cmd.arg);
    } catch (err) {
      s.conn.connector.end();
      await replyError(s, err, cmd.directive);
      return;
    }
    if (!s.conn.secure) {
      await s.conn.commands.handle(cmd);
      return;
    }
    // Over TLS the 150 comes before the data connection's handshake (see dataConnection()). ftp-srv's own
    // handlers send theirs only after it, so ours goes first and theirs is left out.
    const sent = s.conn.reply(150, 'Listing follows');
    await sent;
    // ftp-srv chains Bluebird methods (.tap) on what reply() returns: answer with its own promise type.
    const Library = sent.constructor as PromiseConstructor;
    const reply = s.conn.reply;
    let skipped = false;
    s.conn.reply = function (this: Conn, ...args: Parameters<Conn['reply']>) {
      if (!skipped && args[0] === 150) {
        skipped = true;
        return Library.resolve();
      }
      return reply.apply(this, args);
    } as Conn['reply'];
    try {
      await s.conn.commands.handle(cmd);
    } finally {
      s.conn.reply = reply;
    }
  }

  /**
   * RETR, here rather than in ftp-srv, whose handler pauses the file after
   * every chunk until the socket has taken it (one 64 KiB chunk in flight:
   * 300–600 MiB/s against vsftpd's 1.5–2.4 GiB/s here). The file is piped
   * to the data connection in 1 MiB reads with the usual backpressure; REST
   * sets where it starts.
   */
  async function retrieve(s: Session, cmd: Command): Promise<void> {
    const conn = s.conn;
    const start = conn.restByteCount ?? 0;
    conn.restByteCount = 0;
    const t0 = Date.now();
    let opened;
    try {
      opened = await s.fs!.read(cmd.arg, { start });
    } catch (err) {
      conn.connector.end();
      await replyError(s, err, 'RETR');
      return;
    }
    const { stream, clientPath } = opened;
    const socket = await dataConnection(s, `Sending ${clientPath}`, () => stream.destroy());
    if (!socket) return;
    const before = socket.bytesWritten;
    // Which side failed first: pipeline() passes the other side's error on to the file stream too.
    let socketGone = false;
    let fileFailed = false;
    socket.once('close', () => (socketGone = true));
    socket.once('error', () => (socketGone = true));
    stream.once('error', () => (fileFailed = !socketGone));
    try {
      await pipeline(stream, socket);
      transferLog(s, 'RETR', clientPath, socket.bytesWritten - before, t0, 'ok');
      await conn.reply(226, `Transfer complete: ${clientPath}`);
    } catch (err) {
      stream.destroy();
      transferLog(s, 'RETR', clientPath, socket.bytesWritten - before, t0, 'aborted');
      if (fileFailed) {
        await replyError(s, err, 'RETR');
      } else {
        s.log.info({ path: clientPath, err: (err as Error).message }, 'ftp download aborted by the client or the network');
        await conn.reply(426, `Connection closed; transfer aborted: ${clientPath}`);
      }
    } finally {
      conn.connector.end();
    }
  }

  /** Commands this service answers itself once a session is logged in. */
  const OWN = new Map<string, (s: Session, cmd: Command) => Promise<void>>([
    ['PORT', active],
    ['EPRT', active],
    ['PASV', passive],
    ['EPSV', passive],
    ['STOR', store],
    ['APPE', store],
    ['STOU', store],
    ['MLSD', mlsd],
    ['MLST', mlst],
    ['LIST', checkedTransfer],
    ['NLST', checkedTransfer],
    ['RETR', retrieve],
    ...['CWD', 'XCWD', 'CDUP', 'XCUP', 'MKD', 'XMKD', 'RMD', 'XRMD', 'DELE', 'RNFR', 'RNTO', 'SIZE', 'MDTM', 'MFMT'].map((d) => [d, fileCommand] as const),
  ]);

  async function handleLine(s: Session, line: string): Promise<void> {
    const conn = s.conn;
    // Telnet IP/Synch bytes some clients send before ABOR (RFC 959 §4.1.3) are not part of the command.
    const clean = line.replace(/^[\u0000-\u001f\u007f-\u00ff\ufffd]+/, '');
    if (clean === '') return;
    const cmd = conn.commands.parse(clean);
    switch (cmd.directive) {
      case 'USER':
        if (cfg.tls?.required && !conn.secure) {
          s.log.info({ why: 'tls required' }, 'ftp login refused');
          await conn.reply(530, 'TLS required: send AUTH TLS before logging in');
          return;
        }
        if (!conn.authenticated) conn.username = undefined;
        await conn.commands.handle(cmd);
        return;
      case 'PASS':
        await conn.commands.handle(cmd);
        // ftp-srv keeps a failed user name and would refuse a new USER; RFC 959 lets a client try again.
        if (!conn.authenticated) conn.username = undefined;
        return;
      case 'ABOR':
        // No transfer running (one running is aborted as the line arrives, see attach()). ftp-srv's
        // handler would wait for a data connection that may never come.
        conn.connector.end();
        await conn.reply(225, 'No transfer to abort');
        return;
      case 'SITE': {
        const chmod = /^CHMOD\s+[0-7]{3,4}\s+(\S.*)$/i.exec(cmd.arg ?? '');
        if (chmod) {
          // Upload tools (lftp mirror -R, FileZilla) send it after each file and fail the run on an
          // error. Modes are the suite's to set: the file must exist in the jail, and nothing changes.
          if (!conn.authenticated || !s.fs) {
            await conn.reply(530, 'Please log in with USER and PASS first');
            return;
          }
          try {
            const st = await s.fs.get(chmod[1]);
            await conn.reply(200, `SITE CHMOD: ${st.name} keeps the modes the host sets; nothing changed`);
          } catch (err) {
            await replyError(s, err, 'SITE CHMOD');
          }
          return;
        }
        s.log.info({ why: 'SITE' }, 'ftp command refused');
        await conn.reply(502, 'SITE commands are not available');
        return;
      }
      case 'FEAT':
        await feat(s);
        return;
      case 'OPTS': {
        // RFC 2640 §3.1 (and what clients send before USER): UTF-8 is the only encoding spoken.
        const utf8 = /^UTF-?8(?:\s+(ON|OFF))?\s*$/i.exec(cmd.arg ?? '');
        if (utf8) {
          if ((utf8[1] ?? 'ON').toUpperCase() === 'ON') await conn.reply(200, 'UTF-8 is always on');
          else await conn.reply(504, 'UTF-8 cannot be turned off');
          return;
        }
        if (/^MLST\b/i.test(cmd.arg ?? '')) {
          const wanted = (cmd.arg ?? '').slice(4).trim().toLowerCase().split(';').filter(Boolean);
          s.mlstFacts = new Set(MLST_FACTS.filter((f) => wanted.includes(f)));
          await conn.reply(200, `MLST OPTS ${[...s.mlstFacts].map((f) => `${f === 'unix.mode' ? 'UNIX.mode' : f};`).join('')}`);
          return;
        }
        await conn.commands.handle(cmd);
        return;
      }
      default: {
        const own = OWN.get(cmd.directive);
        if (own) {
          if (conn.authenticated && s.fs) await own(s, cmd);
          else await conn.reply(530, 'Please log in with USER and PASS first');
          return;
        }
        // ftp-srv itself answers 530 to commands that need a login.
        await conn.commands.handle(cmd);
      }
    }
  }

  /** Takes over ftp-srv's command reading: lines across packets, a length limit, one command at a time, idle tracking. */
  function attach(conn: Conn): void {
    const socket = conn.commandSocket;
    const remote = plainIp(socket.remoteAddress);
    const s: Session = {
      conn,
      remote,
      log: log.child({ conn: ++connId, remote }),
      busy: false,
      lastActivity: Date.now(),
      lastBytes: -1,
      mlstFacts: new Set(MLST_FACTS),
      queue: Promise.resolve(),
    };
    sessions.add(s);
    byConn.set(conn, s);
    // ftp-srv's Connector.end() installs `new Connector(this)` on the connection, and runs again
    // when the old data listener's 'close' event comes in later; by then a new PASV may have
    // installed a live connector, which that late call would drop (leaking its listener and
    // failing the next transfer with 425). Only the current connector may replace itself.
    let connector = conn.connector;
    Object.defineProperty(conn, 'connector', {
      configurable: true,
      get: () => connector,
      set: (next: Conn['connector'] & { connection?: unknown }) => {
        if (next.connection !== conn && next.connection !== connector) return;
        connector = next;
      },
    });
    s.log.debug('ftp connection');
    // One-line replies are written here: ftp-srv's reply() runs each through several Bluebird
    // steps and a getsockname() call (for a trace log line that is off), ~50 µs a reply.
    // Multi-line and option-object replies still go to it.
    const fullReply = conn.reply;
    conn.reply = function (this: Conn, options: number | object, ...letters: unknown[]) {
      const text = letters[0];
      if (typeof options !== 'number' || letters.length !== 1 || typeof text !== 'string' || text === '') return fullReply.call(this, options, ...letters);
      const out = this.commandSocket;
      // Like ftp-srv's, a reply to a client that has gone resolves: nobody is left to answer.
      if (!out?.writable) return Bluebird.resolve();
      // Resolved once written, as ftp-srv's is: close() destroys the socket right after a reply.
      return Bluebird.resolve(new Promise<void>((resolve) => out.write(`${options} ${text}\r\n`, this.encoding as BufferEncoding, () => resolve())));
    } as Conn['reply'];
    socket.removeAllListeners('data');
    socket.removeAllListeners('timeout');
    const decoder = new StringDecoder('utf8');
    let buf = '';
    let discarding = false;
    let pending = 0;
    /** Where commands are read from: the TCP socket, then the TLS socket over it after AUTH TLS. */
    let reader: Socket = socket;
    /** Between the AUTH TLS line and the TLS wrap, nothing may resume the TCP socket (see below). */
    let tlsPending = false;
    const onData = (chunk: Buffer | string) => {
      s.lastActivity = Date.now();
      buf += typeof chunk === 'string' ? chunk : decoder.write(chunk);
      for (;;) {
        const nl = buf.indexOf('\n');
        if (nl === -1) break;
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (/^\s*AUTH\s+TLS\s*$/i.test(line) && tlsOptions && !conn.secure) {
          // RFC 4217 §4: the client starts its TLS handshake as soon as it reads the 234. From
          // here on no byte may reach this reader: the socket is paused so that the ClientHello
          // stays in its buffer for the TLS layer (read as a command, it would be lost and the
          // session would hang). A client may not send more before the 234; whatever did come is dropped.
          tlsPending = true;
          reader.pause();
          reader.off('data', onData);
          if (buf !== '') s.log.info({ bytes: buf.length }, 'ftp: data sent after AUTH TLS before the reply dropped');
          buf = '';
          s.queue = s.queue.then(startTls).catch(async (err) => {
            await replyError(s, err, 'AUTH');
          });
          return;
        }
        if (discarding || line.length > MAX_LINE) {
          if (!discarding) {
            s.log.info({ why: 'line too long' }, 'ftp command refused');
            s.queue = s.queue.then(() => conn.reply(500, 'Command line too long')).then(() => undefined);
          }
          discarding = false;
          continue;
        }
        if (pending > 0 && /^[^A-Za-z]*ABOR\s*$/i.test(line)) {
          // RFC 959 §4.1.3: ABOR during a transfer ends it (the transfer answers 426), then ABOR gets 226.
          // Commands otherwise wait their turn, so this one is acted on as it arrives, also when the
          // transfer it aborts came in the same packet and has not started yet.
          s.log.info('ftp transfer aborted by the client (ABOR)');
          if (conn.connector.abort) conn.connector.abort();
          else conn.connector.socket?.destroy();
          s.queue = s.queue.then(() => conn.reply(226, 'Abort successful')).then(() => undefined);
          continue;
        }
        // A client that pipelines faster than commands complete is read no further
        // until the backlog shrinks, so the queue (and memory) stays bounded.
        if (++pending >= MAX_PENDING) reader.pause();
        s.queue = s.queue.then(async () => {
          s.busy = true;
          s.lastBytes = -1;
          try {
            await handleLine(s, line);
          } catch (err) {
            await replyError(s, err, 'command');
          } finally {
            s.busy = false;
            s.lastActivity = Date.now();
            if (--pending === MAX_PENDING / 4 && !tlsPending) reader.resume();
          }
        });
      }
      if (buf.length > MAX_LINE) {
        buf = '';
        discarding = true;
        s.log.info({ why: 'line too long' }, 'ftp command refused');
        s.queue = s.queue.then(() => conn.reply(500, 'Command line too long')).then(() => undefined);
      }
    };
    socket.on('data', onData);

    /**
     * AUTH TLS (RFC 4217 §4), here rather than in ftp-srv, whose handler wraps the socket only
     * some ticks after writing the 234 while this reader would go on consuming what arrives.
     */
    async function startTls(): Promise<void> {
      // Paused again: a command queued before AUTH TLS (ftp-srv's LIST ends with a resume) may
      // have set it flowing, and with no 'data' listener left the ClientHello would be lost.
      socket.pause();
      await new Promise<void>((resolve, reject) => socket.write('234 Ready for TLS\r\n', (err) => (err ? reject(err) : resolve())));
      let secure: TLSSocket;
      try {
        s.tls = newAcceptor!();
        secure = await s.tls.accept(socket, s.log, 'control');
      } catch (err) {
        s.log.info({ err: (err as Error).message }, 'ftp TLS handshake failed; connection closed');
        socket.destroy();
        return;
      }
      // ftp-srv's connection listens on the TCP socket: what happens to the TLS one is told there.
      for (const event of ['timeout', 'end', 'close', 'drain']) secure.on(event, (...args: unknown[]) => socket.emit(event, ...args));
      // Node passes the TCP socket's errors on to the TLS socket: passed back once, not in a loop.
      let passing = false;
      secure.on('error', (err: Error) => {
        if (passing) return;
        passing = true;
        try {
          socket.emit('error', err);
        } finally {
          passing = false;
        }
      });
      secure.on('data', onData);
      reader = secure;
      tlsPending = false;
      conn.commandSocket = secure;
      conn.secure = true;
      s.log.debug('ftp control connection: TLS started');
    }
    socket.once('close', () => {
      sessions.delete(s);
      s.log.debug('ftp connection closed');
    });
  }

  /** Closes sessions idle for longer than idleTimeout, and transfers whose data stopped moving for as long. */
  function sweep(): void {
    const now = Date.now();
    for (const s of sessions) {
      if (s.busy) {
        const ds = s.conn.connector?.socket;
        const bytes = ds ? ds.bytesRead + ds.bytesWritten : -1;
        if (bytes !== s.lastBytes) {
          s.lastBytes = bytes;
          s.lastActivity = now;
          continue;
        }
        if (now - s.lastActivity > idleMs && ds) {
          s.log.info({ why: 'stalled transfer' }, 'ftp transfer aborted: no data moved');
          ds.destroy();
          s.lastActivity = now;
        }
        continue;
      }
      if (now - s.lastActivity > idleMs) {
        s.log.info({ why: 'idle' }, 'ftp session closed: idle timeout');
        sessions.delete(s);
        void s.conn.close(421, `Idle for ${cfg.idleTimeout} seconds; closing the connection`);
      }
    }
  }

  return {
    name: 'ftp',
    async start() {
      const listen = parseListen(cfg.listen)!;
      if (cfg.tls) {
        const read = (what: string, file: string) => {
          const full = path.resolve(registry.config.dir, file);
          try {
            return readFileSync(full);
          } catch (err) {
            throw new Error(`ftp cannot start: tls.${what} ${full} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
          }
        };
        if (cfg.tls.cert && cfg.tls.key) {
          tlsOptions = { cert: read('cert', cfg.tls.cert), key: read('key', cfg.tls.key) };
        } else {
          tlsOptions = certs?.defaultPair();
          if (!tlsOptions) {
            throw new Error(`ftp cannot start: ftp.tls names no cert/key and the certificate store has no default certificate (http.tls.certs/default.crt)`);
          }
        }
      }
      if (tlsOptions) {
        // RFC 4217 clients send SNI: the certificate is chosen by name from the store HTTPS uses. A name the
        // store only answers with its default gets the certificate of ftp.tls when one is named there.
        const ownFiles = Boolean(cfg.tls?.cert && cfg.tls.key);
        const store = certs;
        const sni = store
          ? (name: string) => {
              const ctx = store.contextFor(name, current);
              return ownFiles && ctx === store.contextFor(undefined, current) ? undefined : ctx;
            }
          : undefined;
        const pair = tlsOptions;
        newAcceptor = () => new TlsAcceptor(pair, sni);
      }
      const signals = ['SIGTERM', 'SIGINT', 'SIGQUIT'] as const;
      const before = new Map(signals.map((sig) => [sig, new Set(process.listeners(sig))]));
      ftp = new FtpSrv({
        url: `ftp://${formatAddress(listen)}`,
        pasv_url: cfg.passive?.address ?? '127.0.0.1',
        pasv_min: pasvMin,
        pasv_max: pasvMax,
        anonymous: false,
        greeting: ['makewaves FTP: log in as user@<your domain>'],
        tls: tlsOptions ? { ...tlsOptions, minVersion: 'TLSv1.2' } : false,
        file_format: (st) => lsLine(st as Parameters<typeof lsLine>[0]),
        log: bunyanAdapter(log),
      });
      // ftp-srv installs process signal handlers that exit the process; signals belong to main.ts.
      for (const sig of signals) {
        for (const fn of process.listeners(sig)) if (!before.get(sig)!.has(fn)) process.removeListener(sig, fn);
      }
      const srv = (ftp as unknown as { server: NetServer }).server;
      const [accept] = srv.listeners('connection') as Array<(sock: Socket) => void>;
      srv.removeAllListeners('connection');
      srv.on('connection', (sock: Socket) => {
        sockets.add(sock);
        sock.once('close', () => sockets.delete(sock));
        // Without TCP_NODELAY each completion reply waits for the client's delayed ACK (~40 ms per transfer).
        sock.setNoDelay(true);
        const ip = plainIp(sock.remoteAddress);
        const n = perIp.get(ip) ?? 0;
        if (sessions.size >= cfg.maxConnections || n >= cfg.maxConnectionsPerIp) {
          const why = n >= cfg.maxConnectionsPerIp ? 'per-IP connection limit' : 'connection limit';
          log.info({ remote: ip, why }, 'ftp connection refused');
          sock.on('error', () => undefined);
          sock.end(`421 Too many connections${n >= cfg.maxConnectionsPerIp ? ' from your address' : ''}; try again later\r\n`);
          return;
        }
        perIp.set(ip, n + 1);
        sock.once('close', () => {
          const left = (perIp.get(ip) ?? 1) - 1;
          if (left > 0) perIp.set(ip, left);
          else perIp.delete(ip);
        });
        accept!(sock);
      });
      const events = ftp as unknown as NodeJS.EventEmitter;
      events.on('connect', ({ connection }: { connection: unknown }) => attach(connection as Conn));
      events.on('login', ({ connection, username, password }: { connection: unknown; username: string; password: string }, resolve: (r: object) => void, reject: (e: Error) => void) => {
        const s = byConn.get(connection as Conn);
        if (!s) return reject(new FtpError(421, 'Connection closing'));
        observeFtpLogin(metrics, login(s, username, password), () => current.ftpAccount(username.toLowerCase())?.tenant.id).then(resolve, (err: unknown) => {
          if (err instanceof FtpError) return reject(err);
          const ref = errorRef();
          s.log.error({ ref, err: (err as Error).stack }, 'ftp login failed on our side');
          reject(new FtpError(451, `Local error, ref ${ref}`));
        });
      });
      events.on('client-error', () => undefined);
      logins.dropPending(); // reservations of a process that stopped mid-check
      for (const id of current.tenants.keys()) await usageOf(id);
      const bound = await listenOn(srv, listen, 'ftp');
      sweeper = setInterval(sweep, Math.max(50, Math.min(idleMs / 4, 5_000)));
      sweeper.unref();
      return [`ftp://${formatAddress(bound)}`];
    },
    async stop(graceMs) {
      if (sweeper) clearInterval(sweeper);
      if (!ftp) return;
      const srv = (ftp as unknown as { server: NetServer }).server;
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
      for (const sock of sockets) sock.destroy();
      await closed;
      ftp.removeAllListeners();
      ftp = undefined;
      await Promise.race([Promise.allSettled(running), new Promise((r) => setTimeout(r, 1_000).unref())]);
      await xfer.close();
    },
    reload(next) {
      current = next;
      // A suspension ends the tenant's open sessions too; a transfer cut here was never published.
      for (const s of [...sessions]) {
        if (s.tenant === undefined || !next.tenants.get(s.tenant)?.suspended) continue;
        s.log.info({ why: 'tenant suspended' }, 'ftp session closed');
        sessions.delete(s);
        void s.conn.close(421, 'This account has been suspended; closing the connection');
      }
      for (const [id, u] of usages) {
        const t = next.tenants.get(id);
        if (t) u.quota = t.quota;
        else usages.delete(id);
      }
      for (const id of next.tenants.keys()) if (!usages.has(id)) void usageOf(id).catch((err: Error) => log.error({ tenant: id, err: err.message }, 'quota scan failed'));
    },
    jobs(): Job[] {
      return [
        { name: 'ftp quota rescan', schedule: cfg.quotaRescan, run: rescan },
        { name: 'ftp login throttle prune', schedule: '*/10 * * * *', run: () => logins.prune(current.config.main.ftp!.lockout.windowSeconds * 1000) },
        { name: 'rotate ftp transfer logs', schedule: '0 0 * * *', run: () => xfer.rotate(current.config.main.ftp?.transferLog.keepDays ?? 14) },
      ];
    },
  };
}
