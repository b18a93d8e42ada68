import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootOnlyPath } from '../../../src/lib/safepath.ts';

// The root launcher's PATH (src/cgi/keeper-main.ts): only folders root alone may change, so nothing another account
// planted runs as root. Needs root to make folders of another owner.
const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('a PATH kept to folders root alone may write', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-safepath-'));
    for (const f of ['root', 'theirs', 'group', 'other', 'sticky', 'theirs-above', 'theirs-above/root']) mkdirSync(path.join(dir, f));
    chownSync(path.join(dir, 'theirs'), 65534, 65534);
    chownSync(path.join(dir, 'theirs-above'), 65534, 65534);
    chmodSync(path.join(dir, 'group'), 0o775);
    chmodSync(path.join(dir, 'other'), 0o757);
    chmodSync(path.join(dir, 'sticky'), 0o1777);
    symlinkSync(path.join(dir, 'theirs'), path.join(dir, 'link-to-theirs'));
    symlinkSync(path.join(dir, 'root'), path.join(dir, 'link-to-root'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const rows: Array<[string, (d: string) => string, boolean]> = [
    ['a root folder (the system ones)', () => '/usr/bin', true],
    ['a root folder of its own', (d) => `${d}/root`, true],
    ['a link to a root folder', (d) => `${d}/link-to-root`, true],
    ['not there, in a root folder', (d) => `${d}/root/later`, true],
    ['/tmp itself (sticky, writable by all; folders of root inside it are kept, as the rows above)', () => '/tmp', false],
    ['another account\'s folder', (d) => `${d}/theirs`, false],
    ['a link to another account\'s folder', (d) => `${d}/link-to-theirs`, false],
    ['a root folder inside another account\'s', (d) => `${d}/theirs-above/root`, false],
    ['not there, in another account\'s folder', (d) => `${d}/theirs/later`, false],
    ['group-writable', (d) => `${d}/group`, false],
    ['writable by all', (d) => `${d}/other`, false],
    ['sticky and writable by all', (d) => `${d}/sticky`, false],
    ['relative', () => 'bin', false],
    ['the working folder', () => '.', false],
    ['dot-dot', () => '../bin', false],
  ];
  it.each(rows)('%s', (_what, entry, kept) => {
    const e = entry(dir);
    const r = rootOnlyPath(`${e}:/bin`);
    expect(r.path).toBe(kept ? `${e}:/bin` : '/bin');
    expect(r.dropped).toEqual(kept ? [] : [e]);
  });

  it('skips empty entries (they would mean the working folder)', () => {
    expect(rootOnlyPath('::/usr/bin:')).toEqual({ path: '/usr/bin', dropped: [] });
  });
});
