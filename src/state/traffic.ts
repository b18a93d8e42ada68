import type { Db, Migration } from './db.ts';

export const trafficMigrations: Migration[] = [
  {
    id: 'traffic-1',
    // Per-tenant traffic, one row per tenant and UTC day.
    sql: `CREATE TABLE traffic (
            tenant   TEXT NOT NULL,
            day      TEXT NOT NULL,
            requests INTEGER NOT NULL DEFAULT 0,
            bytes    INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (tenant, day)
          ) WITHOUT ROWID`,
  },
];

export interface TrafficTotals {
  requests: number;
  bytes: number;
}

/**
 * Per-tenant traffic counters. Hits are summed in memory (the hot path
 * does no I/O) and written in one transaction by {@link flush}, which the
 * owner calls periodically and on stop.
 */
export class TrafficCounters {
  private pending = new Map<string, TrafficTotals>();
  private readonly upsert;
  private readonly sumSince;

  constructor(private readonly db: Db) {
    this.upsert = db.prepare(
      `INSERT INTO traffic (tenant, day, requests, bytes) VALUES (?, ?, ?, ?)
       ON CONFLICT (tenant, day) DO UPDATE SET requests = requests + excluded.requests, bytes = bytes + excluded.bytes`,
    );
    this.sumSince = db.prepare(
      `SELECT COALESCE(SUM(requests), 0) AS requests, COALESCE(SUM(bytes), 0) AS bytes FROM traffic WHERE tenant = ? AND day >= ?`,
    );
  }

  /** Counts one request of `bytes` body bytes for `tenant`. */
  add(tenant: string, bytes: number): void {
    const t = this.pending.get(tenant);
    if (t) {
      t.requests++;
      t.bytes += bytes;
    } else {
      this.pending.set(tenant, { requests: 1, bytes });
    }
  }

  /** Writes what has been counted since the last flush, under today's UTC date. */
  flush(now = new Date()): void {
    if (this.pending.size === 0) return;
    const day = now.toISOString().slice(0, 10);
    const batch = this.pending;
    this.pending = new Map();
    this.db.transaction(() => {
      for (const [tenant, t] of batch) this.upsert.run(tenant, day, t.requests, t.bytes);
    }).immediate();
  }

  /** Totals for `tenant` from `sinceDay` (YYYY-MM-DD) on, as written so far. */
  since(tenant: string, sinceDay: string): TrafficTotals {
    return this.sumSince.get(tenant, sinceDay) as TrafficTotals;
  }
}
