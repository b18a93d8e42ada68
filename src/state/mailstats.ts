import type { Db, Migration } from './db.ts';

export const mailStatsMigrations: Migration[] = [
  {
    id: 'mailstats-1',
    // What became of mail for each tenant's addresses: counts per UTC day, and the
    // most recent outcomes themselves (a bounded number per tenant), for its panel.
    sql: `CREATE TABLE mail_days (
            tenant    TEXT NOT NULL,
            day       TEXT NOT NULL,
            forwarded INTEGER NOT NULL DEFAULT 0,
            refused   INTEGER NOT NULL DEFAULT 0,
            bounced   INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (tenant, day)
          ) WITHOUT ROWID;
          CREATE TABLE mail_events (
            id      INTEGER PRIMARY KEY,
            tenant  TEXT NOT NULL,
            at      INTEGER NOT NULL,           -- ms since epoch
            kind    TEXT NOT NULL CHECK (kind IN ('forwarded', 'refused', 'bounced')),
            address TEXT NOT NULL,              -- the tenant's address the mail was for
            target  TEXT NOT NULL,              -- where it was forwarded ('' when refused at RCPT)
            sender  TEXT NOT NULL,              -- envelope sender ('' = null sender)
            reply   TEXT NOT NULL               -- the next hop's reply, or our refusal
          );
          CREATE INDEX mail_events_tenant ON mail_events (tenant, id);`,
  },
];

export type MailKind = 'forwarded' | 'refused' | 'bounced';

/** One outcome for one recipient of mail to a tenant's address. */
export interface MailEvent {
  tenant: string;
  kind: MailKind;
  address: string;
  target: string;
  sender: string;
  reply: string;
  /** ms since epoch; now when not given. */
  at?: number;
}

export interface MailDay {
  day: string;
  forwarded: number;
  refused: number;
  bounced: number;
}

/** Outcomes kept per tenant (the newest); the panel shows fewer. */
export const EVENTS_KEPT = 200;
/** Outcomes waiting for their write; past it the oldest are dropped (a flood of refusals costs no memory). Their day counts are always kept. */
export const PENDING_MAX = 5000;

/**
 * Per-tenant mail outcomes. Recorded on the mail service's hot paths, so a
 * record costs no I/O: outcomes wait in memory and are written in one
 * transaction at the next turn of the event loop (and before every read,
 * and at close).
 */
export class MailStats {
  private pending: Array<Required<MailEvent>> = [];
  /** Per tenant and day, the counts not yet written: every outcome, also those dropped from `pending`. */
  private pendingDays = new Map<string, MailDay & { tenant: string }>();
  private scheduled = false;
  private readonly stmts;
  /** Told when a write fails (what was pending is kept for the next one); without it the failure goes to stderr as a warning. */
  onError: ((err: Error) => void) | undefined;

  constructor(private readonly db: Db) {
    this.stmts = {
      day: db.prepare(
        `INSERT INTO mail_days (tenant, day, forwarded, refused, bounced) VALUES (@tenant, @day, @forwarded, @refused, @bounced)
         ON CONFLICT (tenant, day) DO UPDATE SET forwarded = forwarded + excluded.forwarded, refused = refused + excluded.refused, bounced = bounced + excluded.bounced`,
      ),
      event: db.prepare(`INSERT INTO mail_events (tenant, at, kind, address, target, sender, reply) VALUES (@tenant, @at, @kind, @address, @target, @sender, @reply)`),
      prune: db.prepare(
        `DELETE FROM mail_events WHERE tenant = ? AND id <= (SELECT id FROM mail_events WHERE tenant = ? ORDER BY id DESC LIMIT 1 OFFSET ${EVENTS_KEPT})`,
      ),
      days: db.prepare(`SELECT day, forwarded, refused, bounced FROM mail_days WHERE tenant = ? AND day >= ? ORDER BY day`),
      recent: db.prepare(`SELECT at, kind, address, target, sender, reply FROM mail_events WHERE tenant = ? ORDER BY id DESC LIMIT ?`),
    };
  }

  /** Counts one outcome (written shortly, see the class). */
  record(e: MailEvent): void {
    const at = e.at ?? Date.now();
    if (this.pending.length >= PENDING_MAX) this.pending.splice(0, this.pending.length - PENDING_MAX + 1);
    this.pending.push({ ...e, at });
    const day = new Date(at).toISOString().slice(0, 10);
    const key = `${e.tenant}\n${day}`;
    const d = this.pendingDays.get(key) ?? { tenant: e.tenant, day, forwarded: 0, refused: 0, bounced: 0 };
    d[e.kind]++;
    this.pendingDays.set(key, d);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        if (this.db.open) this.flush();
      });
    }
  }

  /** Writes what is pending; when that fails, says so (see {@link onError}) and keeps it for the next write. */
  flush(): void {
    this.scheduled = false;
    if (this.pending.length === 0 && this.pendingDays.size === 0) return;
    const batch = this.pending;
    const days = this.pendingDays;
    this.pending = [];
    this.pendingDays = new Map();
    try {
      this.db.transaction(() => {
        for (const d of days.values()) this.stmts.day.run(d);
        for (const e of batch) this.stmts.event.run(e);
        for (const tenant of new Set(batch.map((e) => e.tenant))) this.stmts.prune.run(tenant, tenant);
      }).immediate();
    } catch (err) {
      // Nothing was written (one transaction): all of it waits for the next write, the newer outcomes after it.
      this.pending = [...batch, ...this.pending].slice(-PENDING_MAX);
      for (const [key, d] of days) {
        const now = this.pendingDays.get(key);
        this.pendingDays.set(key, now ? { ...d, forwarded: d.forwarded + now.forwarded, refused: d.refused + now.refused, bounced: d.bounced + now.bounced } : d);
      }
      const e = err instanceof Error ? err : new Error(String(err));
      if (this.onError) this.onError(e);
      else process.emitWarning(`mail outcomes not written (kept for the next write): ${e.message}`);
    }
  }

  /** Per-day counts of `tenant` from `sinceDay` (YYYY-MM-DD) on, oldest first; days without mail are absent. */
  days(tenant: string, sinceDay: string): MailDay[] {
    this.flush();
    return this.stmts.days.all(tenant, sinceDay) as MailDay[];
  }

  /** The newest `limit` outcomes of `tenant`, newest first. */
  recent(tenant: string, limit = 50): Array<Required<Omit<MailEvent, 'tenant'>>> {
    this.flush();
    return this.stmts.recent.all(tenant, limit) as Array<Required<Omit<MailEvent, 'tenant'>>>;
  }
}
