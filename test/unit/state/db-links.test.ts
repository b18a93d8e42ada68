import { chmodSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { openDb } from '../../../src/state/db.ts';

let dir: string;
let victim: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'dblinks-'));
  victim = path.join(dir, 'victim');
  writeFileSync(victim, 'not yours\n');
  chmodSync(victim, 0o644);
});
const fs = createRequire(import.meta.url)('node:fs') as typeof import('node:fs');
const realLstat = fs.lstatSync;
afterEach(() => {
  Object.assign(fs, { lstatSync: realLstat });
  syncBuiltinESMExports();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Opens the database in `data` with the attacker's `move` made at the moment openDb looks at the -journal name (its
 * last check before SQLite opens the files); a refusal is as good as a success, what matters is where the link led.
 */
function openWithSwapAtChecks(data: string, migration: string, move: () => void): void {
  let swapped = false;
  Object.assign(fs, {
    lstatSync: (...args: Parameters<typeof realLstat>) => {
      const st = realLstat(...args);
      if (!swapped && String(args[0]).endsWith('-journal')) {
        swapped = true;
        move();
      }
      return st;
    },
  });
  syncBuiltinESMExports();
  try {
    openDb(data, [{ id: migration, sql: 'CREATE TABLE t (a TEXT)' }]).close();
  } catch {
    // A refusal is as good: what matters is the file the link names.
  }
  expect(swapped).toBe(true);
}

// <data> is the service user's once a start as root has handed it over; the next start as root opens the database first.
describe('the database file', () => {
  it.each(['makewaves.db', 'makewaves.db-wal', 'makewaves.db-shm'])('is refused, and nothing changed where it leads, when %s is a symbolic link', (name) => {
    const data = path.join(dir, 'data');
    rmSync(data, { recursive: true, force: true });
    openDb(data, []).close();
    rmSync(path.join(data, name), { force: true });
    symlinkSync(victim, path.join(data, name));
    expect(() => openDb(data, [])).toThrow(/symbolic link/);
    expect(readFileSync(victim, 'utf8')).toBe('not yours\n');
    expect(statSync(victim).mode & 0o777).toBe(0o644);
  });

  // The handler launcher, root for good, opens this file at each reload, which the server (the service user) asks for
  // at will: a link put at a name SQLite opens beside it, after it was looked at, must not lead root's writes anywhere.
  it.each(['makewaves.db-wal', 'makewaves.db-journal'])('writes nothing where a link leads when %s becomes one after the checks', (name) => {
    const data = path.join(dir, 'data');
    openDb(data, []).close();
    openWithSwapAtChecks(data, 'race-1', () => {
      rmSync(path.join(data, name), { force: true });
      symlinkSync(victim, path.join(data, name));
    });
    expect(readFileSync(victim, 'utf8')).toBe('not yours\n');
    expect(statSync(victim).mode & 0o777).toBe(0o644);
  });

  // SQLite follows a link at the database itself: swapped in after the checks, root would write the suite's tables
  // into whatever SQLite file (or empty file) it named, or make a new file where a dangling one pointed.
  it.each(['another database', 'a new file'])('writes nothing to %s a link at makewaves.db leads to, put there after the checks', (what) => {
    const data = path.join(dir, 'data');
    openDb(data, []).close();
    const target = path.join(dir, what === 'a new file' ? 'cron-job' : 'other.db');
    if (what !== 'a new file') {
      const other = new Database(target);
      other.exec('CREATE TABLE mine (x)');
      other.close();
    }
    const before = existsSync(target) ? readFileSync(target) : undefined;
    openWithSwapAtChecks(data, 'race-2', () => {
      renameSync(path.join(data, 'makewaves.db'), path.join(data, 'aside.db'));
      symlinkSync(target, path.join(data, 'makewaves.db'));
    });
    expect(existsSync(target) ? readFileSync(target) : undefined).toEqual(before);
  });

  // SQLite keeps the descriptor of a connection closed while another of this process held a lock, and hands it to the
  // next connection to that file: no new descriptor, and nothing wrong (the server and an in-process CLI command do so).
  it('opens a database this process already has open, whose file SQLite hands over a descriptor it parked', () => {
    const data = path.join(dir, 'data');
    const a = openDb(data, []);
    const b = openDb(data, []);
    b.prepare('SELECT 1').get();
    a.exec('BEGIN IMMEDIATE');
    b.close();
    a.exec('COMMIT');
    const c = openDb(data, [{ id: 'after-reuse', sql: 'CREATE TABLE t (a TEXT)' }]);
    expect(c.prepare("SELECT count(*) AS n FROM schema_migrations WHERE id = 'after-reuse'").get()).toEqual({ n: 1 });
    c.close();
    a.close();
  });
});
