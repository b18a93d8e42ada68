import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import nodemailer from 'nodemailer';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { ftpLogin } from '../ftp/helpers.ts';
import { smtpPort, startSink, type MailSink } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import { countsFromLogs, ftpAccounts, logLine, PANEL_HOST } from './helpers.ts';
import { rawRequest } from '../../helpers/http.ts';

/*
 * The panel as a customer uses it: Debian's Chromium driven by playwright-core,
 * by role and label, over HTTPS (the suite's self-signed certificate), with
 * the panel's host name mapped to 127.0.0.1 inside the browser, and
 * JavaScript turned off in the pages (the panel is plain HTML forms).
 */

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) console.warn('panel browser tests skipped: /usr/bin/chromium is missing (apt-get install chromium)');

const SHOTS = path.resolve(import.meta.dirname, '../../../test-results/panel');

let t: TestSuite;
let sink: MailSink;
let browser: Browser;
/** https://panel.makewaves.test:<port> */
let base: string;
let httpsPort: number;

beforeAll(async () => {
  if (!haveChromium) return;
  mkdirSync(SHOTS, { recursive: true });
  sink = await startSink();
  t = await startTestSuite({
    main: {
      panel: { host: PANEL_HOST, admins: { root: await hashPassword('sea-shanty') } },
      http: { tls: { listen: ['127.0.0.1:0'], certs: '../certs', selfSigned: true } },
      ftp: { listen: '127.0.0.1:0', lockout: { failures: 3 } },
      smtp: { listen: ['127.0.0.1:0'], relay: sink.url },
    },
    tenants: {
      'example.test': {
        domains: ['example.test'],
        quota: '1MiB',
        ftp: await ftpAccounts('alice', 'carol'),
        mail: { forward: { info: ['alice@example.net'] }, lists: { news: { owner: 'owner@sink.test', posting: 'moderated' } } },
      },
      'other.test': { domains: ['other.test'], ftp: await ftpAccounts('bob') },
    },
    files: {
      'example.test/index.html': '<h1>alice</h1>',
      'other.test/index.html': '<h1>bob</h1>',
    },
  });
  httpsPort = Number(new URL(t.suite.urls.http!.find((u) => u.startsWith('https:'))!).port);
  base = `https://${PANEL_HOST}:${httpsPort}`;
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      `--host-resolver-rules=MAP ${PANEL_HOST} 127.0.0.1, MAP other.test 127.0.0.1, MAP example.test 127.0.0.1`,
    ],
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await t?.stop();
  await sink?.close();
});

/** A fresh browser context; scripts off by default (every page must work as plain HTML forms), on where a payload must get its chance to run. */
async function newPage(scripts = false): Promise<{ context: BrowserContext; page: Page; dialogs: string[] }> {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, javaScriptEnabled: scripts });
  const page = await context.newPage();
  const dialogs: string[] = [];
  // A script that runs in the panel would show up here (an XSS payload's alert).
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });
  return { context, page, dialogs };
}

async function logIn(page: Page, user: string, password: string): Promise<void> {
  await page.goto(`${base}/`);
  await page.getByLabel('User').fill(user);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
}

const shot = (page: Page, name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

describe.skipIf(!haveChromium)('the control panel in Chromium', () => {
  it('logs in, changes the password (FTP takes the new one), adds a forward that mail follows, removes it', async () => {
    const { context, page, dialogs } = await newPage();
    await page.goto(`${base}/`);
    await page.getByRole('heading', { name: 'Log in' }).waitFor();
    await shot(page, 'login');
    await logIn(page, 'alice@example.test', 'wonderland');
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    expect(await page.locator('#disk').textContent()).toBe('14 B of 1.0 MiB (0%)');
    expect(await page.locator('#files').textContent()).toBe('1 file');
    await shot(page, 'overview');
    const cookie = (await context.cookies()).find((c) => c.name === '__Host-mw_session');
    expect(cookie).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Strict', path: '/' });

    await page.getByRole('link', { name: 'Password', exact: true }).click();
    await page.getByLabel('Current password').fill('wonderland');
    await page.getByLabel('New password').fill('looking-glass');
    await page.getByRole('button', { name: 'Change password' }).click();
    await page.getByRole('status').filter({ hasText: 'Your password has been changed' }).waitFor();
    await shot(page, 'password');
    const ftp = await ftpLogin(t.ftp!, 'alice@example.test', 'looking-glass');
    expect((await ftp.list()).map((f) => f.name)).toContain('index.html');
    ftp.close();
    await expect(ftpLogin(t.ftp!, 'alice@example.test', 'wonderland')).rejects.toThrow(/530/);

    await page.getByRole('link', { name: 'Forwards', exact: true }).click();
    await page.getByLabel('Address').fill('sales');
    await page.getByLabel('Forward to').fill('customer@sink.test');
    await page.getByRole('button', { name: 'Add forward' }).click();
    await page.getByRole('status').filter({ hasText: 'The forward was added.' }).waitFor();
    expect(await page.getByRole('row').filter({ hasText: 'sales@example.test' }).textContent()).toContain('customer@sink.test');
    await shot(page, 'forwards');
    const mailer = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort(t.suite), secure: false, ignoreTLS: true });
    await mailer.sendMail({ from: 'someone@sender.test', to: 'sales@example.test', subject: 'order 42', text: 'hello sales' });
    const got = await waitFor(() => sink.messages.find((m) => m.to.includes('customer@sink.test')), 15_000, 'the forwarded mail at the sink');
    expect(got.raw.toString()).toContain('Subject: order 42');

    await page.getByRole('button', { name: 'Remove sales@example.test' }).click();
    await page.getByRole('status').filter({ hasText: 'The forward was removed.' }).waitFor();
    expect(await page.getByRole('row').filter({ hasText: 'sales@example.test' }).count()).toBe(0);
    await expect(mailer.sendMail({ from: 'someone@sender.test', to: 'sales@example.test', subject: 'again', text: 'x' })).rejects.toThrow(/550/);
    mailer.close();
    expect(dialogs).toEqual([]);
    await context.close();
  }, 60_000);

  it('shows a refused forward escaped next to its field, and runs nothing from it', async () => {
    const { context, page, dialogs } = await newPage(true);
    await logIn(page, 'carol@example.test', 'carol-pass');
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await page.getByRole('link', { name: 'Forwards', exact: true }).click();
    const payload = '<img/src=x/onerror=alert(1)>@evil.test';
    await page.getByLabel('Address').fill('"><script>alert(2)</script>');
    await page.getByLabel('Forward to').fill(payload);
    await page.getByRole('button', { name: 'Add forward' }).click();
    const error = page.locator('#address-error');
    await error.waitFor();
    expect(await error.textContent()).toContain('"><script>alert(2)</script>');
    expect(await page.getByLabel('Address').inputValue()).toBe('"><script>alert(2)</script>');
    expect(await page.getByLabel('Forward to').inputValue()).toBe(payload);
    expect(await page.locator('img, script').count()).toBe(0);
    await shot(page, 'forwards-refused');
    await page.getByLabel('Address').fill('news');
    await page.getByRole('button', { name: 'Add forward' }).click();
    const targets = page.locator('#targets-error');
    await targets.waitFor();
    expect(await targets.textContent()).toBe(`tenant "example.test": mail.forward.news[0]: "${payload}" is not an e-mail address; nothing changed`);
    expect(dialogs).toEqual([]);
    await context.close();
  }, 30_000);

  it('throttles wrong passwords, refuses forged cookies, cross-site forms and other tenants', async () => {
    const { context, page } = await newPage();
    for (let i = 0; i < 3; i++) {
      await logIn(page, 'bob@other.test', `guess-${i}`);
      await page.getByText('Wrong user or password.').waitFor();
    }
    await logIn(page, 'bob@other.test', 'builder');
    await page.getByText(/Too many failed logins; try again in \d+ minutes\./).waitFor();
    await shot(page, 'login-throttled');
    t.suite.state.ftpLogins.unlock('bob@other.test');

    const forged = await browser.newContext({ ignoreHTTPSErrors: true });
    await forged.addCookies([{ name: '__Host-mw_session', value: 'A'.repeat(43), url: `${base}/`, secure: true, httpOnly: true, sameSite: 'Strict' }]);
    const fp = await forged.newPage();
    await fp.goto(`${base}/t/example.test/`);
    expect(new URL(fp.url()).pathname).toBe('/login');
    await forged.close();

    await logIn(page, 'bob@other.test', 'builder');
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    const other = await page.goto(`${base}/t/example.test/forwards`);
    expect(other!.status()).toBe(403);
    await page.getByRole('heading', { name: 'Forbidden' }).waitFor();
    await shot(page, 'forbidden');

    // A form on another site posting to the panel: SameSite=Strict keeps the session cookie home, and there is no token.
    const before = readFileSync(path.join(t.configDir, 'tenants', 'other.test.yaml'), 'utf8');
    writeFileSync(
      path.join(t.sitesDir, 'other.test', 'evil.html'),
      `<!doctype html><title>prize</title><form method="post" action="${base}/t/other.test/forwards"><input name="address" value="evil"><input name="targets" value="evil@example.net"><button>Win a prize</button></form>`,
    );
    const evil = await page.goto(`https://other.test:${httpsPort}/evil.html`);
    expect(evil!.ok()).toBe(true);
    await page.getByRole('button', { name: 'Win a prize' }).click();
    await page.getByRole('heading', { name: 'Forbidden' }).waitFor();
    expect(await page.getByText('Your session has ended').count()).toBe(1);
    expect(readFileSync(path.join(t.configDir, 'tenants', 'other.test.yaml'), 'utf8')).toBe(before);
    await context.close();
  }, 30_000);
  it("plots the tenant's traffic of 30 days with uPlot, from the panel's own files, its data the access log's counts", async () => {
    const logs = path.join(t.dataDir, 'logs', 'example.test');
    mkdirSync(logs, { recursive: true });
    const DAY = 86_400_000;
    const now = Date.now();
    const at = (days: number) => new Date(now - days * DAY);
    writeFileSync(
      path.join(logs, `access.log.${at(2).toISOString().slice(0, 10)}`),
      logLine({ when: at(9), path: '/', status: 200, bytes: 1200 }) +
        logLine({ when: at(6), path: '/shop', status: 200, bytes: 5000, referer: 'https://x.example/"><img src=x onerror=alert(3)>' }) +
        logLine({ when: at(6), path: '/<img/src=x/onerror=alert(4)>', status: 404, bytes: 20 }) +
        logLine({ when: at(2), path: '/cgi-bin/broken', status: 500, bytes: 0 }),
    );
    for (const p of ['/', '/index.html', '/nope']) await rawRequest(t.http, p, { host: 'example.test' });
    await waitFor(() => existsSync(path.join(logs, 'access.log')) && readFileSync(path.join(logs, 'access.log'), 'utf8').includes('/nope'), 5_000, 'the access log lines');

    const { context, page, dialogs } = await newPage(true);
    const refused: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') refused.push(m.text());
    });
    const external: string[] = [];
    page.on('request', (req) => {
      if (!req.url().startsWith(base)) external.push(req.url());
    });
    await logIn(page, 'carol@example.test', 'carol-pass');
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await page.getByRole('link', { name: 'Traffic', exact: true }).click();
    await page.locator('#plot-requests canvas').waitFor();
    expect(await page.locator('#traffic-plots canvas').count()).toBe(3);
    // Mail per day beside them: 30 days, from the page's own table (the mail service's counts).
    await page.locator('#plot-mail canvas').waitFor();
    const mailPlot = (await page.evaluate(() => (window as unknown as { mwTraffic: { mail: { data: number[][] } } }).mwTraffic.mail.data)) as number[][];
    expect(mailPlot).toHaveLength(4);
    expect(mailPlot[0]).toHaveLength(30);
    // The forward of the first test delivered mail today: the plot's last day is the mail service's count.
    const today = t.suite.state.mailStats.days('example.test', new Date().toISOString().slice(0, 10))[0];
    expect(today?.forwarded).toBeGreaterThan(0);
    expect([mailPlot[1]![29], mailPlot[2]![29], mailPlot[3]![29]]).toEqual([today!.forwarded, today!.refused, today!.bounced]);
    await shot(page, 'traffic');
    const plotted = (await page.evaluate(() => {
      const w = window as unknown as { mwTraffic: Record<string, { data: number[][] }> };
      return { requests: w.mwTraffic.requests!.data, bytes: w.mwTraffic.bytes!.data, errors: w.mwTraffic.errors!.data };
    })) as { requests: number[][]; bytes: number[][]; errors: number[][] };
    const counts = countsFromLogs(logs);
    const days = plotted.requests[0]!.map((s) => new Date(s * 1000).toISOString().slice(0, 10));
    expect(days).toHaveLength(30);
    expect(days[29]).toBe(new Date().toISOString().slice(0, 10));
    const want = (k: 'requests' | 'bytes' | 'c4xx' | 'c5xx') => days.map((d) => counts.get(d)?.[k] ?? 0);
    expect(plotted.requests[1]).toEqual(want('requests'));
    expect(plotted.bytes[1]).toEqual(want('bytes'));
    expect(plotted.errors[1]).toEqual(want('c4xx'));
    expect(plotted.errors[2]).toEqual(want('c5xx'));
    expect(want('requests').reduce((a, b) => a + b)).toBeGreaterThanOrEqual(7);
    expect(await page.locator('#top-referrers').textContent()).toContain('onerror=alert(3)');
    expect(await page.locator('#top-404').textContent()).toContain('onerror=alert(4)');
    expect(await page.locator('main img').count()).toBe(0);
    expect(dialogs).toEqual([]);
    expect(refused).toEqual([]);
    expect(external).toEqual([]);
    await context.close();
  }, 30_000);
  it('adds a list member, approves a held post (the member gets it), uploads a page and serves it', async () => {
    const { context, page, dialogs } = await newPage();
    await logIn(page, 'carol@example.test', 'carol-pass');
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await page.getByRole('link', { name: 'Lists', exact: true }).click();
    await page.getByRole('link', { name: 'news@example.test' }).click();
    await page.getByLabel('Member address').fill('reader@sink.test');
    await page.getByRole('button', { name: 'Add member' }).click();
    await page.getByRole('status').filter({ hasText: 'The member was added.' }).waitFor();

    const mailer = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort(t.suite), secure: false, ignoreTLS: true });
    await mailer.sendMail({ from: 'poster@sender.test', to: 'news@example.test', subject: 'Launch <b>day</b>', text: '<script>alert(5)</script> we launch today' });
    mailer.close();
    const held = await waitFor(() => t.suite.state.lists.heldOf('example.test', 'news')[0], 10_000, 'the held post');
    await page.reload();
    const post = page.locator(`#held-${held.id}`);
    expect(await post.locator('pre').textContent()).toContain('<script>alert(5)</script> we launch today');
    await shot(page, 'list');
    await page.getByRole('button', { name: `Approve #${held.id}` }).click();
    await page.getByRole('status').filter({ hasText: 'The post was approved' }).waitFor();
    const got = await waitFor(() => sink.messages.find((m) => m.to.includes('reader@sink.test') && m.raw.toString().includes('we launch today')), 15_000, 'the approved post at the member');
    expect(got.raw.toString()).toContain('Launch <b>day</b>');

    await page.getByRole('link', { name: 'Upload', exact: true }).click();
    await page.getByLabel('File').setInputFiles({ name: 'launch.html', mimeType: 'text/html', buffer: Buffer.from('<h1>launch</h1>') });
    await page.getByRole('button', { name: 'Upload' }).click();
    await page.getByRole('status').filter({ hasText: '/launch.html was stored.' }).waitFor();
    await shot(page, 'upload');
    const served = await page.goto(`https://example.test:${httpsPort}/launch.html`);
    expect(await served!.text()).toBe('<h1>launch</h1>');

    // A zip of a site (made by the zip command), unpacked into the web root and served.
    const src = path.join(t.dir, 'zipsite');
    mkdirSync(path.join(src, 'site', 'css'), { recursive: true });
    writeFileSync(path.join(src, 'site', 'index.html'), '<h1>from the zip</h1>');
    writeFileSync(path.join(src, 'site', 'css', 'a.css'), 'h1{color:navy}');
    execFileSync('zip', ['-q', '-r', path.join(t.dir, 'site.zip'), 'site'], { cwd: src });
    await page.goto(`${base}/t/example.test/upload`);
    await page.getByLabel('Site archive (zip)').setInputFiles(path.join(t.dir, 'site.zip'));
    await page.getByRole('button', { name: 'Unpack archive' }).click();
    await page.getByRole('status').filter({ hasText: '2 files unpacked into /.' }).waitFor();
    await shot(page, 'upload-zip');
    const fromZip = await page.goto(`https://example.test:${httpsPort}/site/index.html`);
    expect(await fromZip!.text()).toBe('<h1>from the zip</h1>');
    expect(await (await page.goto(`https://example.test:${httpsPort}/site/css/a.css`))!.text()).toBe('h1{color:navy}');
    expect(dialogs).toEqual([]);
    await context.close();
  }, 60_000);

  it("an operator logs in, suspends a tenant (its site answers 503) and resumes it", async () => {
    const { context, page, dialogs } = await newPage();
    await logIn(page, 'root', 'sea-shanty');
    await page.getByRole('heading', { name: 'Tenants' }).waitFor();
    const row = page.locator('tr[data-tenant="other.test"]');
    expect(await row.locator('.state').textContent()).toBe('active');
    await shot(page, 'operator-tenants');
    await page.getByRole('button', { name: 'Suspend other.test' }).click();
    await page.getByRole('status').filter({ hasText: 'Tenant other.test was suspended.' }).waitFor();
    expect(await row.locator('.state').textContent()).toMatch(/^suspended since \d{4}-\d\d-\d\dT/);
    await shot(page, 'operator-suspended');
    const site = await context.newPage();
    const suspended = await site.goto(`https://other.test:${httpsPort}/`);
    expect(suspended!.status()).toBe(503);
    await shot(site, 'operator-suspended-site');
    await page.getByRole('button', { name: 'Resume other.test' }).click();
    await page.getByRole('status').filter({ hasText: 'Tenant other.test was resumed.' }).waitFor();
    expect(await row.locator('.state').textContent()).toBe('active');
    const resumed = await site.goto(`https://other.test:${httpsPort}/`);
    expect(resumed!.status()).toBe(200);
    expect(await resumed!.text()).toBe('<h1>bob</h1>');
    // The operator opens a tenant's own pages from the overview, and finds the way back.
    await page.getByRole('link', { name: 'example.test', exact: true }).click();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await page.getByRole('link', { name: 'All tenants' }).click();
    await page.getByRole('heading', { name: 'Tenants' }).waitFor();
    for (const [link, name] of [['Certificates', 'operator-certs'], ['Mail queue', 'operator-queue'], ['Audit log', 'operator-audit']]) {
      await page.getByRole('link', { name: link! }).click();
      await page.getByRole('heading', { name: link === 'Mail queue' ? 'Mail queue' : link! }).waitFor();
      await shot(page, name!);
    }
    expect(await page.locator('#audit').textContent()).toContain('root (operator)tenant-suspendother.test');
    expect(dialogs).toEqual([]);
    await context.close();
  }, 60_000);
});
