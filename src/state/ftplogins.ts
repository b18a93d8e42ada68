import { clientKey } from '../lib/peers.ts';
import type { Db, Migration } from './db.ts';

export const ftpLoginMigrations: Migration[] = [
  {
    id: 'ftplogins-1',
    // One row per login attempt counted against a key (`pair:<login>|<ip>`, `account:<login>`,
    // `address:<ip>`); `pending` while its password check runs. `account` lets an operator
    // lift every lock of one login at once.
    sql: `CREATE TABLE ftp_login_attempts (
            id      INTEGER PRIMARY KEY,
            key     TEXT NOT NULL,
            account TEXT NOT NULL,
            at      INTEGER NOT NULL,
            pending INTEGER NOT NULL
          );
          CREATE INDEX ftp_login_attempts_key ON ftp_login_attempts (key, at);
          CREATE TABLE ftp_login_locks (
            key     TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            until   INTEGER NOT NULL
          ) WITHOUT ROWID;`,
  },
];

/** One limit a login attempt counts against. */
export interface LoginRule {
  /** What is counted, e.g. `pair:alice@example.test|192.0.2.7`. */
  readonly key: string;
  /** The login the key belongs to ('' for a key of an address alone). */
  readonly account: string;
  /** Attempts within the window that lock the key. */
  readonly limit: number;
}

export interface LoginLock {
  key: string;
  account: string;
  /** Epoch milliseconds. */
  until: number;
}

/**
 * FTP login failures and locks, in the state database so that the operator's
 * `makewaves ftp unlock` reaches a running server (which reads them on every
 * login) and a restart does not forgive an attacker.
 *
 * An attempt is counted before its password is checked ({@link reserve}):
 * attempts made in parallel cannot all pass the check while the count is
 * still low. A reservation becomes a failure ({@link failed}) or is dropped
 * ({@link succeeded}).
 */
export class FtpLoginLocks {
  private readonly lockOf;
  private readonly countAll;
  private readonly countFailed;
  private readonly insert;
  private readonly settle;
  private readonly drop;
  private readonly forgive;
  private readonly lock;

  constructor(private readonly db: Db) {
    this.lockOf = db.prepare('SELECT until FROM ftp_login_locks WHERE key = ? AND until > ?').pluck();
    this.countAll = db.prepare('SELECT COUNT(*) FROM ftp_login_attempts WHERE key = ? AND at > ?').pluck();
    this.countFailed = db.prepare('SELECT COUNT(*) FROM ftp_login_attempts WHERE key = ? AND at > ? AND pending = 0').pluck();
    this.insert = db.prepare('INSERT INTO ftp_login_attempts (key, account, at, pending) VALUES (?, ?, ?, 1)');
    this.settle = db.prepare('UPDATE ftp_login_attempts SET pending = 0 WHERE id = ?');
    this.drop = db.prepare('DELETE FROM ftp_login_attempts WHERE id = ?');
    this.forgive = db.prepare('DELETE FROM ftp_login_attempts WHERE key = ? AND pending = 0');
    this.lock = db.prepare('INSERT INTO ftp_login_locks (key, account, until) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET until = excluded.until');
  }

  /**
   * Counts one attempt against every rule, in one transaction. When a rule
   * is locked, or already has `limit` attempts (failed or still being
   * checked) within the window, nothing is counted and the answer says for
   * how long (at least 1 ms) and which key; otherwise it is a ticket for
   * {@link failed} or {@link succeeded}.
   */
  reserve(rules: readonly LoginRule[], windowMs: number, now = Date.now()): { ticket: number[] } | { lockedMs: number; key: string } {
    return this.db.transaction(() => {
      for (const r of rules) {
        const until = this.lockOf.get(r.key, now) as number | undefined;
        if (until !== undefined) return { lockedMs: until - now, key: r.key };
        if ((this.countAll.get(r.key, now - windowMs) as number) >= r.limit) return { lockedMs: windowMs, key: r.key };
      }
      return { ticket: rules.map((r) => Number(this.insert.run(r.key, r.account, now).lastInsertRowid)) };
    }).immediate();
  }

  /** The attempt's password was wrong: its reservations stay as failures; rules at their limit are locked. Returns the keys this failure locked. */
  failed(ticket: readonly number[], rules: readonly LoginRule[], windowMs: number, lockMs: number, now = Date.now()): string[] {
    return this.db.transaction(() => {
      for (const id of ticket) this.settle.run(id);
      const locked: string[] = [];
      for (const r of rules) {
        if ((this.countFailed.get(r.key, now - windowMs) as number) < r.limit) continue;
        this.lock.run(r.key, r.account, now + lockMs);
        this.forgive.run(r.key); // counted afresh once the lock ends
        locked.push(r.key);
      }
      return locked;
    }).immediate();
  }

  /** The attempt succeeded: its reservations go, and the earlier failures of `forgiven` keys with them. */
  succeeded(ticket: readonly number[], forgiven: readonly string[]): void {
    this.db.transaction(() => {
      for (const id of ticket) this.drop.run(id);
      for (const key of forgiven) this.forgive.run(key);
    }).immediate();
  }

  /** Lifts every lock and forgets every failure of `account`; returns how many locks were lifted. */
  unlock(account: string, now = Date.now()): number {
    return this.db.transaction(() => {
      const n = this.db.prepare('DELETE FROM ftp_login_locks WHERE account = ? AND until > ?').run(account, now).changes;
      this.db.prepare('DELETE FROM ftp_login_locks WHERE account = ?').run(account);
      this.db.prepare('DELETE FROM ftp_login_attempts WHERE account = ? AND pending = 0').run(account);
      return n;
    }).immediate();
  }

  /** The locks in force, soonest to end first. */
  locks(now = Date.now()): LoginLock[] {
    return this.db.prepare('SELECT key, account, until FROM ftp_login_locks WHERE until > ? ORDER BY until').all(now) as LoginLock[];
  }

  /** Drops attempts older than the window and locks that have ended. */
  prune(windowMs: number, now = Date.now()): void {
    this.db.prepare('DELETE FROM ftp_login_attempts WHERE at <= ?').run(now - windowMs);
    this.db.prepare('DELETE FROM ftp_login_locks WHERE until <= ?').run(now);
  }

  /** Drops reservations left by a process that stopped mid-check (called at start, before any login). */
  dropPending(): void {
    this.db.prepare('DELETE FROM ftp_login_attempts WHERE pending = 1').run();
  }
}

/** The lockout settings (`ftp.lockout` in the main config). */
export interface LockoutSettings {
  readonly failures: number;
  readonly accountFailures: number;
  readonly addressFailures: number;
  readonly windowSeconds: number;
  readonly lockSeconds: number;
}

/**
 * What one login attempt counts against: the account from this address
 * (locks the address out of that account only: anyone can still fail at
 * someone else's account without locking its owner out), the account from
 * everywhere (a slower ceiling against guessing from many addresses), and
 * the address for every account (one address guessing at many). An
 * address is its client key (lib/peers.ts): an IPv6 client by its /64,
 * whose 2^64 addresses would otherwise each have a budget of their own.
 */
export function loginRules(l: LockoutSettings, name: string, remote: string): LoginRule[] {
  const client = clientKey(remote);
  return [
    { key: `pair:${name}|${client}`, account: name, limit: l.failures },
    { key: `account:${name}`, account: name, limit: l.accountFailures },
    { key: `address:${client}`, account: '', limit: l.addressFailures },
  ];
}

/** How a throttled login ended. */
export type ThrottledLogin = { ok: true } | { ok: false; lockedMs: number; key: string } | { ok: false; lockedMs?: undefined; locked: string[] };

/**
 * One password check of login `name` (lower case) from `remote` under the
 * lockout: counted before `check` (the slow part: scrypt) runs, so parallel
 * attempts cannot all pass while the count is low. A success forgives this
 * address's failures at this account only (the account's and the address's
 * stay, or one valid login would reset the count between guesses at other
 * passwords). FTP, SFTP and the panel count against the same keys.
 * If `check` throws (our fault, not the client's), its reservation goes and
 * the error is rethrown.
 */
export async function throttledLogin(logins: FtpLoginLocks, l: LockoutSettings, name: string, remote: string, check: () => Promise<boolean>): Promise<ThrottledLogin> {
  const windowMs = l.windowSeconds * 1000;
  const rules = loginRules(l, name, remote);
  const reserved = logins.reserve(rules, windowMs);
  if ('lockedMs' in reserved) return { ok: false, lockedMs: reserved.lockedMs, key: reserved.key };
  let ok: boolean;
  try {
    ok = await check();
  } catch (err) {
    logins.succeeded(reserved.ticket, []); // our failure, not the client's: the reservation goes, nothing is forgiven
    throw err;
  }
  if (!ok) return { ok: false, locked: logins.failed(reserved.ticket, rules, windowMs, l.lockSeconds * 1000) };
  logins.succeeded(reserved.ticket, [rules[0]!.key]);
  return { ok: true };
}
