import { readFileSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setFtpPassword } from '../../../src/core/tenantfile.ts';
import { hashPassword } from '../../../src/lib/password.ts';
import { runCli } from '../../helpers/cli.ts';
import { rawRequest } from '../../helpers/http.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';
import { ftpAccounts, PANEL_HOST, PanelClient } from './helpers.ts';

/** A non-loopback IPv4 address of this machine, to be a client the panel must not serve over plain HTTP. */
const outside = Object.values(os.networkInterfaces())
  .flat()
  .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;

let t: TestSuite;
let plainOutside: string | undefined;
let httpsBase: string;

beforeAll(async () => {
  t = await startTestSuite({
    main: {
      panel: { host: PANEL_HOST },
      // [::ffff:127.0.0.1]: an IPv6 socket that sees this client as ::ffff:127.0.0.1, as a dual-stack [::] listener does.
      http: { listen: ['127.0.0.1:0', '[::ffff:127.0.0.1]:0', ...(outside ? [`${outside}:0`] : [])], tls: { listen: ['127.0.0.1:0'], certs: '../certs', selfSigned: true } },
      ftp: { listen: '127.0.0.1:0', lockout: { failures: 3 } },
    },
    tenants: {
      'example.test': {
        domains: ['example.test'],
        quota: '1MiB',
        ftp: await ftpAccounts('alice', 'carol'),
        mail: { forward: { info: ['alice@example.net'] } },
      },
      'other.test': { domains: ['other.test'], ftp: await ftpAccounts('bob'), mail: { forward: { sales: ['bob@example.org'] } } },
    },
    files: { 'example.test/index.html': 'hello', 'example.test/a/b.txt': 'abc' },
  });
  plainOutside = t.suite.urls.http!.find((u) => outside && u.includes(outside));
  httpsBase = t.suite.urls.http!.find((u) => u.startsWith('https:'))!;
}, 30_000);
afterAll(() => t?.stop());

/** The audit entries of one tenant, as the operator's CLI prints them. */
async function audit(tenant: string): Promise<string> {
  const r = await runCli('panel', 'audit', '--config', t.configDir, '--tenant', tenant);
  expect(r.code, r.err).toBe(0);
  return r.out;
}

describe('the control panel over HTTP', () => {
  it('logs in with an FTP account, sets a HttpOnly SameSite=Strict cookie, and shows disk use against the quota', async () => {
    const c = new PanelClient(t.http);
    const res = await c.login('alice@example.test', 'wonderland');
    expect(res.status).toBe(303);
    expect(res.headers.location).toBe('/t/example.test/');
    const cookie = (res.headers['set-cookie'] ?? []).find((s) => s.startsWith('mw_session='))!;
    expect(cookie).toMatch(/; HttpOnly/);
    expect(cookie).toMatch(/; SameSite=Strict/);
    // Plain HTTP on loopback: no Secure (the browser would drop it), no __Host- prefix (it needs Secure).
    expect(cookie).not.toMatch(/Secure/);
    const page = await c.get('/t/example.test/');
    expect(page.status).toBe(200);
    expect(page.text).toContain('8 B of 1.0 MiB (0%)');
    expect(page.text).toContain('2 files');
    expect(page.headers['content-security-policy']).toMatch(/default-src 'none'/);
    expect(page.headers['cache-control']).toBe('no-store');
    expect(await audit('example.test')).toMatch(/127\.0\.0\.1 {2}alice@example\.test {2}login {2}example\.test/);
  });

  it('over HTTPS sets the session cookie with Secure and the __Host- prefix', async () => {
    const u = new URL(httpsBase);
    const get = (p: string, headers: Record<string, string> = {}, body?: string) =>
      new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string }>((resolve, reject) => {
        const req = https.request({ host: u.hostname, port: u.port, path: p, method: body ? 'POST' : 'GET', servername: PANEL_HOST, rejectUnauthorized: false, headers: { host: PANEL_HOST, ...headers } }, (res) => {
          let text = '';
          res.on('data', (d: Buffer) => (text += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text }));
        });
        req.on('error', reject);
        req.end(body);
      });
    const form = await get('/login');
    const pre = (form.headers['set-cookie'] as string[]).find((s) => s.startsWith('__Host-mw_login='))!;
    expect(pre).toMatch(/; Secure/);
    const csrf = /name="csrf" value="([^"]+)"/.exec(form.text)![1]!;
    const body = new URLSearchParams({ csrf, user: 'alice@example.test', password: 'wonderland' }).toString();
    const res = await get('/login', { cookie: pre.split(';')[0]!, 'content-type': 'application/x-www-form-urlencoded' }, body);
    expect(res.status).toBe(303);
    const session = (res.headers['set-cookie'] as string[]).find((s) => s.startsWith('__Host-mw_session='))!;
    expect(session).toMatch(/^__Host-mw_session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict; Secure$/);
  });

  it.skipIf(!outside)('redirects plain HTTP from a client not on loopback to HTTPS with 308', async () => {
    const res = await rawRequest(plainOutside!, '/login?x=1', { host: PANEL_HOST });
    expect(res.status).toBe(308);
    expect(res.headers.location).toBe(`https://${PANEL_HOST}:${new URL(httpsBase).port}/login?x=1`);
    // The same request from loopback is served.
    expect((await rawRequest(t.http, '/login', { host: PANEL_HOST })).status).toBe(200);
  });

  it('throttles wrong passwords with the lockout FTP uses, for the panel and FTP alike', async () => {
    const c = new PanelClient(t.http);
    for (let i = 0; i < 3; i++) {
      const res = await c.login('carol@example.test', `wrong-${i}`);
      expect(res.status).toBe(401);
      expect(res.text).toContain('Wrong user or password.');
    }
    const locked = await c.login('carol@example.test', 'carol-pass');
    expect(locked.status).toBe(429);
    expect(locked.text).toMatch(/Too many failed logins; try again in \d+ minutes/);
    expect(t.suite.state.ftpLogins.locks().map((l) => l.key)).toContain('pair:carol@example.test|127.0.0.1');
    // The same client through a listener that sees it as ::ffff:127.0.0.1 is locked out too: one client, one key.
    const mapped = t.suite.urls.http!.find((u) => u.includes('[::ffff:'))!;
    expect((await new PanelClient(mapped).login('carol@example.test', 'carol-pass')).status).toBe(429);
    expect(t.logs().some((l) => l.msg === 'panel login refused: too many failures' && l.remote === '::ffff:127.0.0.1' && l.clientKey === '127.0.0.1')).toBe(true);
    // Another account from the same address is not locked by carol's failures.
    expect((await new PanelClient(t.http).login('alice@example.test', 'wonderland')).status).toBe(303);
    t.suite.state.ftpLogins.unlock('carol@example.test');
  });

  it('refuses a POST without the CSRF token (403, logged, audited) and changes nothing', async () => {
    const c = new PanelClient(t.http);
    await c.login('alice@example.test', 'wonderland');
    const before = readFileSync(path.join(t.configDir, 'tenants', 'example.test.yaml'), 'utf8');
    const res = await c.post('/t/example.test/forwards', { address: 'evil', targets: 'evil@example.net' });
    expect(res.status).toBe(403);
    const wrong = await c.post('/t/example.test/forwards', { csrf: 'x'.repeat(43), address: 'evil', targets: 'evil@example.net' });
    expect(wrong.status).toBe(403);
    // A login form posted without its cookie (from another site's page) is refused too.
    const bare = new PanelClient(t.http);
    expect((await bare.post('/login', { csrf: 'x', user: 'alice@example.test', password: 'wonderland' })).status).toBe(403);
    expect(readFileSync(path.join(t.configDir, 'tenants', 'example.test.yaml'), 'utf8')).toBe(before);
    expect(t.logs().some((l) => l.msg === 'panel request refused' && l.why === 'no valid CSRF token')).toBe(true);
    expect(await audit('example.test')).toMatch(/denied {2}example\.test {2}POST \/t\/example\.test\/forwards: no valid CSRF token/);
  });

  it('treats a forged or unknown session cookie as no session', async () => {
    const c = new PanelClient(t.http);
    c.jar.set('mw_session', 'A'.repeat(43));
    const page = await c.get('/t/example.test/');
    expect(page.status).toBe(303);
    expect(page.headers.location).toBe('/login');
    c.jar.set('mw_session', 'A'.repeat(43));
    const post = await c.post('/t/example.test/forwards', { csrf: 'A'.repeat(43), address: 'x', targets: 'x@example.net' });
    expect(post.status).toBe(403);
    c.jar.set('mw_session', '"><script>');
    expect((await c.get('/t/example.test/')).status).toBe(303);
  });

  it("answers 403 (logged and audited) when one tenant's session asks for another's pages or writes", async () => {
    const c = new PanelClient(t.http);
    await c.login('alice@example.test', 'wonderland');
    const csrf = await c.csrf('/t/example.test/forwards');
    for (const p of ['/t/other.test/', '/t/other.test/forwards', '/t/other.test/password']) expect((await c.get(p)).status).toBe(403);
    expect((await c.post('/t/other.test/forwards', { csrf, address: 'x', targets: 'x@example.net' })).status).toBe(403);
    // Through its own page, naming the other tenant's address.
    const foreign = await c.post('/t/example.test/forwards/remove', { csrf, address: 'sales@other.test' });
    expect(foreign.status).toBe(403);
    expect(t.suite.registry().tenants.get('other.test')!.config.mail!.forward.sales).toEqual(['bob@example.org']);
    const trail = await audit('other.test');
    expect(trail).toMatch(/alice@example\.test {2}denied {2}other\.test {2}GET \/t\/other\.test\/: another tenant/);
    expect(trail).toMatch(/alice@example\.test {2}denied {2}other\.test {2}forward-remove sales@other\.test: another tenant's address/);
  });

  it('shows a refused forward with the sentence the CLI prints, next to the field, escaped', async () => {
    const c = new PanelClient(t.http);
    await c.login('alice@example.test', 'wonderland');
    const csrf = await c.csrf('/t/example.test/forwards');
    const bad = '<script>alert(1)</script>@evil.test';
    const res = await c.post('/t/example.test/forwards', { csrf, address: 'news', targets: bad });
    expect(res.status).toBe(400);
    expect(res.text).not.toContain('<script>');
    const cliSays = await runCli('alias', 'add', 'news@example.test', bad, '--config', t.configDir);
    expect(cliSays.code).toBe(1);
    const sentence = cliSays.err.replace(/^makewaves: /, '').trim();
    const escaped = sentence.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
    expect(res.text).toContain(`<p class="error" id="targets-error">${escaped}</p>`);
    // What was typed comes back in the field, escaped.
    expect(res.text).toContain('value="&lt;script&gt;alert(1)&lt;/script&gt;@evil.test"');
  });

  it('adds and removes a forward through the tenant file, comments kept, and the running server routes it', async () => {
    const file = path.join(t.configDir, 'tenants', 'example.test.yaml');
    t.writeTenant('example.test', `# alice's site\n${readFileSync(file, 'utf8')}`);
    const c = new PanelClient(t.http);
    await c.login('alice@example.test', 'wonderland');
    const csrf = await c.csrf('/t/example.test/forwards');
    const add = await c.post('/t/example.test/forwards', { csrf, address: 'sales', targets: "o'brien&co@example.net, sam@example.org" });
    expect(add.status).toBe(303);
    expect(add.headers.location).toBe('/t/example.test/forwards?done=added');
    expect(readFileSync(file, 'utf8')).toMatch(/^# alice's site\n/);
    const route = t.suite.registry().route('sales@example.test');
    expect(route.ok && route.targets).toEqual(["o'brien&co@example.net", 'sam@example.org']);
    const list = await c.get('/t/example.test/forwards?done=added');
    expect(list.text).toContain('o&#39;brien&amp;co@example.net');
    const removed = await c.post('/t/example.test/forwards/remove', { csrf, address: 'sales@example.test' });
    expect(removed.status).toBe(303);
    expect(removed.headers.location).toBe('/t/example.test/forwards?done=removed');
    expect(t.suite.registry().route('sales@example.test').ok).toBe(false);
    expect(await audit('example.test')).toMatch(/forward-add {2}example\.test {2}sales@example\.test → o'brien&co@example\.net, sam@example\.org[\s\S]*forward-remove {2}example\.test {2}sales@example\.test/);
  });

  it('sets and removes the catch-all, refuses a bad one in the CLI\'s words, and forms stay right on a page shown after a refusal', async () => {
    const c = new PanelClient(t.http);
    await c.login('alice@example.test', 'wonderland');
    const csrf = await c.csrf('/t/example.test/forwards');
    const bad = await c.post('/t/example.test/catchall', { csrf, catchAll: 'nobody' });
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('id="catchall-error">tenant &quot;example.test&quot;: mail.catchAll: &quot;nobody&quot; is not an e-mail address; nothing changed');
    // Shown at /t/example.test/catchall: every form still posts where it should.
    expect([...bad.text.matchAll(/action="([^"]+)"/g)].map((m) => m[1])).toEqual(['/logout', '/t/example.test/forwards/remove', '/t/example.test/forwards', '/t/example.test/catchall']);
    const set = await c.post('/t/example.test/catchall', { csrf, catchAll: 'Postmaster@Example.net' });
    expect(set.headers.location).toBe('/t/example.test/forwards?done=catchall-set');
    const route = t.suite.registry().route('anything@example.test');
    expect(route.ok && route.targets).toEqual(['postmaster@example.net']);
    expect((await c.get('/t/example.test/forwards?done=catchall-set')).text).toContain('goes to postmaster@example.net');
    expect((await c.post('/t/example.test/catchall/remove', { csrf })).headers.location).toBe('/t/example.test/forwards?done=catchall-removed');
    expect(t.suite.registry().route('anything@example.test').ok).toBe(false);
    const again = await c.post('/t/example.test/catchall/remove', { csrf });
    expect(again.text).toContain('id="catchall-error">example.test has no catch-all');
    expect(await audit('example.test')).toMatch(/catchall-set {2}example\.test {2}\*@example\.test → postmaster@example\.net[\s\S]*catchall-remove/);
  });

  it('refuses a wrong current password and an empty new one, in the CLI\'s words', async () => {
    const c = new PanelClient(t.http);
    await c.login('alice@example.test', 'wonderland');
    const csrf = await c.csrf('/t/example.test/password');
    const wrong = await c.post('/t/example.test/password', { csrf, current: 'nope', new: 'x' });
    expect(wrong.status).toBe(400);
    expect(wrong.text).toContain('id="current-error">The current password is wrong.');
    const empty = await c.post('/t/example.test/password', { csrf, current: 'wonderland', new: '' });
    expect(empty.status).toBe(400);
    expect(empty.text).toContain('id="new-error">empty password; nothing changed');
  });

  it('logs out (the cookie is worth nothing after), and a new password ends the account\'s other sessions', async () => {
    const mine = new PanelClient(t.http);
    const theirs = new PanelClient(t.http);
    await mine.login('carol@example.test', 'carol-pass');
    await theirs.login('carol@example.test', 'carol-pass');
    const stolen = theirs.jar.get('mw_session')!;
    const out = await theirs.post('/logout', { csrf: await theirs.csrf('/t/example.test/') });
    expect(out.status).toBe(303);
    const replay = new PanelClient(t.http);
    replay.jar.set('mw_session', stolen);
    expect((await replay.get('/t/example.test/')).headers.location).toBe('/login');

    await theirs.login('carol@example.test', 'carol-pass');
    const csrf = await mine.csrf('/t/example.test/password');
    const changed = await mine.post('/t/example.test/password', { csrf, current: 'carol-pass', new: 'carol-2' });
    expect(changed.status).toBe(303);
    expect(changed.headers.location).toBe('/t/example.test/password?done=1');
    expect((await mine.get('/t/example.test/password?done=1')).text).toContain('Your password has been changed');
    expect((await theirs.get('/t/example.test/')).headers.location).toBe('/login');
    expect((await new PanelClient(t.http).login('carol@example.test', 'carol-2')).status).toBe(303);
    expect(await audit('example.test')).toMatch(/carol@example\.test {2}logout[\s\S]*carol@example\.test {2}password {2}example\.test {2}changed the FTP password of carol@example\.test/);
  });

  it('ends a session once its password is changed elsewhere or its tenant is suspended', async () => {
    const c = new PanelClient(t.http);
    await c.login('bob@other.test', 'builder');
    expect((await c.get('/t/other.test/')).status).toBe(200);
    // The CLI's writer (makewaves passwd), then the reload the watcher would do.
    setFtpPassword(t.configDir, 'other.test', 'bob', await hashPassword('builder-2'));
    expect(t.suite.reload()).toBe(true);
    expect((await c.get('/t/other.test/')).headers.location).toBe('/login');
    expect(t.logs().some((l) => l.msg === 'panel session ended' && l.why === 'password changed')).toBe(true);

    await c.login('bob@other.test', 'builder-2');
    expect((await c.get('/t/other.test/')).status).toBe(200);
    expect((await runCli('tenant', 'suspend', 'other.test', '--config', t.configDir)).code).toBe(0);
    expect(t.suite.reload()).toBe(true);
    expect((await c.get('/t/other.test/')).headers.location).toBe('/login');
    const again = await c.login('bob@other.test', 'builder-2');
    expect(again.status).toBe(403);
    expect(again.text).toContain('This account is suspended');
    expect((await runCli('tenant', 'resume', 'other.test', '--config', t.configDir)).code).toBe(0);
    expect(t.suite.reload()).toBe(true);
  });

  it('serves the panel on its own host only: a tenant host is not the panel', async () => {
    const res = await rawRequest(t.http, '/login', { host: 'example.test' });
    expect(res.body.toString()).not.toContain('Log in');
  });
});
