import { chownSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openState } from '../../../src/state/index.ts';
import { tempDirs } from '../../helpers/tmp.ts';

const tmp = tempDirs('makewaves-dkim-links-');
const fs = createRequire(import.meta.url)('node:fs') as typeof import('node:fs');
const realFsync = fs.fsyncSync;
afterEach(() => {
  fs.fsyncSync = realFsync;
  syncBuiltinESMExports();
});

const root = process.getuid?.() === 0;
// The operator's `makewaves dkim` runs as root on a <data> that belongs to the service user, who can change what
// is in it while root works there.
describe.skipIf(!root)(root ? 'DKIM keys made by root in the service user’s <data>' : 'DKIM keys made by root (skipped: needs root)', () => {
  it('are handed to the owner of <data> on what was written, never through a link swapped in meanwhile', async () => {
    const data = tmp();
    const outside = mkdtempSync(path.join(os.tmpdir(), 'makewaves-victim-'));
    try {
      const victim = path.join(outside, 'root-only');
      writeFileSync(victim, 'root only\n', { mode: 0o600 });
      const serviceUid = 40_123;
      chownSync(data, serviceUid, serviceUid);
      const folder = path.join(data, 'dkim', 'a.test');
      // The service user's move, made at the first sync after a key has its name: the key becomes a link to a file of root's.
      let swapped = '';
      fs.fsyncSync = (fd) => {
        realFsync(fd);
        const key = swapped ? undefined : readdirSync(folder, { withFileTypes: true }).find((e) => e.isFile() && e.name.endsWith('.key'));
        if (!key) return;
        swapped = path.join(folder, key.name);
        unlinkSync(swapped);
        symlinkSync(victim, swapped);
      };
      syncBuiltinESMExports();
      const s = openState(data);
      try {
        await s.dkim.ensure('a.test').catch(() => undefined);
      } finally {
        s.close();
      }
      expect(swapped).not.toBe('');
      expect(statSync(victim).uid).toBe(0);
      expect(statSync(victim).gid).toBe(0);
      // What was not swapped is the owner's, made so on the open file.
      const keys = readdirSync(folder).filter((n) => n.endsWith('.key') && path.join(folder, n) !== swapped);
      expect(keys.length).toBeGreaterThan(0);
      for (const n of keys) expect(statSync(path.join(folder, n)).uid).toBe(serviceUid);
      expect(statSync(folder).uid).toBe(serviceUid);
      expect(statSync(path.join(data, 'dkim')).uid).toBe(serviceUid);
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });
});
