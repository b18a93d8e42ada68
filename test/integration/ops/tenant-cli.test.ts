import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { rawRequest } from '../../helpers/http.ts';
import { type MailSink, replyToRcpt, smtpPort, startSink } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

const BIN = path.resolve('bin/makewaves.js');
let t: TestSuite;
let sink: MailSink;

const A_FILE = `# Tenant A: this comment stays
domains: [a.test]   # the main domain
quota: 1MiB
mail:
  forward:
    # the boss reads info@
    info: [boss@remote.test]
`;

/** Runs the real CLI (a child process) against the test suite's config folder. */
function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args, '--config', t.configDir], { encoding: 'utf8' }, (error, out, err) => {
      resolve({ code: error ? Number(error.code ?? 1) : 0, out, err });
    });
  });
}

async function status(host: string, p = '/'): Promise<number> {
  return (await rawRequest(t.http, p, { host })).status;
}

const rcpt = (address: string) => replyToRcpt(smtpPort(t.suite), address);

beforeAll(async () => {
  sink = await startSink();
  t = await startTestSuite({
    main: { smtp: { listen: ['127.0.0.1:0'], relay: sink.url } },
    tenants: { 'a.test': { domains: ['a.test'] } },
    files: { 'a.test/index.html': 'site A', 'a.test/big.bin': Buffer.alloc(300_000) },
  });
  t.writeTenant('a.test', A_FILE);
  t.writeTenant('ftp.test', { domains: ['ftp.test'], ftp: [{ user: 'fred', password: await hashPassword('pw-fred-123') }], mail: { lists: { news: { owner: 'o@remote.test' } } } });
  expect(t.suite.reload()).toBe(true);
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

describe('makewaves tenant add', () => {
  it('writes a valid file, creates the web root with a welcome page, and the running server serves it', async () => {
    const r = await cli('tenant', 'add', 'new.test', '--domain', 'new.test', '--domain', 'WWW.new.test', '--quota', '512KiB');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^added tenant new\.test \(new\.test, www\.new\.test, quota 512KiB\)/);
    expect(readFileSync(path.join(t.configDir, 'tenants', 'new.test.yaml'), 'utf8')).toMatch(/^domains: \[new\.test, www\.new\.test\]\nquota: 512KiB\n/m);
    await waitFor(async () => (await status('www.new.test')) === 200, 5_000, 'the new tenant to be served');
    expect((await rawRequest(t.http, '/', { host: 'new.test' })).body.toString()).toContain('Welcome to new.test');
    // No temporary is left behind in the tenants folder.
    expect(readdirSync(path.join(t.configDir, 'tenants')).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it.each([
    [['tenant', 'add', 'a.test', '--domain', 'other.test'], /^makewaves: tenant "a\.test" already exists\n$/],
    [['tenant', 'add', 'c.test', '--domain', 'a.test'], /^makewaves: tenant "c\.test": domains\[0\]: "a\.test" is already claimed by tenant "a\.test"; nothing changed\n$/],
    // The clash is found on the other tenant's file when the new id sorts first; the message still names the owner.
    [['tenant', 'add', 'a0', '--domain', 'new.test'], /^makewaves: tenant "a0": "new\.test" is already claimed by tenant "new\.test"; nothing changed\n$/],
    [['tenant', 'add', 'd.test', '--domain', 'd.test', '--quota', 'lots'], /^makewaves: --quota "lots" is not a size/],
    [['tenant', 'add', 'd.test', '--domain', 'd..test'], /^makewaves: "d\.\.test" is not a valid domain name\n$/],
    [['tenant', 'add', 'D_test', '--domain', 'd.test'], /^makewaves: "D_test" is not a tenant id/],
    [['tenant', 'add', 'd.test'], /required option '-d, --domain <domain>' not specified/],
    [['tenant', 'show', 'nobody.test'], /^makewaves: no tenant "nobody\.test"/],
    [['tenant', 'suspend', 'nobody.test'], /^makewaves: no tenant "nobody\.test"/],
    [['tenant', 'resume', 'a.test'], /^makewaves: tenant "a\.test" is not suspended\n$/],
    [['tenant', 'remove', 'nobody.test', '--yes'], /^makewaves: no tenant "nobody\.test"/],
    [['tenant', 'remove', 'a.test'], /^makewaves: removing tenant "a\.test" takes its sites off line; run again with --yes/],
    [['alias', 'add', 'x@unhosted.test', 'y@remote.test'], /^makewaves: no tenant has the domain "unhosted\.test"\n$/],
    [['alias', 'add', 'not-an-address', 'y@remote.test'], /^makewaves: "not-an-address" is not an address of the form local@domain\n$/],
    [['alias', 'add', 'x@a.test', 'not-an-address'], /^makewaves: tenant "a\.test": mail\.forward\.x\[0\]: "not-an-address" is not an e-mail address; nothing changed\n$/],
    [['alias', 'add', 'info@a.test', 'boss@remote.test'], /^makewaves: info@a\.test already forwards to boss@remote\.test\n$/],
    [['alias', 'remove', 'nobody@a.test'], /^makewaves: tenant a\.test has no alias nobody\n$/],
  ])('%j: one clear line, exit 1, nothing changed', async (args, message) => {
    const before = readdirSync(path.join(t.configDir, 'tenants')).map((n) => [n, readFileSync(path.join(t.configDir, 'tenants', n), 'utf8')]);
    const sites = readdirSync(t.sitesDir).sort();
    const r = await cli(...args);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(message);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.out).toBe('');
    expect(readdirSync(path.join(t.configDir, 'tenants')).map((n) => [n, readFileSync(path.join(t.configDir, 'tenants', n), 'utf8')])).toEqual(before);
    expect(readdirSync(t.sitesDir).sort()).toEqual(sites);
  });
});

describe('makewaves tenant list and show', () => {
  it('lists domains, disk used against the quota, traffic this month, FTP users, aliases and lists', async () => {
    for (let i = 0; i < 3; i++) expect(await status('a.test')).toBe(200);
    t.suite.state.traffic.flush();
    const r = await cli('tenant', 'list');
    expect(r.code).toBe(0);
    const block = (id: string) => r.out.split(/\n(?=\S)/).find((b) => b.startsWith(`${id}\n`) || b.startsWith(`${id} `))!;
    expect(block('a.test')).toMatch(/domains {2}a\.test\n/);
    // index.html (6 bytes) + big.bin (300,000 bytes) against 1 MiB.
    expect(block('a.test')).toMatch(/disk {5}293 KiB \/ 1\.0 MiB \(29%\)\n/);
    expect(block('a.test')).toMatch(/traffic {2}3 requests, 18 B this month\n/);
    expect(block('a.test')).toMatch(/aliases {2}1 {3}lists -/);
    expect(block('ftp.test')).toMatch(/ftp {6}fred@ftp\.test\n/);
    expect(block('ftp.test')).toMatch(/disk {5}0 B \/ no quota/);
    expect(block('ftp.test')).toMatch(/lists news/);
    expect(r.out).toMatch(/\n3 tenants\n$/);
  });

  it('shows one tenant with its aliases', async () => {
    const r = await cli('tenant', 'show', 'a.test');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^tenant {3}a\.test\n/);
    expect(r.out).toContain('alias    info@a.test → boss@remote.test');
    expect(r.out).toContain(`root     ${path.join(t.sitesDir, 'a.test')}`);
  });
});

describe('makewaves tenant suspend / resume', () => {
  it('suspends (keeping the file\'s comments) and the running server answers 503; resume serves again', async () => {
    const r = await cli('tenant', 'suspend', 'a.test', '--reason', 'unpaid invoice');
    expect(r.code).toBe(0);
    const text = readFileSync(path.join(t.configDir, 'tenants', 'a.test.yaml'), 'utf8');
    expect(text).toContain('# Tenant A: this comment stays');
    expect(text).toContain('# the main domain');
    expect(text).toContain('# the boss reads info@');
    expect(text).toMatch(/^suspended: \{reason: unpaid invoice, since: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\}$/m);
    await waitFor(async () => (await status('a.test')) === 503, 5_000, 'the suspension to take effect');
    expect(await rcpt('info@a.test')).toMatch(/^450 4\.2\.1/);
    expect((await cli('tenant', 'list')).out).toMatch(/^a\.test {2}\[suspended since .*: unpaid invoice\]$/m);
    expect((await cli('tenant', 'suspend', 'a.test')).err).toBe('makewaves: tenant "a.test" is already suspended\n');

    expect((await cli('tenant', 'resume', 'a.test')).code).toBe(0);
    expect(readFileSync(path.join(t.configDir, 'tenants', 'a.test.yaml'), 'utf8')).not.toContain('suspended');
    await waitFor(async () => (await status('a.test')) === 200, 5_000, 'the resume to take effect');
  });
});

describe('makewaves alias', () => {
  it('adds a forward the running server routes at once, keeps comments, and removes it', async () => {
    expect(await rcpt('sales@a.test')).toMatch(/^550 5\.1\.1/);
    const r = await cli('alias', 'add', 'Sales@A.test', 'x@remote.test', 'y@remote.test');
    expect(r.code).toBe(0);
    expect(r.out).toBe('sales@a.test → x@remote.test, y@remote.test (tenant a.test)\n');
    const text = readFileSync(path.join(t.configDir, 'tenants', 'a.test.yaml'), 'utf8');
    expect(text).toContain('# the boss reads info@\n    info: [boss@remote.test]\n    sales: [x@remote.test, y@remote.test]\n');
    await waitFor(async () => /^250/.test(await rcpt('sales@a.test')), 5_000, 'the alias to be routed');
    // A second add extends the list.
    expect((await cli('alias', 'add', 'sales@a.test', 'z@remote.test')).out).toMatch(/→ x@remote\.test, y@remote\.test, z@remote\.test/);

    expect((await cli('alias', 'remove', 'sales@a.test')).code).toBe(0);
    expect(readFileSync(path.join(t.configDir, 'tenants', 'a.test.yaml'), 'utf8')).not.toContain('sales');
    await waitFor(async () => /^550/.test(await rcpt('sales@a.test')), 5_000, 'the alias to be gone');
  });

  it('creates mail.forward in a tenant file that has no mail section', async () => {
    expect((await cli('alias', 'add', 'hello@www.new.test', 'h@remote.test')).out).toBe('hello@new.test (and @www.new.test) → h@remote.test (tenant new.test)\n');
    await waitFor(async () => /^250/.test(await rcpt('hello@www.new.test')), 5_000, 'the alias to be routed');
  });
});

describe('makewaves tenant remove', () => {
  it('archives the file, web root and state rows, and the running server stops serving the tenant', async () => {
    expect(await status('new.test')).toBe(200);
    t.suite.state.traffic.flush();
    const r = await cli('tenant', 'remove', 'new.test', '--yes');
    expect(r.code).toBe(0);
    const archive = /archived in (\S+)\n/.exec(r.out)![1]!;
    expect(path.dirname(archive)).toBe(path.join(t.dataDir, 'archive'));
    expect(path.basename(archive)).toMatch(/^new\.test-\d{8}T\d{6}Z$/);
    expect(readFileSync(path.join(archive, 'new.test.yaml'), 'utf8')).toContain('hello: [h@remote.test]');
    expect(readFileSync(path.join(archive, 'site', 'index.html'), 'utf8')).toContain('Welcome to new.test');
    const state = JSON.parse(readFileSync(path.join(archive, 'state.json'), 'utf8')) as { traffic: Array<{ requests: number }> };
    expect(state.traffic[0]!.requests).toBeGreaterThan(0);
    expect(existsSync(path.join(t.sitesDir, 'new.test'))).toBe(false);
    expect(existsSync(path.join(t.configDir, 'tenants', 'new.test.yaml'))).toBe(false);
    await waitFor(async () => (await status('new.test')) === 404, 5_000, 'the tenant to be gone');
    expect(await status('a.test')).toBe(200);
  });
});
