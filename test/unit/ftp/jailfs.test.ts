import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FtpError, JailFileSystem, TEMP_PREFIX } from '../../../src/ftp/jailfs.ts';
import { TenantUsage, scanUsage } from '../../../src/ftp/usage.ts';

const silent = pino({ level: 'silent' });
let dir: string;
let root: string;
let sibling: string;

function fsFor(quota?: number): JailFileSystem {
  return new JailFileSystem(root, new TenantUsage(quota), silent);
}

beforeAll(() => {
  dir = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'mw-jail-')));
  root = path.join(dir, 'sites', 'a.test');
  sibling = path.join(dir, 'sites', 'a.test2');
  mkdirSync(path.join(root, 'dir'), { recursive: true });
  mkdirSync(sibling, { recursive: true });
  writeFileSync(path.join(root, 'dir', 'file.txt'), 'inside');
  writeFileSync(path.join(root, 'index.html'), 'home');
  writeFileSync(path.join(sibling, 'secret.txt'), 'secret');
  symlinkSync('/etc', path.join(root, 'out-etc'));
  symlinkSync('/', path.join(root, 'out-root'));
  symlinkSync('../a.test2', path.join(root, 'out-sibling'));
  symlinkSync('../a.test2/secret.txt', path.join(root, 'out-sibling-file'));
  symlinkSync('/nonexistent/elsewhere', path.join(root, 'dangling-out'));
  symlinkSync('../../a.test2', path.join(root, 'dir', 'up'));
  symlinkSync('dir', path.join(root, 'in-link'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function refusal(p: Promise<unknown>): Promise<FtpError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected a refusal').toBeInstanceOf(FtpError);
  const e = err as FtpError;
  expect([550, 553]).toContain(e.code);
  // Never a host path in what the client reads.
  expect(e.message).not.toContain(dir);
  return e;
}

const HOSTILE = [
  '..',
  '/..',
  '../a.test2/secret.txt',
  '/../a.test2/secret.txt',
  'dir/../../a.test2/secret.txt',
  '/dir/../../../etc/passwd',
  'a\\..\\..\\etc',
  'x\0y',
  '.hidden',
  `${TEMP_PREFIX}0123`,
  'dir/.htaccess',
  'out-etc/passwd',
  'out-etc',
  'out-root/etc/passwd',
  'out-sibling/secret.txt',
  'out-sibling',
  'out-sibling-file',
  'dangling-out',
  'dir/up/secret.txt',
  'dir/up',
  'a'.repeat(300),
  'x/'.repeat(600),
];

describe('JailFileSystem: hostile paths are refused for every operation', () => {
  for (const p of HOSTILE) {
    it(`refuses ${JSON.stringify(p.length > 40 ? `${p.slice(0, 20)}…(${p.length})` : p)}`, async () => {
      const fs = fsFor();
      await refusal(fs.get(p));
      await refusal(fs.read(p));
      await refusal(fs.chdir(p));
      await refusal(fs.delete(p));
      await refusal(fs.rename(p, 'renamed'));
      await refusal(fs.rename('index.html', p));
      await refusal(fs.startUpload(p));
      await refusal(fs.startUpload(`${p}/x`));
      await refusal(fs.mkdir(`${p}/newdir`));
      if (!p.startsWith('out-') && p !== 'dir/up' && p !== 'dangling-out') await refusal(fs.list(p));
      expect(fs.currentDirectory()).toBe('/');
    });
  }

  it('listings leave out hidden names and links that leave the root, and show links inside', async () => {
    const fs = fsFor();
    const names = (await fs.list('/')).map((e) => e.name);
    expect(names).toEqual(['dir', 'in-link', 'index.html']);
    expect((await fs.list('dir')).map((e) => e.name)).toEqual(['file.txt']);
    // A folder reached through an escaping link cannot be listed.
    await refusal(fs.list('out-etc'));
    await refusal(fs.list('out-sibling'));
  });

  it('nothing outside the root was written, renamed or removed', () => {
    expect(readdirSync(sibling)).toEqual(['secret.txt']);
    expect(readFileSync(path.join(sibling, 'secret.txt'), 'utf8')).toBe('secret');
    expect(existsSync(path.join(dir, 'sites', 'renamed'))).toBe(false);
    expect(readdirSync(path.join(dir, 'sites')).sort()).toEqual(['a.test', 'a.test2']);
  });

  it('`%2e%2e` is a literal name in FTP (no decoding), so it stays inside the root', async () => {
    const fs = fsFor();
    const e = await refusal(fs.get('%2e%2e/a.test2/secret.txt'));
    expect(e.message).toMatch(/no such/);
    const up = await fs.startUpload('%2e%2e');
    await writeFile(up.temp, 'x');
    await fs.commitUpload(up);
    expect(readFileSync(path.join(root, '%2e%2e'), 'utf8')).toBe('x');
    await fs.delete('%2e%2e');
  });
});

describe('JailFileSystem: normal use', () => {
  it('resolves relative paths against the working folder and follows links inside the root', async () => {
    const fs = fsFor();
    expect(await fs.chdir('dir')).toBe('/dir');
    expect((await fs.get('file.txt')).size).toBe(6);
    expect(await fs.chdir('..')).toBe('/');
    expect(await fs.chdir('/in-link')).toBe('/in-link');
    const { stream, clientPath } = await fs.read('file.txt');
    stream.destroy();
    expect(clientPath).toBe('/in-link/file.txt');
    // `..` above the root is refused, not clamped.
    await fs.chdir('/');
    await refusal(fs.chdir('..'));
  });

  it('an upload goes to a hidden temporary beside the target and replaces it in one rename', async () => {
    const fs = fsFor();
    const up = await fs.startUpload('/dir/file.txt');
    expect(path.dirname(up.temp)).toBe(path.join(root, 'dir'));
    expect(path.basename(up.temp).startsWith('.')).toBe(true);
    await writeFile(up.temp, 'replaced');
    expect(readFileSync(path.join(root, 'dir', 'file.txt'), 'utf8')).toBe('inside');
    await fs.commitUpload(up);
    expect(readFileSync(path.join(root, 'dir', 'file.txt'), 'utf8')).toBe('replaced');
    const aborted = await fs.startUpload('/dir/file.txt');
    await writeFile(aborted.temp, 'half');
    await fs.abortUpload(aborted, 4);
    expect(readFileSync(path.join(root, 'dir', 'file.txt'), 'utf8')).toBe('replaced');
    expect(readdirSync(path.join(root, 'dir'))).toEqual(['file.txt', 'up']);
  });

  it('commits in place (small uploads) and through the pool alike: the old file is replaced, its bytes leave the quota, a link is replaced, not its target', async () => {
    for (const inPlace of [true, false]) {
      const usage = new TenantUsage(undefined);
      const fs = new JailFileSystem(root, usage, silent);
      writeFileSync(path.join(root, 'c.txt'), 'old bytes'); // 9
      writeFileSync(path.join(root, 'c-target.txt'), 'target');
      symlinkSync('c-target.txt', path.join(root, 'c-link'));
      usage.used = 100;
      const up = await fs.startUpload('c.txt');
      await writeFile(up.temp, 'new');
      usage.used += 3;
      const fds = () => readdirSync('/proc/self/fd').length;
      const before = fds();
      await fs.commitUpload(up, inPlace);
      expect(readFileSync(path.join(root, 'c.txt'), 'utf8')).toBe('new');
      // The old file, held open across the rename, is closed soon after (in the thread pool).
      for (let i = 0; i < 200 && fds() > before; i++) await new Promise((r) => setTimeout(r, 5));
      expect(fds()).toBe(before);
      expect(usage.used).toBe(100 + 3 - 9);
      const viaLink = await fs.startUpload('c-link');
      await writeFile(viaLink.temp, 'file now');
      await fs.commitUpload(viaLink, inPlace);
      expect(readFileSync(path.join(root, 'c-link'), 'utf8')).toBe('file now');
      expect(readFileSync(path.join(root, 'c-target.txt'), 'utf8')).toBe('target');
      expect(readdirSync(root).filter((n) => n.startsWith(TEMP_PREFIX))).toEqual([]);
      for (const n of ['c.txt', 'c-target.txt', 'c-link']) rmSync(path.join(root, n));
    }
  });

  it('APPE and REST keep the old bytes in the temporary; REST past the end is refused', async () => {
    const fs = fsFor();
    writeFileSync(path.join(root, 'r.txt'), '0123456789');
    const app = await fs.startUpload('r.txt', { append: true });
    expect(app.prefix).toBe(10);
    expect(readFileSync(app.temp, 'utf8')).toBe('0123456789');
    await fs.abortUpload(app, 0);
    const rest = await fs.startUpload('r.txt', { start: 4 });
    expect(readFileSync(rest.temp, 'utf8')).toBe('0123');
    await fs.abortUpload(rest, 0);
    const e = await fs.startUpload('r.txt', { start: 11 }).catch((x: FtpError) => x);
    expect(e).toBeInstanceOf(FtpError);
    expect((e as FtpError).code).toBe(554);
    await fs.delete('r.txt');
  });

  it('APPE costs nothing extra at start; a tenant already over its quota (lowered) cannot start an upload', async () => {
    const used = await scanUsage(root);
    const fs = fsFor(used + 15);
    fs.usage.used = used;
    writeFileSync(path.join(root, 'q.txt'), '0123456789');
    fs.usage.used += 10;
    const app = await fs.startUpload('q.txt', { append: true });
    expect(fs.usage.used).toBe(used + 20); // the copy is on disk while the upload runs
    expect(fs.usage.fits(5, app.oldSize)).toBe(true); // after the rename: used + 15
    expect(fs.usage.fits(6, app.oldSize)).toBe(false);
    await fs.abortUpload(app, 0);
    expect(fs.usage.used).toBe(used + 10);
    fs.usage.quota = used + 5;
    const e = await fs.startUpload('new.txt').catch((x: FtpError) => x);
    expect((e as FtpError).code).toBe(552);
    await fs.delete('q.txt');
    expect(fs.usage.used).toBe(used);
  });

  it('SITE CHMOD has nothing to call', () => {
    expect(() => fsFor().chmod()).toThrow(FtpError);
  });
});

describe('scanUsage', () => {
  it('sums regular files without following links, and removes leftover upload temporaries when asked', async () => {
    const base = mkdtempSync(path.join(os.tmpdir(), 'mw-scan-'));
    try {
      mkdirSync(path.join(base, 'd'));
      writeFileSync(path.join(base, 'a'), '12345');
      writeFileSync(path.join(base, 'd', 'b'), '123');
      writeFileSync(path.join(base, 'd', `${TEMP_PREFIX}dead`), '1234567');
      symlinkSync('/etc/passwd', path.join(base, 'link'));
      expect(await scanUsage(base)).toBe(15);
      expect(await scanUsage(base, { removeTemps: TEMP_PREFIX })).toBe(8);
      expect(readdirSync(path.join(base, 'd'))).toEqual(['b']);
      expect(await scanUsage(path.join(base, 'missing'))).toBe(0);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
