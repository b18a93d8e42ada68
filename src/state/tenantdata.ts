import type { Db } from './db.ts';

/**
 * A tenant's rows in every state table, as written to and read from an
 * archive (`state.json`): table name → rows, BLOB columns as `{ "$b64": … }`.
 */
export type TenantRows = Record<string, Array<Record<string, unknown>>>;

/**
 * Tables whose rows the queue owns: those go through the queue itself (a
 * running server's queue keeps spool files and memory for them), never
 * through {@link takeTenantRows}.
 */
const QUEUE_TABLES = new Set(['mail_queue', 'mail_rcpt', 'mail_spool_done']);

/**
 * Every table with a `tenant` column, found in the schema itself, so a
 * table a later migration adds is archived and removed with the others
 * without anyone remembering to list it here.
 */
export function tenantTables(db: Db): string[] {
  const tables = (db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`).all() as { name: string }[]).map((r) => r.name);
  return tables.filter((name) => !QUEUE_TABLES.has(name) && columns(db, name).includes('tenant'));
}

function columns(db: Db, table: string): string[] {
  return (db.prepare(`PRAGMA table_info("${table}")`).all() as { name: string }[]).map((c) => c.name);
}

/** The primary key columns of `table`, for a stable row order (WITHOUT ROWID tables have no rowid to sort by). */
function primaryKey(db: Db, table: string): string {
  const pk = (db.prepare(`PRAGMA table_info("${table}")`).all() as { name: string; pk: number }[]).filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk);
  return pk.length > 0 ? pk.map((c) => `"${c.name}"`).join(', ') : 'rowid';
}

function encode(row: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(row)) out[k] = Buffer.isBuffer(v) ? { $b64: v.toString('base64') } : v;
  return out;
}

function decode(v: unknown): unknown {
  if (v && typeof v === 'object' && typeof (v as { $b64?: unknown }).$b64 === 'string') return Buffer.from((v as { $b64: string }).$b64, 'base64');
  return v;
}

/**
 * Reads and deletes every row of `tenant` outside the mail queue, in one
 * transaction: after it, nothing in state names the tenant, so a new
 * tenant given the same id starts empty. Returns what was taken.
 */
export function takeTenantRows(db: Db, tenant: string): TenantRows {
  return db.transaction(() => {
    const out: TenantRows = {};
    for (const table of tenantTables(db)) {
      const order = primaryKey(db, table);
      const rows = db.prepare(`SELECT * FROM "${table}" WHERE tenant = ? ORDER BY ${order}`).all(tenant) as Array<Record<string, unknown>>;
      if (rows.length === 0) continue;
      out[table] = rows.map(encode);
      db.prepare(`DELETE FROM "${table}" WHERE tenant = ?`).run(tenant);
    }
    return out;
  }).immediate();
}

/**
 * Reads and deletes the rows of one list of `tenant` (every table with a
 * `tenant` and a `list` column), in one transaction: a list created again
 * under that name starts without the old members, posts or tokens.
 */
export function takeListRows(db: Db, tenant: string, list: string): TenantRows {
  return db.transaction(() => {
    const out: TenantRows = {};
    for (const table of tenantTables(db)) {
      if (!columns(db, table).includes('list')) continue;
      const rows = db.prepare(`SELECT * FROM "${table}" WHERE tenant = ? AND list = ? ORDER BY ${primaryKey(db, table)}`).all(tenant, list) as Array<Record<string, unknown>>;
      if (rows.length === 0) continue;
      out[table] = rows.map(encode);
      db.prepare(`DELETE FROM "${table}" WHERE tenant = ? AND list = ?`).run(tenant, list);
    }
    return out;
  }).immediate();
}

/**
 * Puts archived rows back, in one transaction (all or nothing). Integer
 * ids keep their value where it is free and get a new one where another
 * row took it meanwhile; the references between list tables (an approval
 * token's held post, a distribution's member cursor) follow the new ids.
 * Throws, restoring nothing, if a row does not fit the current schema.
 */
export function restoreTenantRows(db: Db, tenant: string, rows: TenantRows): Record<string, number> {
  return db.transaction(() => {
    const counts: Record<string, number> = {};
    const newIds = new Map<string, Map<number, number>>();
    // Members and held posts first: tokens and inbox rows point at them.
    const order = Object.keys(rows).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    for (const table of order) {
      const cols = columns(db, table);
      if (cols.length === 0) throw new Error(`the archive has rows for a table "${table}" this version does not have`);
      const map = new Map<number, number>();
      newIds.set(table, map);
      for (const raw of rows[table]!) {
        const row: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(raw)) {
          if (!cols.includes(k)) throw new Error(`the archive's ${table} rows have a column "${k}" this version does not have`);
          row[k] = decode(v);
        }
        if (row.tenant !== tenant) throw new Error(`the archive's ${table} rows belong to tenant "${String(row.tenant)}", not "${tenant}"`);
        if (table === 'list_tokens' && typeof row.held_id === 'number') row.held_id = newIds.get('list_held')?.get(row.held_id) ?? row.held_id;
        if (table === 'list_inbox' && typeof row.cursor === 'number' && row.cursor > 0) row.cursor = cursorAfter(newIds.get('list_members'), row.cursor);
        const oldId = typeof row.id === 'number' ? row.id : undefined;
        // Members always get new ids: their order is a distribution's cursor, and new ids keep it (each above every existing one).
        if (oldId !== undefined && (table === 'list_members' || db.prepare(`SELECT 1 FROM "${table}" WHERE id = ?`).get(oldId))) delete row.id;
        const keys = Object.keys(row);
        // A day of traffic (or mail) counted again while the tenant was away (the server flushes its counters by id): the two add up.
        const merge =
          table === 'traffic'
            ? ' ON CONFLICT(tenant, day) DO UPDATE SET requests = requests + excluded.requests, bytes = bytes + excluded.bytes'
            : table === 'mail_days'
              ? ' ON CONFLICT(tenant, day) DO UPDATE SET forwarded = forwarded + excluded.forwarded, refused = refused + excluded.refused, bounced = bounced + excluded.bounced'
              : '';
        const info = db.prepare(`INSERT INTO "${table}" (${keys.map((k) => `"${k}"`).join(', ')}) VALUES (${keys.map(() => '?').join(', ')})${merge}`).run(...keys.map((k) => row[k]));
        if (oldId !== undefined) map.set(oldId, row.id === undefined ? Number(info.lastInsertRowid) : oldId);
        counts[table] = (counts[table] ?? 0) + 1;
      }
    }
    return counts;
  }).immediate();
}

function rank(table: string): number {
  return table === 'list_members' || table === 'list_held' ? 0 : 1;
}

/** A distribution cursor ("members up to this id have their copy") in terms of the restored members' ids. */
function cursorAfter(members: Map<number, number> | undefined, cursor: number): number {
  let best = 0;
  for (const [oldId, newId] of members ?? []) if (oldId <= cursor && newId > best) best = newId;
  return best;
}

/**
 * Rows a tenant owns in tables that do not name it: DKIM keys by its
 * domains (`dkim_keys`), FTP login throttle rows by its accounts
 * (`ftp_login_attempts`, `ftp_login_locks`: `account` is `user@<tenant>`).
 * Read and deleted in one transaction, like {@link takeTenantRows}.
 */
export function takeOwnedRows(db: Db, tenant: string, domains: readonly string[]): TenantRows {
  const suffix = `@${tenant}`;
  const lower = domains.map((d) => d.toLowerCase());
  return db.transaction(() => {
    const out: TenantRows = {};
    const take = (table: string, where: string, ...args: unknown[]) => {
      const rows = db.prepare(`SELECT * FROM "${table}" WHERE ${where} ORDER BY ${primaryKey(db, table)}`).all(...args) as Array<Record<string, unknown>>;
      if (rows.length === 0) return;
      out[table] = rows.map(encode);
      db.prepare(`DELETE FROM "${table}" WHERE ${where}`).run(...args);
    };
    if (lower.length > 0) take('dkim_keys', `domain IN (${lower.map(() => '?').join(', ')})`, ...lower);
    // The '@' anchors the match: alice@ab.test belongs to tenant "ab.test", not to "b.test".
    for (const table of ['ftp_login_attempts', 'ftp_login_locks']) take(table, 'substr(account, -?) = ?', suffix.length, suffix);
    return out;
  }).immediate();
}

/**
 * Puts back rows taken by {@link takeOwnedRows}, in one transaction. DKIM
 * keys of a domain that has keys again meanwhile are not put back (two
 * signing sets would sign at once): those domains are returned in
 * `skipped`, and their files stay in the archive. Throttle attempts get
 * new ids; a lock whose key is locked again meanwhile keeps the new lock.
 */
export function restoreOwnedRows(db: Db, rows: TenantRows): { counts: Record<string, number>; skipped: string[] } {
  return db.transaction(() => {
    const counts: Record<string, number> = {};
    // Decided before anything is inserted: a domain's own rows must not make it look taken.
    const skipped = new Set(
      [...new Set((rows.dkim_keys ?? []).map((r) => String(r.domain)))].filter((d) => db.prepare('SELECT 1 FROM dkim_keys WHERE domain = ?').get(d)),
    );
    for (const [table, list] of Object.entries(rows)) {
      const cols = columns(db, table);
      if (cols.length === 0) throw new Error(`the archive has rows for a table "${table}" this version does not have`);
      for (const raw of list) {
        const row: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(raw)) {
          if (!cols.includes(k)) throw new Error(`the archive's ${table} rows have a column "${k}" this version does not have`);
          row[k] = decode(v);
        }
        if (table === 'dkim_keys' && skipped.has(String(row.domain))) continue;
        if (table === 'ftp_login_attempts') delete row.id;
        const keys = Object.keys(row);
        const verb = table === 'ftp_login_locks' ? 'INSERT OR IGNORE' : 'INSERT';
        db.prepare(`${verb} INTO "${table}" (${keys.map((k) => `"${k}"`).join(', ')}) VALUES (${keys.map(() => '?').join(', ')})`).run(...keys.map((k) => row[k]));
        counts[table] = (counts[table] ?? 0) + 1;
      }
    }
    return { counts, skipped: [...skipped] };
  }).immediate();
}
