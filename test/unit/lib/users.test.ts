import { lstatSync, mkdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { giveTree } from '../../../src/lib/users.ts';
import { tempDirs } from '../../helpers/tmp.ts';

// Ownership can only be given away as root (CI runs as root); elsewhere these tests are skipped.
const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;
const tmp = tempDirs('makewaves-givetree-');

describe.skipIf(!isRoot)('giveTree (as root)', () => {
  it('gives a data folder the operator placed by a link (the folder it names, not the link), and all below it', () => {
    const dir = tmp();
    const real = path.join(dir, 'real');
    mkdirSync(path.join(real, 'spool'), { recursive: true });
    writeFileSync(path.join(real, 'makewaves.db'), '');
    const data = path.join(dir, 'data');
    symlinkSync(real, data);
    giveTree(data, NOBODY, NOBODY);
    // The service user creates files in <data> itself after the drop (the run folder, SQLite's -wal and -shm).
    expect(statSync(real).uid).toBe(NOBODY);
    expect(statSync(path.join(real, 'spool')).uid).toBe(NOBODY);
    expect(statSync(path.join(real, 'makewaves.db')).uid).toBe(NOBODY);
    expect(lstatSync(data).uid).toBe(0);
  });

  it('follows no link below the folder: a link is given itself, never what it names', () => {
    const dir = tmp();
    const data = path.join(dir, 'data');
    const outside = path.join(dir, 'outside');
    mkdirSync(data);
    mkdirSync(outside);
    writeFileSync(path.join(outside, 'secret'), '');
    symlinkSync(outside, path.join(data, 'sftp'));
    symlinkSync(path.join(outside, 'secret'), path.join(data, 'token'));
    giveTree(data, NOBODY, NOBODY);
    expect(statSync(outside).uid).toBe(0);
    expect(statSync(path.join(outside, 'secret')).uid).toBe(0);
    expect(lstatSync(path.join(data, 'sftp')).uid).toBe(NOBODY);
  });
});
