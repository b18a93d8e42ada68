import { createHash, randomBytes } from 'node:crypto';
import type { Db, Migration } from './db.ts';

export const listMigrations: Migration[] = [
  {
    id: 'lists-1',
    // Mailing lists: what changes at run time (members, pending
    // confirmations, held posts, bounce scores); the lists themselves are config.
    sql: `CREATE TABLE list_members (
            id           INTEGER PRIMARY KEY,       -- order of distribution (a resumable cursor)
            tenant       TEXT NOT NULL,
            list         TEXT NOT NULL,
            address      TEXT NOT NULL,             -- lower case
            mode         TEXT NOT NULL DEFAULT 'single' CHECK (mode IN ('single', 'digest')),
            disabled     INTEGER NOT NULL DEFAULT 0, -- 1: delivery stopped by bounces
            bounce_score REAL NOT NULL DEFAULT 0,
            bounce_day   TEXT,                      -- UTC day (YYYY-MM-DD) of the last bounce counted
            joined_at    INTEGER NOT NULL,          -- ms since epoch
            UNIQUE (tenant, list, address)
          );
          CREATE TABLE list_tokens (
            hash       TEXT PRIMARY KEY,            -- SHA-256 of the token: the token itself exists only in the mail sent
            tenant     TEXT NOT NULL,
            list       TEXT NOT NULL,
            action     TEXT NOT NULL CHECK (action IN ('subscribe', 'unsubscribe', 'approve')),
            address    TEXT NOT NULL,               -- who is (un)subscribed; for approve the owner
            mode       TEXT NOT NULL DEFAULT 'single',
            held_id    INTEGER,                     -- for approve
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL
          ) WITHOUT ROWID;
          CREATE INDEX list_tokens_expiry ON list_tokens (expires_at);
          CREATE INDEX list_tokens_who ON list_tokens (tenant, list, action, address);
          CREATE TABLE list_held (
            id         INTEGER PRIMARY KEY,
            tenant     TEXT NOT NULL,
            list       TEXT NOT NULL,
            poster     TEXT NOT NULL,
            subject    TEXT NOT NULL,
            reason     TEXT NOT NULL,
            raw        BLOB NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL
          );
          CREATE TABLE list_inbox (
            id          INTEGER PRIMARY KEY,        -- mail for list addresses, kept from 250 until acted on
            tenant      TEXT NOT NULL,
            list        TEXT NOT NULL,
            role        TEXT NOT NULL,
            param       TEXT NOT NULL,
            rcpt        TEXT NOT NULL,
            sender      TEXT NOT NULL,
            raw         BLOB NOT NULL,
            approved    INTEGER NOT NULL DEFAULT 0, -- 1: a held post the owner approved (no policy check again)
            cursor      INTEGER NOT NULL DEFAULT 0, -- distribution: members with id <= cursor have their copy queued
            received_at INTEGER NOT NULL
          );
          CREATE TABLE list_digest (
            id       INTEGER PRIMARY KEY,           -- posts waiting for the next digest
            tenant   TEXT NOT NULL,
            list     TEXT NOT NULL,
            raw      BLOB NOT NULL,
            added_at INTEGER NOT NULL
          );
          CREATE INDEX list_digest_list ON list_digest (tenant, list, id);
          CREATE TABLE list_archive (
            id      INTEGER PRIMARY KEY,            -- distributed posts, for lists with archive: true
            tenant  TEXT NOT NULL,
            list    TEXT NOT NULL,
            month   TEXT NOT NULL,                  -- YYYY-MM (UTC)
            at      INTEGER NOT NULL,               -- ms since epoch
            poster  TEXT NOT NULL,
            subject TEXT NOT NULL,                  -- decoded
            thread  TEXT NOT NULL,                  -- subject without Re:/Fwd: and prefix, lower case
            text    TEXT NOT NULL                   -- the plain text, decoded (no HTML is kept)
          );
          CREATE INDEX list_archive_month ON list_archive (tenant, list, month, id);`,
  },
  {
    id: 'lists-2',
    // How the inbound checks authenticated a post's From: domain (dmarc, dkim, spf, none; NULL: not checked).
    sql: `ALTER TABLE list_inbox ADD COLUMN auth TEXT;`,
  },
  {
    id: 'lists-3',
    // The From: domain the inbound checks judged (ListMail.authenticatedDomain).
    sql: `ALTER TABLE list_inbox ADD COLUMN auth_domain TEXT;`,
  },
  {
    id: 'lists-4',
    // The DMARC policy the inbound checks found for that domain (ListMail.authenticatedDmarc; NULL: not known).
    sql: `ALTER TABLE list_inbox ADD COLUMN auth_dmarc TEXT;`,
  },
];

export type MemberMode = 'single' | 'digest';

/** What `list_tokens.hash` holds for a token: its SHA-256 in hex (the token itself exists only in the mail that carries it). */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export interface ListMember {
  id: number;
  address: string;
  mode: MemberMode;
  disabled: boolean;
  bounceScore: number;
  bounceDay: string | null;
  joinedAt: number;
}

export interface ListToken {
  tenant: string;
  list: string;
  action: 'subscribe' | 'unsubscribe' | 'approve';
  address: string;
  mode: MemberMode;
  heldId: number | null;
  createdAt: number;
  expiresAt: number;
}

export interface HeldPost {
  id: number;
  tenant: string;
  list: string;
  poster: string;
  subject: string;
  reason: string;
  raw: Buffer;
  createdAt: number;
  expiresAt: number;
}

export interface ArchivedPost {
  id: number;
  month: string;
  at: number;
  poster: string;
  subject: string;
  thread: string;
  text: string;
}

export interface InboxMail {
  id: number;
  tenant: string;
  list: string;
  role: string;
  param: string;
  rcpt: string;
  sender: string;
  raw: Buffer;
  approved: boolean;
  cursor: number;
  receivedAt: number;
  /** See ListMail.authenticated: null when not checked. */
  auth: string | null;
  /** See ListMail.authenticatedDomain: null when not checked or not known. */
  authDomain: string | null;
  /** See ListMail.authenticatedDmarc: null when not known. */
  authDmarc: string | null;
}

interface MemberRow {
  id: number;
  address: string;
  mode: MemberMode;
  disabled: number;
  bounce_score: number;
  bounce_day: string | null;
  joined_at: number;
}

const toMember = (r: MemberRow): ListMember => ({
  id: r.id,
  address: r.address,
  mode: r.mode,
  disabled: r.disabled === 1,
  bounceScore: r.bounce_score,
  bounceDay: r.bounce_day,
  joinedAt: r.joined_at,
});

/** Members, tokens, held posts, the inbox and digest material of every list. Synchronous SQLite statements. */
export class ListStore {
  private readonly s;

  constructor(private readonly db: Db) {
    this.s = {
      member: db.prepare(`SELECT * FROM list_members WHERE tenant = ? AND list = ? AND address = ?`),
      members: db.prepare(`SELECT * FROM list_members WHERE tenant = ? AND list = ? ORDER BY address`),
      batch: db.prepare(`SELECT id, address FROM list_members WHERE tenant = ? AND list = ? AND id > ? AND mode = 'single' AND disabled = 0 ORDER BY id LIMIT ?`),
      digestMembers: db.prepare(`SELECT address FROM list_members WHERE tenant = ? AND list = ? AND mode = 'digest' AND disabled = 0 ORDER BY id`),
      addMember: db.prepare(
        `INSERT INTO list_members (tenant, list, address, mode, joined_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (tenant, list, address) DO UPDATE SET mode = excluded.mode, disabled = 0, bounce_score = 0, bounce_day = NULL`,
      ),
      removeMember: db.prepare(`DELETE FROM list_members WHERE tenant = ? AND list = ? AND address = ?`),
      setBounce: db.prepare(`UPDATE list_members SET bounce_score = ?, bounce_day = ?, disabled = ? WHERE id = ?`),
      addToken: db.prepare(
        `INSERT INTO list_tokens (hash, tenant, list, action, address, mode, held_id, created_at, expires_at)
         VALUES (@hash, @tenant, @list, @action, @address, @mode, @heldId, @createdAt, @expiresAt)`,
      ),
      takeToken: db.prepare(
        `DELETE FROM list_tokens WHERE hash = ? AND tenant = ? AND list = ? AND expires_at > ?
         RETURNING tenant, list, action, address, mode, held_id AS heldId, created_at AS createdAt, expires_at AS expiresAt`,
      ),
      peekToken: db.prepare(
        `SELECT tenant, list, action, address, mode, held_id AS heldId, created_at AS createdAt, expires_at AS expiresAt
         FROM list_tokens WHERE hash = ? AND tenant = ? AND list = ? AND expires_at > ?`,
      ),
      pendingFor: db.prepare(`SELECT COUNT(*) AS n FROM list_tokens WHERE tenant = ? AND list = ? AND action = ? AND address = ? AND created_at > ? AND expires_at > ?`),
      expireTokens: db.prepare(`DELETE FROM list_tokens WHERE expires_at <= ?`),
      expireHeld: db.prepare(`DELETE FROM list_held WHERE expires_at <= ?`),
      hold: db.prepare(
        `INSERT INTO list_held (tenant, list, poster, subject, reason, raw, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      held: db.prepare(`SELECT * FROM list_held WHERE id = ?`),
      heldOf: db.prepare(`SELECT id, tenant, list, poster, subject, reason, created_at AS createdAt, expires_at AS expiresAt FROM list_held WHERE tenant = ? AND list = ? ORDER BY id`),
      dropHeld: db.prepare(`DELETE FROM list_held WHERE id = ?`),
      dropHeldTokens: db.prepare(`DELETE FROM list_tokens WHERE action = 'approve' AND held_id = ?`),
      inbox: db.prepare(
        `INSERT INTO list_inbox (tenant, list, role, param, rcpt, sender, raw, approved, received_at, auth, auth_domain, auth_dmarc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      inboxAll: db.prepare(`SELECT id FROM list_inbox ORDER BY id`),
      inboxGet: db.prepare(`SELECT * FROM list_inbox WHERE id = ?`),
      inboxDone: db.prepare(`DELETE FROM list_inbox WHERE id = ?`),
      inboxCursor: db.prepare(`UPDATE list_inbox SET cursor = ? WHERE id = ?`),
      digestAdd: db.prepare(`INSERT INTO list_digest (tenant, list, raw, added_at) VALUES (?, ?, ?, ?)`),
      digestLists: db.prepare(`SELECT DISTINCT tenant, list FROM list_digest`),
      digestPosts: db.prepare(`SELECT id, raw FROM list_digest WHERE tenant = ? AND list = ? ORDER BY id`),
      digestDrop: db.prepare(`DELETE FROM list_digest WHERE tenant = ? AND list = ? AND id <= ?`),
      archive: db.prepare(`INSERT INTO list_archive (tenant, list, month, at, poster, subject, thread, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
      months: db.prepare(`SELECT month, COUNT(*) AS n FROM list_archive WHERE tenant = ? AND list = ? GROUP BY month ORDER BY month DESC`),
      monthPosts: db.prepare(`SELECT id, month, at, poster, subject, thread, '' AS text FROM list_archive WHERE tenant = ? AND list = ? AND month = ? ORDER BY id`),
      archived: db.prepare(`SELECT id, month, at, poster, subject, thread, text FROM list_archive WHERE tenant = ? AND list = ? AND id = ?`),
    };
  }

  member(tenant: string, list: string, address: string): ListMember | undefined {
    const r = this.s.member.get(tenant, list, address) as MemberRow | undefined;
    return r && toMember(r);
  }

  members(tenant: string, list: string): ListMember[] {
    return (this.s.members.all(tenant, list) as MemberRow[]).map(toMember);
  }

  /** Up to `limit` members getting single posts, enabled, with id above `after`, in id order. */
  deliveryBatch(tenant: string, list: string, after: number, limit: number): Array<{ id: number; address: string }> {
    return this.s.batch.all(tenant, list, after, limit) as Array<{ id: number; address: string }>;
  }

  digestMembers(tenant: string, list: string): string[] {
    return (this.s.digestMembers.all(tenant, list) as { address: string }[]).map((r) => r.address);
  }

  /** Adds a member (or changes its mode and enables it again). */
  addMember(tenant: string, list: string, address: string, mode: MemberMode, now: number): void {
    this.s.addMember.run(tenant, list, address, mode, now);
  }

  /** True when there was such a member. */
  removeMember(tenant: string, list: string, address: string): boolean {
    return this.s.removeMember.run(tenant, list, address).changes > 0;
  }

  setBounce(id: number, score: number, day: string, disabled: boolean): void {
    this.s.setBounce.run(score, day, disabled ? 1 : 0, id);
  }

  /**
   * A fresh approval token for held post `heldId`, in the owner's name: what
   * an operator's or the panel's decision hands to the same confirmation as
   * the owner's reply. Returns the token itself (only its hash is stored).
   */
  moderationToken(tenant: string, list: string, heldId: number, owner: string, now: number, ttlMs: number): string {
    const token = randomBytes(16).toString('hex');
    this.addToken(hashToken(token), { tenant, list, action: 'approve', address: owner, mode: 'single', heldId, createdAt: now, expiresAt: now + ttlMs });
    return token;
  }

  addToken(hash: string, t: ListToken): void {
    this.s.addToken.run({ hash, ...t });
  }

  /** Takes a token of this list that has not expired: it is gone after this call (single use). */
  takeToken(hash: string, tenant: string, list: string, now: number): ListToken | undefined {
    return this.s.takeToken.get(hash, tenant, list, now) as ListToken | undefined;
  }

  /** A token of this list that has not expired, left in place (for a page that only shows what a POST would do). */
  peekToken(hash: string, tenant: string, list: string, now: number): ListToken | undefined {
    return this.s.peekToken.get(hash, tenant, list, now) as ListToken | undefined;
  }

  /** True when a live token for this action and address was made after `since`. */
  hasPending(tenant: string, list: string, action: ListToken['action'], address: string, since: number, now: number): boolean {
    return (this.s.pendingFor.get(tenant, list, action, address, since, now) as { n: number }).n > 0;
  }

  /** Deletes expired tokens and held posts; returns how many of each. */
  expire(now: number): { tokens: number; held: number } {
    return this.db.transaction(() => ({ tokens: this.s.expireTokens.run(now).changes, held: this.s.expireHeld.run(now).changes })).immediate();
  }

  hold(h: Omit<HeldPost, 'id'>): number {
    return Number(this.s.hold.run(h.tenant, h.list, h.poster, h.subject, h.reason, h.raw, h.createdAt, h.expiresAt).lastInsertRowid);
  }

  held(id: number): HeldPost | undefined {
    const r = this.s.held.get(id) as (Omit<HeldPost, 'createdAt' | 'expiresAt'> & { created_at: number; expires_at: number }) | undefined;
    return r && { id: r.id, tenant: r.tenant, list: r.list, poster: r.poster, subject: r.subject, reason: r.reason, raw: r.raw, createdAt: r.created_at, expiresAt: r.expires_at };
  }

  heldOf(tenant: string, list: string): Array<Omit<HeldPost, 'raw'>> {
    return this.s.heldOf.all(tenant, list) as Array<Omit<HeldPost, 'raw'>>;
  }

  /** Removes a held post and its approval tokens; with `post`, queues it into the inbox as approved, in the same transaction. */
  release(h: HeldPost, post: boolean, now: number): number | undefined {
    return this.db.transaction(() => {
      this.s.dropHeld.run(h.id);
      this.s.dropHeldTokens.run(h.id);
      if (!post) return undefined;
      return Number(this.s.inbox.run(h.tenant, h.list, 'post', '', `${h.list}@`, h.poster, h.raw, 1, now, null, null, null).lastInsertRowid);
    }).immediate();
  }

  /** Stores mail for a list address; returns its inbox id. */
  receive(
    m: Omit<InboxMail, 'id' | 'cursor' | 'approved' | 'receivedAt' | 'auth' | 'authDomain' | 'authDmarc'> & { authenticated?: string | undefined; authenticatedDomain?: string | undefined; authenticatedDmarc?: string | undefined },
    now: number,
  ): number {
    return Number(this.s.inbox.run(m.tenant, m.list, m.role, m.param, m.rcpt, m.sender, m.raw, 0, now, m.authenticated ?? null, m.authenticatedDomain?.toLowerCase() ?? null, m.authenticatedDmarc ?? null).lastInsertRowid);
  }

  inboxIds(): number[] {
    return (this.s.inboxAll.all() as { id: number }[]).map((r) => r.id);
  }

  inboxGet(id: number): InboxMail | undefined {
    const r = this.s.inboxGet.get(id) as
      | { id: number; tenant: string; list: string; role: string; param: string; rcpt: string; sender: string; raw: Buffer; approved: number; cursor: number; received_at: number; auth: string | null; auth_domain: string | null; auth_dmarc: string | null }
      | undefined;
    return r && { ...r, approved: r.approved === 1, receivedAt: r.received_at, authDomain: r.auth_domain, authDmarc: r.auth_dmarc };
  }

  inboxDone(id: number): void {
    this.s.inboxDone.run(id);
  }

  inboxCursor(id: number, cursor: number): void {
    this.s.inboxCursor.run(cursor, id);
  }

  addDigest(tenant: string, list: string, raw: Buffer, now: number): void {
    this.s.digestAdd.run(tenant, list, raw, now);
  }

  digestLists(): Array<{ tenant: string; list: string }> {
    return this.s.digestLists.all() as Array<{ tenant: string; list: string }>;
  }

  digestPosts(tenant: string, list: string): Array<{ id: number; raw: Buffer }> {
    return this.s.digestPosts.all(tenant, list) as Array<{ id: number; raw: Buffer }>;
  }

  dropDigest(tenant: string, list: string, upTo: number): void {
    this.s.digestDrop.run(tenant, list, upTo);
  }

  archive(tenant: string, list: string, p: Omit<ArchivedPost, 'id'>): void {
    this.s.archive.run(tenant, list, p.month, p.at, p.poster, p.subject, p.thread, p.text);
  }

  /** Months with archived posts, newest first, with their counts. */
  archiveMonths(tenant: string, list: string): Array<{ month: string; n: number }> {
    return this.s.months.all(tenant, list) as Array<{ month: string; n: number }>;
  }

  /** The posts of a month, oldest first, without their text. */
  archiveMonth(tenant: string, list: string, month: string): ArchivedPost[] {
    return this.s.monthPosts.all(tenant, list, month) as ArchivedPost[];
  }

  archived(tenant: string, list: string, id: number): ArchivedPost | undefined {
    return this.s.archived.get(tenant, list, id) as ArchivedPost | undefined;
  }

  /** Runs `fn` in one transaction. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }
}
