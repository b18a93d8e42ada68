import { mkdirSync, readFileSync, symlinkSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boxMissing, call, startCgiSuite, type CgiTestSuite } from '../../helpers/cgi.ts';
import { waitFor } from '../../helpers/suite.ts';

// One rule for HTTP, FTP and handlers (src/lib/jail.ts): a symbolic link in
// a web root is followed only when its real target is inside that root.
// Handlers run under Node's permission model, which follows any link in a
// granted folder; the suite grants around the links that lead out.

const fixture = (name: string) => readFileSync(path.join(import.meta.dirname, '../../fixtures/cgi', name));
let s: CgiTestSuite;

beforeAll(async () => {
  s = await startCgiSuite({
    tenants: {
      'evil.test': { domains: ['evil.test'], cgi: true },
      'victim.test': { domains: ['victim.test'] },
    },
    files: {
      'evil.test/cgi-bin/read.js': fixture('read.js'),
      'evil.test/index.html': 'own page',
      'evil.test/sub/page.html': 'own sub page',
      'evil.test/sub/deeper/leaf.html': 'own leaf',
      'victim.test/secret.txt': 'victim secret',
    },
  });
  const root = path.join(s.sitesDir, 'evil.test');
  const link = (target: string, at: string) => symlinkSync(target, path.join(root, at));
  link('/etc/passwd', 'passwd');
  link('../victim.test/secret.txt', 'neighbour.txt');
  link(path.join(s.sitesDir, 'victim.test'), 'victim');
  link('/etc', 'etc');
  link('chain2', 'chain1');
  link('/etc/passwd', 'chain2');
  link('/nonexistent-makewaves-target', 'dangling');
  link('..', 'sub/up');
  link('index.html', 'inside.html');
  link('sub/deeper', 'deep');
  mkdirSync(path.join(root, 'sub/deeper/more'));
  link('../../../../victim.test/secret.txt', 'sub/deeper/more/far.txt');
});
afterAll(async () => {
  await s?.stop();
});

async function handlerRead(p: string): Promise<{ ok: boolean; value?: string; code?: string }> {
  const res = await call(s.http, 'evil.test', `/cgi-bin/read?p=${encodeURIComponent(p)}`);
  expect(res.status).toBe(200);
  return (await res.json()) as { ok: boolean; value?: string; code?: string };
}

describe.skipIf(boxMissing)('links in a web root: handlers follow the rule HTTP follows', () => {
  it.each([
    ['absolute link to /etc/passwd', 'passwd'],
    ["relative link to another tenant's file", 'neighbour.txt'],
    ["link to another tenant's folder", 'victim/secret.txt'],
    ['link to a system folder', 'etc/hostname'],
    ['a chain of links that ends outside', 'chain1'],
    ['a link deeper in the tree', 'sub/deeper/more/far.txt'],
  ])('refuses %s, as HTTP does', async (_name, p) => {
    const viaHandler = await handlerRead(p);
    expect(viaHandler.ok).toBe(false);
    expect(viaHandler.code).toBe('ERR_ACCESS_DENIED');
    expect((await call(s.http, 'evil.test', `/${p}`)).status).toBeGreaterThanOrEqual(400);
  });

  it('reads nothing through a dangling link or through "sub/up/.." (a link to a folder above it)', async () => {
    expect((await handlerRead('dangling')).ok).toBe(false);
    expect(await handlerRead('sub/up/../victim.test/secret.txt')).toMatchObject({ ok: false });
  });

  it.each([
    ['a plain file', 'index.html', 'own page'],
    ['a link to a file inside the root', 'inside.html', 'own page'],
    ['a link to a folder inside, deeper than the link', 'deep/leaf.html', 'own leaf'],
    ['a file beside a refused link', 'sub/page.html', 'own sub page'],
  ])('reads %s, as HTTP serves it', async (_name, p, text) => {
    expect(await handlerRead(p)).toEqual({ ok: true, value: text });
    const res = await call(s.http, 'evil.test', `/${p}`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(text);
  });

  it('names the refused links in the log', () => {
    const line = s.logs().find((l) => l.msg === 'links that lead out of the site are not readable by its handlers');
    expect(line).toMatchObject({ tenant: 'evil.test' });
    expect([...(line!.links as string[])].sort()).toEqual(['chain1', 'chain2', 'dangling', 'etc', 'neighbour.txt', 'passwd', 'sub/deeper/more/far.txt', 'sub/up', 'victim'].sort());
  });

  it('sees a link added while the suite runs, within a second', async () => {
    const at = path.join(s.sitesDir, 'evil.test', 'late');
    symlinkSync('/etc/hostname', at);
    try {
      await waitFor(async () => (await handlerRead('late')).code === 'ERR_ACCESS_DENIED', 3_000, 'the late link refused');
    } finally {
      unlinkSync(at);
    }
  });
});
