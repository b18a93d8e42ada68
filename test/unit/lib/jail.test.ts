import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isInside, parseUrlPath, resolveInJail, splitSegments } from '../../../src/lib/jail.ts';

describe('parseUrlPath', () => {
  const cases: Array<[string, string[] | string]> = [
    ['/', []],
    ['/index.html', ['index.html']],
    ['/a/b/c.txt', ['a', 'b', 'c.txt']],
    ['/a/./b', ['a', 'b']],
    ['/a/../b', ['b']],
    ['/a/%2e%2e/b', ['b']],
    ['/caf%C3%A9.html', ['café.html']],
    ['/%252e%252e/x', ['%2e%2e', 'x']], // decoded once: a literal file name, not a climb
    ['/..', 'escape'],
    ['/../etc/passwd', 'escape'],
    ['/a/../../etc/passwd', 'escape'],
    ['/%2e%2e/etc/passwd', 'escape'],
    ['/%2E%2E/%2E%2E/etc', 'escape'],
    ['/.%2e/x', 'escape'],
    ['/a%2f..%2f..%2fetc', 'bad-char'],
    ['/a%2F..', 'bad-char'],
    ['/..%5c..%5cwindows', 'bad-char'],
    ['/a\\..\\b', 'bad-char'],
    ['/index.html%00.txt', 'bad-char'],
    ['/bad%zz', 'bad-encoding'],
    ['/bad%e9', 'bad-encoding'],
    ['/.htpasswd', 'hidden'],
    ['/.git/config', 'hidden'],
    ['/a/.env', 'hidden'],
    ['/a/%2eenv', 'hidden'],
    ['/.well-known/security.txt', ['.well-known', 'security.txt']],
  ];
  it.each(cases)('%s', (raw, expected) => {
    const r = parseUrlPath(raw);
    if (typeof expected === 'string') {
      expect(r).toEqual({ ok: false, refusal: expected });
    } else {
      expect(r.ok).toBe(true);
      if (r.ok) expect(r.segments).toEqual(expected);
    }
  });

  it('knows a trailing slash and whether the path was already normal', () => {
    expect(parseUrlPath('/a/b/')).toMatchObject({ ok: true, trailingSlash: true, clean: true });
    expect(parseUrlPath('/a//b')).toMatchObject({ ok: true, clean: false });
    expect(parseUrlPath('/a/./b')).toMatchObject({ ok: true, clean: false });
    expect(splitSegments('a/b')).toMatchObject({ ok: true, segments: ['a', 'b'], clean: true });
  });
});

describe('isInside', () => {
  it('does not take a sibling with the same prefix for a child', () => {
    expect(isInside('/srv/sites/a.test', '/srv/sites/a.test')).toBe(true);
    expect(isInside('/srv/sites/a.test', '/srv/sites/a.test/x')).toBe(true);
    expect(isInside('/srv/sites/a.test', '/srv/sites/a.test2/x')).toBe(false);
    expect(isInside('/srv/sites/a.test', '/srv/sites')).toBe(false);
  });
});

describe('resolveInJail', () => {
  let dir: string;
  let root: string;
  beforeAll(() => {
    dir = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'jail-')));
    root = path.join(dir, 'a.test');
    mkdirSync(path.join(root, 'sub'), { recursive: true });
    mkdirSync(path.join(dir, 'a.test2'));
    writeFileSync(path.join(root, 'sub', 'page.html'), 'inside');
    writeFileSync(path.join(dir, 'a.test2', 'secret.html'), 'sibling');
    writeFileSync(path.join(dir, 'outside.txt'), 'outside');
    symlinkSync(path.join(root, 'sub', 'page.html'), path.join(root, 'link-in.html'));
    symlinkSync(path.join(dir, 'outside.txt'), path.join(root, 'link-out.txt'));
    symlinkSync('../a.test2', path.join(root, 'sibling'));
    symlinkSync('/etc', path.join(root, 'etc'));
    symlinkSync('loop', path.join(root, 'loop'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('resolves files and folders inside the root', async () => {
    expect(await resolveInJail(root, ['sub', 'page.html'])).toEqual({ ok: true, real: path.join(root, 'sub', 'page.html') });
    expect(await resolveInJail(root, [])).toEqual({ ok: true, real: root });
  });
  it('follows a symlink that stays inside', async () => {
    expect(await resolveInJail(root, ['link-in.html'])).toEqual({ ok: true, real: path.join(root, 'sub', 'page.html') });
  });
  it.each([
    [['link-out.txt']],
    [['sibling', 'secret.html']],
    [['sibling']],
    [['etc', 'passwd']],
  ])('refuses a symlink out: %j', async (segments) => {
    expect(await resolveInJail(root, segments)).toEqual({ ok: false, reason: 'escape' });
  });
  it('calls a missing path, a file used as a folder and a symlink loop missing', async () => {
    expect(await resolveInJail(root, ['nope.html'])).toEqual({ ok: false, reason: 'missing' });
    expect(await resolveInJail(root, ['sub', 'page.html', 'x'])).toEqual({ ok: false, reason: 'missing' });
    expect(await resolveInJail(root, ['loop'])).toEqual({ ok: false, reason: 'missing' });
  });
});
