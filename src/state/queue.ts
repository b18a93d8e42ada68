import type { Db, Migration } from './db.ts';

export const queueMigrations: Migration[] = [
  {
    id: 'mail-1',
    // The outbound mail queue. The message itself lives in a spool file
    // (<data>/spool/q/<file>, possibly shared with other messages) where an
    // envelope line precedes it, so a row lost with the last WAL frames on
    // power failure is rebuilt from the file. mail_spool_done remembers
    // messages that left the queue while their file still holds others.
    sql: `CREATE TABLE mail_queue (
            id           TEXT PRIMARY KEY,
            file         TEXT NOT NULL,           -- spool file name
            created_at   INTEGER NOT NULL,        -- ms since epoch
            sender       TEXT NOT NULL,           -- envelope sender used outbound ('' = null sender)
            return_path  TEXT NOT NULL,           -- who gets a bounce ('' = nobody)
            tenant       TEXT,
            size         INTEGER NOT NULL,
            offset       INTEGER NOT NULL,        -- where the message starts in the spool file
            attempts     INTEGER NOT NULL DEFAULT 0,
            next_attempt INTEGER NOT NULL,        -- ms since epoch
            last_reply   TEXT
          );
          CREATE INDEX mail_queue_next ON mail_queue (next_attempt);
          CREATE TABLE mail_spool_done (
            id   TEXT PRIMARY KEY,
            file TEXT NOT NULL
          ) WITHOUT ROWID;
          CREATE INDEX mail_spool_done_file ON mail_spool_done (file);
          CREATE TABLE mail_rcpt (
            queue_id   TEXT NOT NULL REFERENCES mail_queue (id) ON DELETE CASCADE,
            rcpt       TEXT NOT NULL,             -- the mailbox we deliver to
            orig_rcpt  TEXT NOT NULL,             -- the address the sender used (for the DSN)
            status     TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
            last_reply TEXT,
            PRIMARY KEY (queue_id, rcpt)
          ) WITHOUT ROWID;`,
  },
  {
    id: 'mail-2',
    // MAIL FROM parameters passed on to the next hop: BODY=8BITMIME (RFC 6152) and
    // SMTPUTF8 (RFC 6531: 0 not asked, 1 asked but the message is ASCII, 2 needed).
    sql: `ALTER TABLE mail_queue ADD COLUMN body_8bit INTEGER NOT NULL DEFAULT 0;
          ALTER TABLE mail_queue ADD COLUMN smtputf8 INTEGER NOT NULL DEFAULT 0;`,
  },
];

/** SMTPUTF8 of a queued message: 0 not asked for, 1 asked for but the message needs none, 2 needed (UTF-8 in its envelope or headers). */
export type Utf8Need = 0 | 1 | 2;

export interface QueuedRecipient {
  rcpt: string;
  origRcpt: string;
  status: 'pending' | 'sent' | 'failed';
  lastReply: string | null;
}

export interface QueuedMessage {
  id: string;
  file: string;
  createdAt: number;
  sender: string;
  returnPath: string;
  tenant: string | null;
  size: number;
  offset: number;
  attempts: number;
  nextAttempt: number;
  lastReply: string | null;
  /** Sent with BODY=8BITMIME. */
  eightBit: boolean;
  smtputf8: Utf8Need;
}

export interface NewQueuedMessage {
  id: string;
  file: string;
  createdAt: number;
  sender: string;
  returnPath: string;
  tenant?: string | undefined;
  size: number;
  offset: number;
  recipients: ReadonlyArray<{ rcpt: string; origRcpt: string }>;
  eightBit?: boolean | undefined;
  smtputf8?: Utf8Need | undefined;
}

interface Row {
  id: string;
  file: string;
  created_at: number;
  sender: string;
  return_path: string;
  tenant: string | null;
  size: number;
  offset: number;
  attempts: number;
  next_attempt: number;
  last_reply: string | null;
  body_8bit: number;
  smtputf8: number;
}

function toMessage(r: Row): QueuedMessage {
  return {
    id: r.id,
    file: r.file,
    createdAt: r.created_at,
    sender: r.sender,
    returnPath: r.return_path,
    tenant: r.tenant,
    size: r.size,
    offset: r.offset,
    attempts: r.attempts,
    nextAttempt: r.next_attempt,
    lastReply: r.last_reply,
    eightBit: r.body_8bit === 1,
    smtputf8: r.smtputf8 as Utf8Need,
  };
}

/** The mail queue's rows. All calls are synchronous SQLite statements; none touches the spool. */
export class MailQueueStore {
  private readonly stmts;

  constructor(private readonly db: Db) {
    this.stmts = {
      insert: db.prepare(
        `INSERT INTO mail_queue (id, file, created_at, sender, return_path, tenant, size, offset, next_attempt, body_8bit, smtputf8)
         VALUES (@id, @file, @createdAt, @sender, @returnPath, @tenant, @size, @offset, @createdAt, @eightBit, @smtputf8)`,
      ),
      insertRcpt: db.prepare(`INSERT OR IGNORE INTO mail_rcpt (queue_id, rcpt, orig_rcpt) VALUES (?, ?, ?)`),
      get: db.prepare(`SELECT * FROM mail_queue WHERE id = ?`),
      rcpts: db.prepare(`SELECT rcpt, orig_rcpt AS origRcpt, status, last_reply AS lastReply FROM mail_rcpt WHERE queue_id = ? ORDER BY rcpt`),
      due: db.prepare(`SELECT id FROM mail_queue WHERE next_attempt <= ? ORDER BY next_attempt LIMIT ?`),
      nextDue: db.prepare(`SELECT MIN(next_attempt) AS t FROM mail_queue`),
      all: db.prepare(`SELECT * FROM mail_queue ORDER BY created_at`),
      files: db.prepare(`SELECT id, file FROM mail_queue`),
      done: db.prepare(`INSERT OR IGNORE INTO mail_spool_done (id, file) VALUES (?, ?)`),
      doneIds: db.prepare(`SELECT id FROM mail_spool_done`),
      forgetFile: db.prepare(`DELETE FROM mail_spool_done WHERE file = ?`),
      setRcpt: db.prepare(`UPDATE mail_rcpt SET status = ?, last_reply = ? WHERE queue_id = ? AND rcpt = ?`),
      defer: db.prepare(`UPDATE mail_queue SET attempts = attempts + 1, next_attempt = ?, last_reply = ? WHERE id = ?`),
      flushAll: db.prepare(`UPDATE mail_queue SET next_attempt = 0`),
      remove: db.prepare(`DELETE FROM mail_queue WHERE id = ?`),
      count: db.prepare(`SELECT COUNT(*) AS n FROM mail_queue`),
      oldest: db.prepare(`SELECT MIN(created_at) AS t FROM mail_queue`),
    };
  }

  /** Runs `fn` in one transaction (nested calls become savepoints). */
  transaction(fn: () => void): void {
    this.db.transaction(fn).immediate();
  }

  /** Records a message and its recipients in one transaction. */
  add(m: NewQueuedMessage): void {
    this.db.transaction(() => {
      this.stmts.insert.run({ ...m, tenant: m.tenant ?? null, eightBit: m.eightBit ? 1 : 0, smtputf8: m.smtputf8 ?? 0 });
      for (const r of m.recipients) this.stmts.insertRcpt.run(m.id, r.rcpt, r.origRcpt);
    }).immediate();
  }

  get(id: string): QueuedMessage | undefined {
    const r = this.stmts.get.get(id) as Row | undefined;
    return r && toMessage(r);
  }

  recipients(id: string): QueuedRecipient[] {
    return this.stmts.rcpts.all(id) as QueuedRecipient[];
  }

  /** Ids whose next attempt is due at `now`, oldest first. */
  due(now: number, limit: number): string[] {
    return (this.stmts.due.all(now, limit) as { id: string }[]).map((r) => r.id);
  }

  /** The earliest next attempt in the queue, or undefined when it is empty. */
  nextDue(): number | undefined {
    return (this.stmts.nextDue.get() as { t: number | null }).t ?? undefined;
  }

  list(): QueuedMessage[] {
    return (this.stmts.all.all() as Row[]).map(toMessage);
  }

  /** Queued message id → its spool file. */
  files(): Map<string, string> {
    return new Map((this.stmts.files.all() as { id: string; file: string }[]).map((r) => [r.id, r.file]));
  }

  /** Ids of messages that left the queue while their spool file still holds others. */
  doneIds(): Set<string> {
    return new Set((this.stmts.doneIds.all() as { id: string }[]).map((r) => r.id));
  }

  /** When the oldest queued message arrived (ms since the epoch), if any. */
  oldest(): number | undefined {
    return (this.stmts.oldest.get() as { t: number | null }).t ?? undefined;
  }

  count(): number {
    return (this.stmts.count.get() as { n: number }).n;
  }

  /** Marks recipients delivered or failed, in one transaction. */
  settle(id: string, outcomes: ReadonlyArray<{ rcpt: string; status: 'sent' | 'failed' | 'pending'; reply: string }>): void {
    this.db.transaction(() => {
      for (const o of outcomes) this.stmts.setRcpt.run(o.status, o.reply, id, o.rcpt);
    }).immediate();
  }

  /** Counts an attempt and sets the next one. */
  defer(id: string, nextAttempt: number, reply: string): void {
    this.stmts.defer.run(nextAttempt, reply, id);
  }

  /** Makes every queued message due now; returns how many there are. */
  flushAll(): number {
    return this.stmts.flushAll.run().changes;
  }

  /**
   * Takes a message out of the queue. `fileKept`: its spool file still
   * holds other messages, so the id is remembered as done (a restart must
   * not take it for a message whose row was lost).
   */
  remove(id: string, file?: string, fileKept = false): boolean {
    return this.db.transaction(() => {
      const n = this.stmts.remove.run(id).changes;
      if (fileKept && file) this.stmts.done.run(id, file);
      return n > 0;
    }).immediate();
  }

  /** Forgets the done ids of a spool file once the file is gone. */
  forgetFile(file: string): void {
    this.stmts.forgetFile.run(file);
  }
}
