import { cpSync, mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../../src/core/config/load.ts';
import { restartOnlyChanges } from '../../../src/core/config/restart.ts';
import { Registry } from '../../../src/core/registry.ts';
import { tenantSchema } from '../../../src/core/config/schema.ts';
import { parseSize } from '../../../src/lib/sizes.ts';
import { parseListen } from '../../../src/lib/listen.ts';
import { isLoopbackAddress, normalizeHost } from '../../../src/lib/hostname.ts';

const FIXTURE = path.join(import.meta.dirname, '../../fixtures/config');
const MAIN = `hostname: mx.test\ndata: ../data\nsites: ../sites\nhttp:\n  listen: ["127.0.0.1:0"]\n  userdir: members.test\n`;

let dir: string;
function write(files: Record<string, string>): string {
  for (const [rel, text] of Object.entries(files)) {
    const f = path.join(dir, 'config', rel);
    mkdirSync(path.dirname(f), { recursive: true });
    writeFileSync(f, text);
  }
  return path.join(dir, 'config');
}
function problems(files: Record<string, string>): string[] {
  try {
    loadConfig(write(files));
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  return [];
}

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'cfg-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('loadConfig', () => {
  it('loads a config like the bundled example (a copy in test/fixtures, never the operator\'s config/)', () => {
    cpSync(FIXTURE, path.join(dir, 'config'), { recursive: true });
    const c = loadConfig(path.join(dir, 'config'));
    expect(c.tenants.map((t) => t.id)).toEqual(['club.test', 'example.test', 'shop.test']);
    expect(c.tenants.find((t) => t.id === 'example.test')!.config.quota).toBe(512 * 1024);
    expect(Object.isFrozen(c.main.http)).toBe(true);
  });

  it('resolves data and sites relative to the config folder', () => {
    const c = loadConfig(write({ 'makewaves.yaml': MAIN, 'tenants/a.test.yaml': 'domains: [a.test]\n' }));
    expect(c.main.dataDir).toBe(path.join(dir, 'data'));
    expect(c.main.sitesDir).toBe(path.join(dir, 'sites'));
  });

  it('reports every problem with its file and key', () => {
    const p = problems({
      'makewaves.yaml': MAIN.replace('hostname: mx.test', 'hostname: mx..test') + 'htpp: {}\n',
      'tenants/shop.test.yaml': 'domains: [shop.test, "shop..test", Bad_Host.test]\nquota: 12 parsecs\nftp: [{ user: bob, password: plain }]\n',
      'tenants/b.test.yaml': 'domains: [b.test, SHOP.test]\n',
    });
    expect(p).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/makewaves\.yaml: hostname: "mx\.\.test" is not a valid host name/),
        expect.stringMatching(/makewaves\.yaml: htpp: unknown key/),
        expect.stringMatching(/tenants\/shop\.test\.yaml: domains\[1\]: "shop\.\.test" is not a valid host name/),
        expect.stringMatching(/tenants\/shop\.test\.yaml: domains\[2\]: "Bad_Host\.test" is not a valid host name/),
        expect.stringMatching(/tenants\/shop\.test\.yaml: quota: "12 parsecs" is not a size/),
        expect.stringMatching(/tenants\/shop\.test\.yaml: ftp\[0\]\.password: must be a hash/),
      ]),
    );
  });

  it('refuses a domain claimed by two tenants, case-insensitively', () => {
    const p = problems({
      'makewaves.yaml': MAIN,
      'tenants/a.test.yaml': 'domains: [a.test, shared.test]\n',
      'tenants/b.test.yaml': 'domains: [b.test, SHARED.test]\n',
    });
    expect(p).toEqual([expect.stringMatching(/tenants\/b\.test\.yaml: domains\[1\]: "shared\.test" is already claimed by tenant "a\.test"/)]);
  });

  it('names both files when a new tenant file claims a domain an existing one has (files load alphabetically)', () => {
    // a0.test.yaml is the new, wrong file, but sorts first: the message must not blame only the good file.
    const p = problems({
      'makewaves.yaml': MAIN,
      'tenants/shop.test.yaml': 'domains: [shop.test, www.shop.test]\n',
      'tenants/a0.test.yaml': 'domains: [a0.test, www.shop.test]\n',
    });
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/tenants\/shop\.test\.yaml: domains\[1\]: "www\.shop\.test" is already claimed by tenant "a0\.test" \(\S*tenants\/a0\.test\.yaml: domains\[1\]\)/);
  });

  it('refuses YAML syntax errors with a line number, duplicate keys, bad tenant ids and unknown keys', () => {
    const p = problems({
      'makewaves.yaml': MAIN,
      'tenants/a.test.yaml': 'domains: [a.test\n',
      'tenants/c.test.yaml': 'domains: [c.test]\ndomains: [d.test]\n',
      'tenants/Bad_Id.yaml': 'domains: [x.test]\n',
      'tenants/e.test.yaml': 'domains: [e.test]\nqouta: 1MiB\n',
    });
    expect(p).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/a\.test\.yaml: line \d+, column \d+: /),
        expect.stringMatching(/c\.test\.yaml: line 2, column 1: Map keys must be unique/),
        expect.stringMatching(/Bad_Id\.yaml: the file name must be a tenant id/),
        expect.stringMatching(/e\.test\.yaml: qouta: unknown key/),
      ]),
    );
  });

  it('refuses a tenant that claims the userdir host and a missing main file', () => {
    expect(problems({ 'makewaves.yaml': MAIN, 'tenants/a.test.yaml': 'domains: [members.test]\n' })).toEqual([
      expect.stringMatching(/a\.test\.yaml: domains: "members\.test" is the userdir host/),
    ]);
    rmSync(path.join(dir, 'config', 'makewaves.yaml'));
    expect(problems({})).toEqual([expect.stringMatching(/makewaves\.yaml: cannot be read \(ENOENT\)/)]);
  });

  it('acme: needs http.tls, an https directory and an e-mail address', () => {
    const acme = 'acme:\n  directory: https://ca.test/dir\n  email: hostmaster@isp.test\n';
    expect(problems({ 'makewaves.yaml': MAIN + acme })).toEqual([expect.stringMatching(/makewaves\.yaml: acme: needs http\.tls/)]);
    const tls = MAIN + '  tls:\n    listen: ["127.0.0.1:0"]\n';
    expect(problems({ 'makewaves.yaml': tls + acme })).toEqual([]);
    expect(problems({ 'makewaves.yaml': tls + 'acme:\n  directory: http://ca.test/dir\n  email: nobody\n' })).toEqual([
      expect.stringMatching(/acme\.directory.*https:\/\//),
      expect.stringMatching(/acme\.email/),
    ]);
  });

  it('acme.challenges: http-01 and tls-alpn-01, each once, in order of preference', () => {
    const tls = MAIN + '  tls:\n    listen: ["127.0.0.1:0"]\n';
    const acme = (c: string) => `acme:\n  directory: https://ca.test/dir\n  email: hostmaster@isp.test\n  challenges: ${c}\n`;
    expect(problems({ 'makewaves.yaml': tls + acme('[tls-alpn-01, http-01]') })).toEqual([]);
    expect(problems({ 'makewaves.yaml': tls + acme('[dns-01]') })).toEqual([expect.stringMatching(/acme\.challenges.*(http-01|tls-alpn-01)/)]);
    expect(problems({ 'makewaves.yaml': tls + acme('[http-01, http-01]') })).toEqual([expect.stringMatching(/acme\.challenges.*twice/)]);
  });

  it('panel: a valid host of its own, admins with scrypt hashes, each once', () => {
    const ok = MAIN + 'panel:\n  host: Panel.ISP.test\n';
    const loaded = loadConfig(write({ 'makewaves.yaml': ok }));
    expect(loaded.main.panel).toEqual({ host: 'panel.isp.test', admins: {}, idleMinutes: 30, limits: { forwardTargets: 10, forwards: 100, zipEntries: 10_000, formsRecipients: 20, listMembers: 1000 } });
    expect(new Registry(loaded).isPanelHost('PANEL.isp.test:8443')).toBe(true);
    expect(problems({ 'makewaves.yaml': MAIN + 'panel:\n  host: "panel..test"\n  idleMinutes: 0\n  colour: blue\n' })).toEqual([
      expect.stringMatching(/makewaves\.yaml: panel\.host: "panel\.\.test" is not a valid host name/),
      expect.stringMatching(/makewaves\.yaml: panel\.idleMinutes: /),
      expect.stringMatching(/makewaves\.yaml: panel\.colour: unknown key \(a typo\?\)/),
    ]);
    expect(problems({ 'makewaves.yaml': MAIN + 'panel:\n  host: panel.isp.test\n  admins:\n    op: secret\n' })).toEqual([
      expect.stringMatching(/makewaves\.yaml: panel\.admins\.op: must be a hash written by `makewaves hash-password`/),
    ]);
    const hash = '"$scrypt$N=16384,r=8,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U"';
    expect(loadConfig(write({ 'makewaves.yaml': MAIN + `panel:\n  host: panel.isp.test\n  admins:\n    op: ${hash}\n` })).main.panel?.admins).toEqual({ op: JSON.parse(hash) });
    expect(loadConfig(write({ 'makewaves.yaml': MAIN + 'panel:\n  host: panel.isp.test\n  admins: []\n' })).main.panel?.admins).toEqual({});
    expect(problems({ 'makewaves.yaml': MAIN + `panel:\n  host: panel.isp.test\n  admins:\n    Op@x: ${hash}\n` })).toEqual([expect.stringMatching(/panel\.admins.*no "@": that is an FTP login/)]);
    expect(problems({ 'makewaves.yaml': MAIN + `panel:\n  host: panel.isp.test\n  admins:\n    op: ${hash}\n    op: ${hash}\n` })).toEqual([expect.stringMatching(/unique/i)]);
    expect(problems({ 'makewaves.yaml': MAIN + 'panel:\n  host: members.test\n' })).toEqual([expect.stringMatching(/panel\.host: "members\.test" is also http\.userdir/)]);
    expect(problems({ 'makewaves.yaml': ok, 'tenants/a.test.yaml': 'domains: [a.test, panel.isp.test]\n' })).toEqual([
      expect.stringMatching(/a\.test\.yaml: domains: "panel\.isp\.test" is the control panel's host \(panel\.host in makewaves\.yaml\)/),
    ]);
  });
});

describe('forward names', () => {
  // A forward is written for a local part an RCPT TO can name; one SMTP always refuses (a routing character, a quote)
  // would never receive mail, whatever the panel or the CLI said when it was added.
  it.each([
    ['info%example.test', /can never receive mail: local part "info%example.test" routes elsewhere/],
    ['bob!other.test', /routes elsewhere/],
    ['a@b.test', /routes elsewhere/],
    ['x:y', /routes elsewhere/],
    ['x,y', /routes elsewhere/],
    ['"quoted"', /is read as "quoted" in an address/],
    ['back\\slash', /quote or backslash/],
    ['two words', /control or space character/],
    ['tab\there', /control or space character/],
    ['', /empty local part/],
    ['x'.repeat(65), /at most 64 characters/],
  ])('refuses %j, saying why', (local, why) => {
    const p = problems({ 'makewaves.yaml': MAIN, 'tenants/a.test.yaml': `domains: [a.test]\nmail:\n  forward:\n    ${JSON.stringify(local)}: owner@elsewhere.test\n` });
    expect(p).toEqual([expect.stringMatching(why)]);
    expect(p[0]).toMatch(/a\.test\.yaml: mail\.forward/);
  });

  it.each(['info', 'First.Last', 'sales+eu', "o'brien", 'x'.repeat(64)])('takes %j', (local) => {
    expect(problems({ 'makewaves.yaml': MAIN, 'tenants/a.test.yaml': `domains: [a.test]\nmail:\n  forward:\n    ${JSON.stringify(local)}: owner@elsewhere.test\n` })).toEqual([]);
  });
});

describe('e-mail addresses in the config', () => {
  // A domain with an empty label is no domain SMTP names; a trailing dot got mail.postmaster past the check against
  // the server's own name (a loop).
  it.each(['ops@mx.example.test.', 'ops@mx..example.test', 'ops@.example.test'])('refuses %j', (addr) => {
    const p = problems({ 'makewaves.yaml': `${MAIN}mail:\n  postmaster: ${JSON.stringify(addr)}\n`, 'tenants/a.test.yaml': 'domains: [a.test]\n' });
    expect(p).toEqual([expect.stringMatching(/mail\.postmaster: ".*" is not an e-mail address \(an empty label in its domain\)/)]);
  });
  it('takes an ordinary one', () => {
    expect(problems({ 'makewaves.yaml': `${MAIN}mail:\n  postmaster: ops@elsewhere.test\n`, 'tenants/a.test.yaml': 'domains: [a.test]\n' })).toEqual([]);
  });
});

describe('Registry', () => {
  it('finds tenants by Host: case, port and trailing dot ignored; IPv6 literals match nothing', () => {
    const reg = new Registry(loadConfig(write({ 'makewaves.yaml': MAIN, 'tenants/a.test.yaml': 'domains: [a.test, www.a.test]\n' })));
    for (const h of ['a.test', 'A.TEST', 'a.test:8080', 'a.test.', 'WWW.a.test.:80']) expect(reg.tenantForHost(h)?.id).toBe('a.test');
    for (const h of [undefined, '', 'b.test', 'a.test.evil', '[::1]:8080', 'a.test..']) expect(reg.tenantForHost(h)).toBeUndefined();
    expect(reg.isUserdirHost('Members.Test:8080')).toBe(true);
  });

  it('orders proxy routes longest prefix first and applies the nginx path rule', () => {
    const reg = new Registry(
      loadConfig(
        write({
          'makewaves.yaml': MAIN,
          'tenants/a.test.yaml': 'domains: [a.test]\nproxy:\n  - { path: /app/, to: "http://127.0.0.1:9000" }\n  - { path: /app/api/, to: "http://127.0.0.1:9001/v2/" }\n',
        }),
      ),
    );
    expect(reg.tenants.get('a.test')!.proxy).toEqual([
      { prefix: '/app/api/', origin: 'http://127.0.0.1:9001', replace: '/v2/' },
      { prefix: '/app/', origin: 'http://127.0.0.1:9000', replace: undefined },
    ]);
  });

  it('looks up 10,000 tenants', () => {
    const tenants = Array.from({ length: 10_000 }, (_, i) => ({ id: `t${i}.test`, file: '', config: tenantSchema.parse({ domains: [`t${i}.test`] }) }));
    const base = loadConfig(write({ 'makewaves.yaml': MAIN }));
    const reg = new Registry({ ...base, tenants } as never);
    expect(reg.tenantForHost('T9999.test:80')?.id).toBe('t9999.test');
    expect(reg.tenants.size).toBe(10_000);
  });
});

describe('small parsers', () => {
  it.each([
    ['512KiB', 524288],
    ['10MB', 10_000_000],
    ['1.5GiB', 1610612736],
    ['2 mib', 2097152],
    [1234, 1234],
    ['77', 77],
    ['-1', undefined],
    ['1 furlong', undefined],
    ['KiB', undefined],
    [1.5, undefined],
  ])('parseSize(%j) = %j', (input, expected) => expect(parseSize(input)).toBe(expected));

  it.each([
    ['127.0.0.1:8080', { host: '127.0.0.1', port: 8080 }],
    ['[::1]:25', { host: '::1', port: 25 }],
    [':21', { host: '0.0.0.0', port: 21 }],
    ['127.0.0.1', undefined],
    ['127.0.0.1:99999', undefined],
  ])('parseListen(%j)', (input, expected) => expect(parseListen(input)).toEqual(expected));

  it('isLoopbackAddress', () => {
    for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) expect(isLoopbackAddress(a), a).toBe(true);
    for (const a of ['192.0.2.2', '::ffff:192.0.2.2', 'fd00::2', '::', '0.0.0.0', '1127.0.0.1', '127.0.0.1.evil', '']) expect(isLoopbackAddress(a), a).toBe(false);
  });

  it('normalizeHost', () => {
    expect(normalizeHost('Example.TEST.:8080')).toBe('example.test');
    expect(normalizeHost('[::1]:80')).toBe('[::1]');
  });
});

describe('settings that need a restart', () => {
  const main = (extra: string) => loadConfig(write({ 'makewaves.yaml': MAIN + extra })).main;
  it('the panel: turning it on or off needs one; its host, upload limit and idle timeout apply at the reload', () => {
    const on = main('panel:\n  host: panel.isp.test\n');
    expect(restartOnlyChanges(main(''), on)).toEqual(['panel']);
    expect(restartOnlyChanges(on, main(''))).toEqual(['panel']);
    expect(restartOnlyChanges(on, main('panel:\n  host: cp.isp.test\n  idleMinutes: 5\n  maxUpload: 1MiB\n'))).toEqual([]);
    expect(restartOnlyChanges(on, main('panel:\n  host: panel.isp.test\nftp:\n  listen: 127.0.0.1:0\n'))).toEqual(['ftp']);
  });
});
