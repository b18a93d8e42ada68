import { closeSync, constants, fchmodSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, readSync, type Stats } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';

export type Db = Database.Database;

/** The first 16 bytes of every SQLite database file. */
const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');

/**
 * One schema change. Each state module owns its migrations; ids are unique
 * across the suite (`<module>-<n>`), applied once, in the order given, and
 * recorded in `schema_migrations`. Append only: never edit one that shipped.
 */
export interface Migration {
  readonly id: string;
  readonly sql: string;
}

/**
 * Opens (creating if needed) `<dataDir>/makewaves.db` in WAL mode and
 * applies pending migrations. The database is 0600 whatever the umask, and
 * so are its `-wal` and `-shm` (SQLite gives them the database's mode).
 */
export function openDb(dataDir: string, migrations: readonly Migration[]): Db {
  // Made here only when no server started before (a CLI command): passable, never listable.
  mkdirSync(dataDir, { recursive: true, mode: 0o711 });
  const file = path.join(dataDir, 'makewaves.db');
  let fd: number;
  try {
    // O_NOFOLLOW: <data> is the service user's once a start as root has handed it over, and a start as root opens this
    // first; a link there would have root change (and SQLite write) whatever file it points to.
    fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND | constants.O_NOFOLLOW, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new Error(`${file} is a symbolic link; refused (move it away and restart)`);
    throw err;
  }
  let db: Db;
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.nlink !== 1) throw new Error(`${file} is not a regular file of one name; refused`);
    if (st.mode & 0o077) fchmodSync(fd, 0o600);
    // SQLite opens its -wal, -shm and -journal beside it refusing a link; these are refused here to say why.
    for (const side of ['-wal', '-shm', '-journal']) {
      if (lstatSync(`${file}${side}`, { throwIfNoEntry: false })?.isSymbolicLink()) throw new Error(`${file}${side} is a symbolic link; refused (move it away and restart)`);
    }
    // SQLite opens the database by its name and follows a link there: the name may have been swapped for one since it
    // was checked above (the handler launcher, root for good, opens this at each reload the server asks for). It must
    // have opened the very file checked (kept open meanwhile), never made one (fileMustExist: no file where a link points).
    // SQLite may also take no new descriptor at all: a file this process has opened before (another connection to it)
    // can hand over a descriptor it parked, one it opened on that very file.
    const before = openFds();
    db = new Database(file, { fileMustExist: true });
    const sides = ['-wal', '-shm', '-journal'].map((side) => lstatSync(`${file}${side}`, { throwIfNoEntry: false }));
    const elsewhere = [...openFds()]
      .filter((n) => !before.has(n))
      .some((n) => {
        let o: Stats;
        try {
          o = fstatSync(n);
        } catch {
          // Closed meanwhile (another thread's file): not SQLite's.
          return false;
        }
        const is = (x: Stats | undefined) => x !== undefined && o.dev === x.dev && o.ino === x.ino;
        if (!o.isFile() || is(st) || sides.some(is)) return false;
        // Another file: SQLite's only if it is a database or empty (what SQLite would make one of); the thread pool
        // may have opened some other file meanwhile.
        const head = Buffer.alloc(16);
        return o.size === 0 || (readSync(n, head, 0, 16, 0) === 16 && head.equals(SQLITE_HEADER));
      });
    if (elsewhere) {
      db.close();
      throw new Error(`${file} was replaced while it was opened; refused (look for a symbolic link there, move it away and restart)`);
    }
  } finally {
    closeSync(fd);
  }
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  db.pragma('foreign_keys = ON');
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at TEXT NOT NULL)`);
  const done = new Set((db.prepare('SELECT id FROM schema_migrations').all() as { id: string }[]).map((r) => r.id));
  const record = db.prepare(`INSERT INTO schema_migrations (id, applied_at) VALUES (?, datetime('now'))`);
  const applied = db.prepare('SELECT 1 FROM schema_migrations WHERE id = ?');
  for (const m of migrations) {
    if (done.has(m.id)) continue;
    // Checked again under the write lock (IMMEDIATE): another process opening the same file at the same
    // time (the handler launcher starts beside the server) may have applied it since it was read above.
    db.transaction(() => {
      if (applied.get(m.id)) return;
      db.exec(m.sql);
      record.run(m.id);
    }).immediate();
  }
  return db;
}

/** The file descriptors this process has open now (not the one that listed them, closed by then). */
function openFds(): Set<number> {
  return new Set(
    readdirSync('/proc/self/fd')
      .map(Number)
      .filter((n) => {
        try {
          fstatSync(n);
          return true;
        } catch {
          // EBADF: the listing's own, closed since.
          return false;
        }
      }),
  );
}
