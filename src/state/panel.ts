import { createHash } from 'node:crypto';
import type { Db, Migration } from './db.ts';

export const panelMigrations: Migration[] = [
  {
    id: 'panel-1',
    // Sessions are kept by the SHA-256 of their cookie value: a copy of the database
    // (a backup, a support dump) holds no cookie anyone could log in with.
    sql: `CREATE TABLE panel_sessions (
            id_hash   TEXT PRIMARY KEY,
            login     TEXT NOT NULL,
            tenant    TEXT NOT NULL,
            csrf      TEXT NOT NULL,
            key_tag   TEXT NOT NULL,
            remote    TEXT NOT NULL,
            created   INTEGER NOT NULL,
            last_seen INTEGER NOT NULL
          ) WITHOUT ROWID;
          CREATE INDEX panel_sessions_login ON panel_sessions (login);
          CREATE TABLE panel_audit (
            id     INTEGER PRIMARY KEY,
            at     INTEGER NOT NULL,
            login  TEXT NOT NULL,
            tenant TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL,
            remote TEXT NOT NULL
          );
          CREATE INDEX panel_audit_tenant ON panel_audit (tenant, at);`,
  },
  {
    id: 'panel-2',
    // An operator's session (panel.admins) sees every tenant; its `tenant` is '' (none of its own).
    sql: `ALTER TABLE panel_sessions ADD COLUMN role TEXT NOT NULL DEFAULT 'customer';`,
  },
];

export interface PanelSession {
  login: string;
  /** The customer's tenant; '' for an operator. */
  tenant: string;
  /** A customer (an FTP account of `tenant`) or an operator (an account under `panel.admins`). */
  role: 'customer' | 'operator';
  /** The CSRF token every form of this session carries. */
  csrf: string;
  /**
   * A digest of the account's password hash when the session began: once the
   * password changes (in the panel, by `makewaves passwd`, in the file), it
   * no longer matches and the session ends.
   */
  keyTag: string;
  /** Where it logged in from. */
  remote: string;
  /** Epoch milliseconds. */
  created: number;
  lastSeen: number;
}

/** One line of the panel's audit log: who did what, when, from where. */
export interface AuditEntry {
  /** Epoch milliseconds. */
  at: number;
  /** The account that acted (`alice@example.test`), or the login tried for a refused one. */
  login: string;
  /** The tenant acted on (or asked for). */
  tenant: string;
  /** `login`, `logout`, `password`, `forward-add`, `forward-remove`, `denied`... */
  action: string;
  /** What changed or was refused, one line; never a password. */
  detail: string;
  remote: string;
}

/** Longest tenant and detail an audit entry keeps: a refused request's path is the client's to choose, and one entry stays one short line. */
export const AUDIT_FIELD_MAX = 500;

function clip(s: string): string {
  return s.length > AUDIT_FIELD_MAX ? `${s.slice(0, AUDIT_FIELD_MAX)}…` : s;
}

function hashId(id: string): string {
  return createHash('sha256').update(id).digest('hex');
}

/** The key tag of a password hash (see {@link PanelSession.keyTag}). */
export function keyTag(passwordHash: string): string {
  return createHash('sha256').update(passwordHash).digest('base64url').slice(0, 22);
}

/**
 * The control panel's sessions and audit log, in the state database:
 * sessions survive a restart (a reload or an upgrade does not log every
 * customer out), the operator can read and end them with the CLI while the
 * server runs, and the audit log lives beside the rest of the durable state.
 */
export class PanelStore {
  private readonly getOne;
  private readonly touchOne;
  private readonly insertAudit;

  constructor(private readonly db: Db) {
    this.getOne = db.prepare('SELECT login, tenant, role, csrf, key_tag AS keyTag, remote, created, last_seen AS lastSeen FROM panel_sessions WHERE id_hash = ?');
    this.touchOne = db.prepare('UPDATE panel_sessions SET last_seen = ? WHERE id_hash = ?');
    this.insertAudit = db.prepare('INSERT INTO panel_audit (at, login, tenant, action, detail, remote) VALUES (?, ?, ?, ?, ?, ?)');
  }

  /** Stores a new session under `id` (the cookie value, kept only as its hash). */
  createSession(id: string, s: Omit<PanelSession, 'lastSeen' | 'role'> & { role?: PanelSession['role'] }): void {
    this.db
      .prepare('INSERT INTO panel_sessions (id_hash, login, tenant, role, csrf, key_tag, remote, created, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)')
      .run(hashId(id), s.login, s.tenant, s.role ?? 'customer', s.csrf, s.keyTag, s.remote, s.created, s.created);
  }

  /** Gives session `id` a new key tag (its own password change: it stays logged in). */
  retag(id: string, keyTag: string): void {
    this.db.prepare('UPDATE panel_sessions SET key_tag = ? WHERE id_hash = ?').run(keyTag, hashId(id));
  }

  /**
   * The session with cookie value `id` when it was used within `idleMs` and
   * is younger than `maxAgeMs`, marked as used now; an expired one is
   * deleted. Undefined for an unknown, idle or expired id.
   */
  session(id: string, idleMs: number, maxAgeMs: number, now = Date.now()): PanelSession | undefined {
    const h = hashId(id);
    const s = this.getOne.get(h) as PanelSession | undefined;
    if (!s) return undefined;
    if (now - s.lastSeen > idleMs || now - s.created > maxAgeMs) {
      this.endSession(id);
      return undefined;
    }
    this.touchOne.run(now, h);
    return { ...s, lastSeen: now };
  }

  endSession(id: string): void {
    this.db.prepare('DELETE FROM panel_sessions WHERE id_hash = ?').run(hashId(id));
  }

  /** Ends every session of `login` (after its password changed elsewhere, or by the operator); returns how many. */
  endSessionsOf(login: string, exceptId?: string): number {
    if (exceptId === undefined) return this.db.prepare('DELETE FROM panel_sessions WHERE login = ?').run(login).changes;
    return this.db.prepare('DELETE FROM panel_sessions WHERE login = ? AND id_hash <> ?').run(login, hashId(exceptId)).changes;
  }

  /** Drops sessions idle longer than `idleMs` or older than `maxAgeMs`. */
  prune(idleMs: number, maxAgeMs: number, now = Date.now()): number {
    return this.db.prepare('DELETE FROM panel_sessions WHERE last_seen < ? OR created < ?').run(now - idleMs, now - maxAgeMs).changes;
  }

  audit(e: Omit<AuditEntry, 'at'> & { at?: number }): void {
    this.insertAudit.run(e.at ?? Date.now(), clip(e.login), clip(e.tenant), e.action, clip(e.detail), e.remote);
  }

  /** The newest `limit` audit entries, oldest first; of one tenant when given. */
  auditLog(opts: { tenant?: string; limit?: number } = {}): AuditEntry[] {
    const limit = opts.limit ?? 100;
    const rows = (
      opts.tenant === undefined
        ? this.db.prepare('SELECT at, login, tenant, action, detail, remote FROM panel_audit ORDER BY id DESC LIMIT ?').all(limit)
        : this.db.prepare('SELECT at, login, tenant, action, detail, remote FROM panel_audit WHERE tenant = ? ORDER BY id DESC LIMIT ?').all(opts.tenant, limit)
    ) as AuditEntry[];
    return rows.reverse();
  }
}
