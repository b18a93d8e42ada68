import { mkdir, realpath } from 'node:fs/promises';
import { errorRef } from '../core/errors.ts';
import { DUMMY_HASH, verifyPassword } from '../lib/password.ts';
import type { Logger } from '../core/log.ts';
import type { FtpAccount } from '../core/registry.ts';
import { throttledLogin, type FtpLoginLocks } from '../state/index.ts';
import type { FtpContext, Session } from './context.ts';
import { FtpError, JailFileSystem } from './jailfs.ts';
import type { TenantUsage } from './usage.ts';

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
        throw FtpError.of('INTERNAL', `Local error, ref ${ref}`);
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
 * PASS: virtual users (`user@<tenant id>`, scrypt), failures counted in
 * state (`logins`, which `makewaves ftp unlock` reaches), the session's
 * jail on success. Resolves with what ftp-srv's login event wants
 * (`{ fs }`); rejects with an FtpError (530, or 451 with a reference when
 * the failure is ours).
 */
export async function login(ctx: FtpContext, logins: FtpLoginLocks, s: Session, username: string, password: string): Promise<object> {
  try {
    return await checkLogin(ctx, logins, s, username, password);
  } catch (err) {
    if (err instanceof FtpError) throw err;
    const ref = errorRef();
    s.log.error({ ref, err: (err as Error).stack }, 'ftp login failed on our side');
    throw FtpError.of('INTERNAL', `Local error, ref ${ref}`);
  }
}

/** Longest login name looked up: a user (64) @ a tenant id (a domain name, 253), and some. */
const MAX_LOGIN = 320;

/** Who is logging in, for the throttle and the log. */
export interface LoginAttempt {
  remote: string;
  log: Logger;
  /** `ftp` or `sftp`, named in the log lines. */
  protocol: 'ftp' | 'sftp';
}

/** A login that passed: the account, and its tenant's real web root and usage. */
export interface LoggedIn {
  account: FtpAccount;
  root: string;
  usage: TenantUsage;
}

/**
 * One login of a tenant's FTP account, over FTP or SFTP: counted against
 * the throttle before `check` (the slow part: scrypt, a signature) runs,
 * so parallel attempts cannot all pass while the count is low; a refusal
 * is an FtpError 530 (SFTP turns it into an authentication failure).
 * `check` is called with the account, or undefined for an unknown login
 * (it must cost the same then: no user enumeration by timing).
 */
export async function authenticate(ctx: FtpContext, logins: FtpLoginLocks, who: LoginAttempt, username: string, check: (account: FtpAccount | undefined) => Promise<boolean>): Promise<LoggedIn> {
  const { cfg } = ctx;
  const name = username.toLowerCase();
  if (name.length > MAX_LOGIN) {
    // No account has such a name: refused unlooked and uncounted (the count is keyed by name), logged cut short.
    who.log.info({ user: `${name.slice(0, 64)}...`, length: name.length, why: 'login name too long' }, `${who.protocol} login failed`);
    throw FtpError.of('AUTH_FAILED', 'Login incorrect');
  }
  let account: FtpAccount | undefined;
  const result = await throttledLogin(logins, cfg.lockout, name, who.remote, async () => {
    account = ctx.registry().ftpAccount(name);
    return (await check(account)) && account !== undefined;
  });
  if (!result.ok && result.lockedMs !== undefined) {
    who.log.warn({ user: name, why: 'locked', key: result.key }, `${who.protocol} login refused: too many failures`);
    throw FtpError.of('LOCKED_OUT', `Too many failed logins; try again in ${Math.ceil(result.lockedMs / 60_000)} minutes`);
  }
  if (!result.ok || !account) {
    const why = !name.includes('@') ? 'not a user@tenant login' : !account ? 'no such user' : who.protocol === 'ftp' ? 'wrong password' : 'wrong password or key';
    const locked = result.ok ? [] : result.locked;
    who.log.info({ user: name, why }, `${who.protocol} login failed`);
    if (locked.length > 0) {
      who.log.warn({ user: name, locked, minutes: cfg.lockout.lockSeconds / 60 }, `${who.protocol} login locked after repeated failures`);
    }
    throw FtpError.of('AUTH_FAILED', 'Login incorrect');
  }
  const tenant = account.tenant;
  // Checked after the password, so the reply tells a suspension only to someone who knows it.
  if (tenant.suspended) {
    who.log.info({ user: name, tenant: tenant.id, why: 'tenant suspended' }, `${who.protocol} login refused`);
    throw FtpError.of('SUSPENDED', 'This account is suspended; please contact your hosting provider');
  }
  await mkdir(tenant.root, { recursive: true });
  return { account, root: await realpath(tenant.root), usage: await ctx.usageOf(tenant.id) };
}

async function checkLogin(ctx: FtpContext, logins: FtpLoginLocks, s: Session, username: string, password: string): Promise<object> {
  // An unknown user costs the same scrypt work as a known one.
  const ok = await authenticate(ctx, logins, { remote: s.remote, log: s.log, protocol: 'ftp' }, username, (account) => verifyPassword(password, account?.hash ?? DUMMY_HASH));
  s.login = ok.account.login;
  s.tenant = ok.account.tenant.id;
  s.log = s.log.child({ tenant: s.tenant, user: s.login });
  s.fs = new JailFileSystem(ok.root, ok.usage, s.log);
  s.log.info('ftp login');
  return { fs: forFtpSrv(s, s.fs) };
}
