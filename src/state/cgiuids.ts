import type { Db, Migration } from './db.ts';

export const cgiUidMigrations: readonly Migration[] = [
  {
    id: 'cgiuids-1',
    sql: `CREATE TABLE cgi_uids (
      uid INTEGER PRIMARY KEY,
      tenant TEXT NOT NULL UNIQUE,
      assigned_at TEXT NOT NULL
    )`,
  },
];

/** A range of uids (`cgi.uids`), both ends included. */
export interface UidRange {
  first: number;
  last: number;
}

/**
 * Each tenant's handler uid (the same number as its gid), kept in state so
 * that it survives restarts and reloads. A tenant keeps its uid forever
 * once given; a removed tenant's uid stays reserved until `stillHasFiles`
 * says nothing of it is left (its scratch folder and web root gone), and
 * only then, when the range has no never-used uid left, goes to another.
 */
export class CgiUids {
  constructor(private readonly db: Db) {}

  all(): Map<string, number> {
    const rows = this.db.prepare('SELECT uid, tenant FROM cgi_uids').all() as Array<{ uid: number; tenant: string }>;
    return new Map(rows.map((r) => [r.tenant, r.uid]));
  }

  /**
   * Gives every tenant of `tenants` without a uid the lowest free one in
   * `range`, skipping `avoid` (the service's own accounts). Returns the
   * tenants that got none (the range is exhausted).
   */
  assign(tenants: readonly string[], range: UidRange, avoid: ReadonlySet<number>, stillHasFiles: (tenant: string) => boolean): string[] {
    const left: string[] = [];
    this.db.transaction(() => {
      const taken = this.all();
      const used = new Set(taken.values());
      let next = range.first;
      const nextFree = (): number | undefined => {
        while (next <= range.last && (used.has(next) || avoid.has(next))) next++;
        return next <= range.last ? next : undefined;
      };
      const insert = this.db.prepare(`INSERT INTO cgi_uids (uid, tenant, assigned_at) VALUES (?, ?, datetime('now'))`);
      const wanted = new Set(tenants);
      for (const t of tenants) {
        if (taken.has(t)) continue;
        let uid = nextFree();
        if (uid === undefined) {
          // Exhausted: a uid of a tenant that is gone, files and all, may serve again.
          for (const [old, u] of taken) {
            if (wanted.has(old) || stillHasFiles(old) || u < range.first || u > range.last) continue;
            this.db.prepare('DELETE FROM cgi_uids WHERE tenant = ?').run(old);
            taken.delete(old);
            uid = u;
            break;
          }
        }
        if (uid === undefined) {
          left.push(t);
          continue;
        }
        insert.run(uid, t);
        used.add(uid);
        taken.set(t, uid);
      }
    }).immediate();
    return left;
  }
}
