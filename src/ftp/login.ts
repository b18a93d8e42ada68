import { mkdir, realpath } from 'node:fs/promises';
import { errorRef } from '../core/errors.ts';
import { DUMMY_HASH, verifyPassword } from '../lib/password.ts';
import type { FtpLoginLocks, LoginRule } from '../state/index.ts';
import type { FtpContext, Session } from './context.ts';
import { FtpError, JailFileSystem } from './jailfs.ts';

/**
 * What one login attempt counts against: the account from this address
 * (locks the address out of that account only: anyone can still fail at
 * someone else's account without locking its owner out), the account from
 * everywhere (a slower ceiling against guessing from many addresses), and
 * the address for every account (one address guessing at many).
 */
function loginRules(ctx: FtpContext, name: string, remote: string): LoginRule[] {
  const l = ctx.cfg.lockout;
  return [
    { key: `pair:${name}|${remote}`, account: name, limit: l.failures },
    { key: `account:${name}`, account: name, limit: l.accountFailures },
    { key: `address:${remote}`, account: '', limit: l.addressFailures },
  ];
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
    throw new FtpError(451, `Local error, ref ${ref}`);
  }
}

async function checkLogin(ctx: FtpContext, logins: FtpLoginLocks, s: Session, username: string, password: string): Promise<object> {
  const { cfg } = ctx;
  const name = username.toLowerCase();
  const windowMs = cfg.lockout.windowSeconds * 1000;
  const rules = loginRules(ctx, name, s.remote);
  // Counted before the (slow) password check: parallel attempts cannot all pass while the count is low.
  const reserved = logins.reserve(rules, windowMs);
  if ('lockedMs' in reserved) {
    s.log.warn({ user: name, why: 'locked', key: reserved.key }, 'ftp login refused: too many failures');
    throw new FtpError(530, `Too many failed logins; try again in ${Math.ceil(reserved.lockedMs / 60_000)} minutes`);
  }
  const account = ctx.registry().ftpAccount(name);
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
  s.fs = new JailFileSystem(root, await ctx.usageOf(tenant.id), s.log);
  s.log.info('ftp login');
  return { fs: forFtpSrv(s, s.fs) };
}
