import { spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeDir, tightenTree } from '../../../src/lib/modes.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'modes-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));
const mode = (p: string) => (lstatSync(p).mode & 0o7777).toString(8);

describe('data folder modes', () => {
  it.each([
    [0o777, 0o666, '751', '640'],
    [0o755, 0o644, '751', '640'],
    [0o750, 0o640, '750', '640'],
    [0o711, 0o600, '711', '600'],
    [0o700, 0o604, '700', '600'],
  ])('a tree left %s/%s by an older version or a lax umask is tightened to %s/%s', (d, f, wantD, wantF) => {
    const sub = path.join(dir, 'data', 'logs');
    mkdirSync(sub, { recursive: true });
    writeFileSync(path.join(sub, 'access.log'), 'x');
    chmodSync(path.join(sub, 'access.log'), f);
    chmodSync(sub, d);
    tightenTree(path.join(dir, 'data'));
    expect([mode(sub), mode(path.join(sub, 'access.log'))]).toEqual([wantD, wantF]);
  });

  it('makeDir creates with the mode asked for and tightens an existing folder', () => {
    const prev = process.umask(0);
    try {
      makeDir(path.join(dir, 'new'), 0o750);
      expect(mode(path.join(dir, 'new'))).toBe('750');
      mkdirSync(path.join(dir, 'old'), { mode: 0o777 });
      makeDir(path.join(dir, 'old'), 0o750);
      expect(mode(path.join(dir, 'old'))).toBe('751');
    } finally {
      process.umask(prev);
    }
  });

  it('makeDir refuses a symbolic link where the folder goes, and changes nothing where it leads; the data folder itself may be one', () => {
    const target = path.join(dir, 'target');
    mkdirSync(target, { mode: 0o777 });
    chmodSync(target, 0o777);
    symlinkSync(target, path.join(dir, 'link'));
    expect(() => makeDir(path.join(dir, 'link'), 0o700)).toThrow(/symbolic link/);
    expect(mode(target)).toBe('777');
    makeDir(path.join(dir, 'link'), 0o750, { followLink: true });
    expect(mode(target)).toBe('751');
  });

  // The walk reaches each entry through /proc/self/fd: without /proc (a chroot, a container that mounts none) it
  // found nothing to read and changed nothing, silently, and a start as root went on with <data> as it was.
  it.skipIf(process.getuid?.() !== 0)('refuses to walk without /proc, saying so, rather than changing nothing (as root)', () => {
    const file = path.join(dir, 'lax');
    writeFileSync(file, 'x');
    chmodSync(file, 0o666);
    const script = `import('${path.resolve('src/lib/modes.ts')}').then((m) => console.log('changed', m.tightenTree(${JSON.stringify(dir)})))`;
    const r = spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs none /proc && exec "$0" --import tsx -e "$1"', process.execPath, script], { encoding: 'utf8' });
    expect(r.stdout).not.toContain('changed 0');
    expect(r.stderr).toContain('/proc');
    expect(r.status).not.toBe(0);
  });
});
