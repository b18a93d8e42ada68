import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boxMissing, call, startCgiSuite, type CgiTestSuite } from '../../helpers/cgi.ts';

// Outside its own web root, a handler learns nothing: every way of asking
// whether a path exists gives the same answer for a file that is there and
// for one that is not (Node's permission model leaves some of them open:
// its realpath in JavaScript and the CommonJS resolver stat paths unchecked).

const fixture = (name: string) => readFileSync(path.join(import.meta.dirname, '../../fixtures/cgi', name));
let s: CgiTestSuite;

beforeAll(async () => {
  s = await startCgiSuite({
    tenants: { 'evil.test': { domains: ['evil.test'], cgi: true }, 'victim.test': { domains: ['victim.test'] } },
    files: { 'evil.test/cgi-bin/probe.js': fixture('probe.js'), 'evil.test/here.js': 'module.exports = 1;\n', 'victim.test/secret.js': 'module.exports = 2;\n' },
  });
});
afterAll(async () => {
  await s?.stop();
});

async function probe(p: string): Promise<Record<string, string>> {
  const res = await call(s.http, 'evil.test', `/cgi-bin/probe?p=${encodeURIComponent(p)}`);
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, string>;
}

describe.skipIf(boxMissing)('a handler probing for files outside its root', () => {
  it.each([
    ['a system file', '/etc/hostname', '/etc/no-such-file-here'],
    ['a system folder', '/etc/ssl', '/etc/no-such-folder-here'],
    ["another tenant's file", 'victim.test/secret.js', 'victim.test/no-such.js'],
    ['the suite data', 'data', 'no-such-data'],
    ['a module folder', '/usr/lib/node_modules', '/usr/lib/no_such_modules'],
  ])('gets the same answers for %s that exists and one that does not', async (_name, there, missing) => {
    const abs = (p: string) => (p.startsWith('/') ? p : path.join(p.startsWith('victim') ? s.sitesDir : s.dir, p));
    const a = await probe(abs(there));
    const b = await probe(abs(missing));
    expect(Object.keys(a).length).toBeGreaterThan(20);
    expect(a).toEqual(b);
    expect(Object.values(a)).not.toContain('yes');
  });

  it('still finds what is inside its own root', async () => {
    const inside = await probe(path.join(s.sitesDir, 'evil.test/here.js'));
    expect(inside).toMatchObject({ existsSync: 'yes', realpathSync: 'yes', require: 'yes', requireResolve: 'yes', findPath: 'yes' });
  });
});
