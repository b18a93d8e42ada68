import { chmodSync, chownSync, lstatSync, mkdirSync, renameSync, statSync, symlinkSync, writeFileSync, type Stats } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tightenTree } from '../../../src/lib/modes.ts';
import { giveTree } from '../../../src/lib/users.ts';
import { tempDirs } from '../../helpers/tmp.ts';

// A start as root tightens and then hands over <data>, which the service user owns (and tenants own their scratch
// folders below it): either may swap a name for a link while root walks there. The swap is made at the moment it
// matters, right after root has looked at the name (or read the folder above it).
const tmp = tempDirs('makewaves-tree-races-');
const fs = createRequire(import.meta.url)('node:fs') as typeof import('node:fs');
const real = { lstatSync: fs.lstatSync, fstatSync: fs.fstatSync, readdirSync: fs.readdirSync };
afterEach(() => {
  Object.assign(fs, real);
  syncBuiltinESMExports();
});

/** Calls `swap` once, right after the first lstat or fstat that saw the inode `ino` (by name or on an open file). */
function afterLookingAt(ino: number, swap: () => void): () => boolean {
  let done = false;
  const once = <T,>(st: T): T => {
    if (!done && (st as Stats | undefined)?.ino === ino) {
      done = true;
      swap();
    }
    return st;
  };
  Object.assign(fs, {
    lstatSync: (...args: Parameters<typeof fs.lstatSync>) => once(real.lstatSync(...args)),
    fstatSync: (...args: Parameters<typeof fs.fstatSync>) => once(real.fstatSync(...args)),
  });
  syncBuiltinESMExports();
  return () => done;
}

/** Calls `swap` once, right after the first folder is read. */
function afterFirstReaddir(swap: () => void): () => boolean {
  let done = false;
  fs.readdirSync = ((...args: Parameters<typeof fs.readdirSync>) => {
    const r = (real.readdirSync as (...a: unknown[]) => unknown)(...args);
    if (!done) {
      done = true;
      swap();
    }
    return r;
  }) as typeof fs.readdirSync;
  syncBuiltinESMExports();
  return () => done;
}

const SERVICE = 40_321;
const root = process.getuid?.() === 0;
describe.skipIf(!root)(root ? 'tightenTree and giveTree: a name swapped for a link mid-walk' : 'tightenTree and giveTree (skipped: needs root)', () => {
  it('tightenTree never chmods through a link swapped in after the lstat: a setuid mode of the service user\'s file does not land on root\'s', () => {
    const dir = tmp();
    const data = path.join(dir, 'data');
    mkdirSync(data);
    chownSync(data, SERVICE, SERVICE);
    const victim = path.join(dir, 'root-program');
    writeFileSync(victim, '#!/bin/sh\n', { mode: 0o700 });
    chmodSync(victim, 0o700);
    const bait = path.join(data, 'bait');
    writeFileSync(bait, '');
    chownSync(bait, SERVICE, SERVICE);
    chmodSync(bait, 0o4777);
    const swapped = afterLookingAt(lstatSync(bait).ino, () => {
      renameSync(bait, path.join(data, 'bait.old'));
      symlinkSync(victim, bait);
    });
    tightenTree(data);
    expect(swapped()).toBe(true);
    expect((statSync(victim).mode & 0o7777).toString(8)).toBe('700');
    // The file it looked at is tightened, wherever its name went.
    expect((statSync(path.join(data, 'bait.old')).mode & 0o7777).toString(8)).toBe('4751');
  });

  it('tightenTree never walks into a folder through a link swapped in after the folder above was read', () => {
    const dir = tmp();
    const data = path.join(dir, 'data');
    const sub = path.join(data, 'logs');
    mkdirSync(sub, { recursive: true });
    const victimDir = path.join(dir, 'etc');
    mkdirSync(victimDir);
    const victim = path.join(victimDir, 'passwd');
    writeFileSync(victim, 'root:x:0:0::/root:/bin/sh\n');
    chmodSync(victim, 0o644);
    const swapped = afterFirstReaddir(() => {
      renameSync(sub, `${sub}.old`);
      symlinkSync(victimDir, sub);
    });
    tightenTree(data);
    expect(swapped()).toBe(true);
    expect((statSync(victim).mode & 0o7777).toString(8)).toBe('644');
  });

  it('giveTree never gives what is in a folder reached through a link swapped in after the folder above was read', () => {
    const dir = tmp();
    const data = path.join(dir, 'data');
    const sub = path.join(data, 'spool');
    mkdirSync(sub, { recursive: true });
    const victimDir = path.join(dir, 'etc');
    mkdirSync(victimDir);
    const victim = path.join(victimDir, 'shadow');
    writeFileSync(victim, 'root:*:1::::::\n', { mode: 0o600 });
    const swapped = afterFirstReaddir(() => {
      renameSync(sub, `${sub}.old`);
      symlinkSync(victimDir, sub);
    });
    giveTree(data, SERVICE, SERVICE);
    expect(swapped()).toBe(true);
    expect(statSync(victim).uid).toBe(0);
    expect(statSync(victimDir).uid).toBe(0);
    // The link put in its place is given itself, as any link below <data>.
    expect(lstatSync(sub).uid).toBe(SERVICE);
  });
});
