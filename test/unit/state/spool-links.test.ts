import { existsSync, mkdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Spool } from '../../../src/state/spool.ts';
import { tempDirs } from '../../helpers/tmp.ts';

// <data>/spool belongs to the service user once a start as root has handed it over, and the next start as root
// clears the spool's unfinished files (spool/tmp) before the drop: a link there had root remove every file in any
// folder it named (/root/.ssh, /etc/ssl/private, ...).
const tmp = tempDirs('makewaves-spool-links-');
const fs = createRequire(import.meta.url)('node:fs') as typeof import('node:fs');
const realReaddir = fs.readdirSync;
afterEach(() => {
  Object.assign(fs, { readdirSync: realReaddir });
  syncBuiltinESMExports();
});

describe('the spool at start', () => {
  for (const at of ['spool', 'spool/tmp', 'spool/q']) {
    it(`refuses a link at ${at} and removes nothing in the folder it names`, () => {
      const data = tmp();
      const elsewhere = path.join(data, 'elsewhere');
      mkdirSync(elsewhere);
      writeFileSync(path.join(elsewhere, 'precious'), 'keep me\n');
      if (at !== 'spool') mkdirSync(path.join(data, 'spool'));
      // A link to a folder that looks like a spool (tmp and q inside), so only the link can be the reason of a refusal.
      if (at === 'spool') {
        mkdirSync(path.join(elsewhere, 'tmp'));
        mkdirSync(path.join(elsewhere, 'q'));
        writeFileSync(path.join(elsewhere, 'tmp', 'precious'), 'keep me\n');
      }
      symlinkSync(elsewhere, path.join(data, at));
      expect(() => new Spool(path.join(data, 'spool')).init()).toThrow(/symbolic link/);
      expect(existsSync(path.join(elsewhere, 'precious'))).toBe(true);
      if (at === 'spool') expect(existsSync(path.join(elsewhere, 'tmp', 'precious'))).toBe(true);
    });
  }

  it('clears unfinished files of a spool of real folders, as before', () => {
    const data = tmp();
    const spool = new Spool(path.join(data, 'spool'));
    expect(spool.init()).toBe(0);
    writeFileSync(path.join(data, 'spool', 'tmp', 'half'), 'unfinished');
    expect(spool.init()).toBe(1);
    expect(existsSync(path.join(data, 'spool', 'tmp', 'half'))).toBe(false);
  });

  it('removes nothing in a folder a link names when spool/tmp is swapped for one after it was checked', () => {
    const data = tmp();
    const spool = new Spool(path.join(data, 'spool'));
    spool.init();
    const elsewhere = path.join(data, 'elsewhere');
    mkdirSync(elsewhere);
    writeFileSync(path.join(elsewhere, 'precious'), 'keep me\n');
    const tmpDir = path.join(data, 'spool', 'tmp');
    // The service user's move, made as the unfinished files are about to be listed (after makeDir checked every folder).
    let swapped = false;
    Object.assign(fs, {
      readdirSync: (...args: Parameters<typeof realReaddir>) => {
        if (!swapped) {
          swapped = true;
          renameSync(tmpDir, `${tmpDir}.old`);
          symlinkSync(elsewhere, tmpDir);
        }
        return (realReaddir as (...a: unknown[]) => unknown)(...args);
      },
    });
    syncBuiltinESMExports();
    try {
      spool.init();
    } catch {
      // A refusal is as good: what matters is the folder the link names.
    }
    expect(swapped).toBe(true);
    expect(existsSync(path.join(elsewhere, 'precious'))).toBe(true);
  });
});
