import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDb } from '../../../src/state/db.ts';

let dir: string;
let victim: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'dblinks-'));
  victim = path.join(dir, 'victim');
  writeFileSync(victim, 'not yours\n');
  chmodSync(victim, 0o644);
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

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
});
