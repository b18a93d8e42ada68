import http, { type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { rawRequest } from '../../helpers/http.ts';
import { type MailSink, replyToRcpt, smtpPort, startSink } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import { ftpLogin, replyCode } from '../ftp/helpers.ts';

let t: TestSuite;
let sink: MailSink;
let backend: Server;
let tenant: Record<string, unknown>;
const PASS = 'suspend-test-password';

beforeAll(async () => {
  sink = await startSink();
  backend = http.createServer((_req, res) => res.end('from backend'));
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
  tenant = {
    domains: ['a.test'],
    ftp: [{ user: 'ann', password: await hashPassword(PASS) }],
    mail: { forward: { info: ['ann@remote.test'] } },
    proxy: [{ path: '/app/', to: `http://127.0.0.1:${(backend.address() as AddressInfo).port}` }],
  };
  t = await startTestSuite({
    main: { smtp: { listen: ['127.0.0.1:0'], relay: sink.url }, ftp: {} },
    tenants: { 'a.test': tenant, 'b.test': { domains: ['b.test'] } },
    files: { 'a.test/index.html': 'site A', 'b.test/index.html': 'site B' },
  });
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
  backend?.close();
});

const rcpt = (address: string) => replyToRcpt(smtpPort(t.suite), address);

async function ftpCode(): Promise<number> {
  return replyCode(
    ftpLogin(t.ftp!, 'ann@a.test', PASS).then((c) => {
      c.close();
      return { code: 230 };
    }),
  );
}

describe('tenant suspension', () => {
  it('is off by default: every service serves the tenant', async () => {
    expect((await rawRequest(t.http, '/', { host: 'a.test' })).body.toString()).toBe('site A');
    expect((await rawRequest(t.http, '/app/x', { host: 'a.test' })).body.toString()).toBe('from backend');
    expect(await ftpCode()).toBe(230);
    expect(await rcpt('info@a.test')).toMatch(/^250/);
  });

  it('answers 503 on every path, refuses FTP logins with 530 and mail with 450 4.2.1; other tenants unaffected; resume restores all', async () => {
    const open = await ftpLogin(t.ftp!, 'ann@a.test', PASS);
    t.writeTenant('a.test', { ...tenant, suspended: { reason: 'unpaid invoice' } });
    await waitFor(async () => (await rawRequest(t.http, '/', { host: 'a.test' })).status === 503, 5_000, 'the reload');
    for (const p of ['/', '/index.html', '/no/such/file', '/app/x', '/cgi-bin/formmail', '/../etc/passwd']) {
      const r = await rawRequest(t.http, p, { host: 'a.test' });
      expect(r.status, p).toBe(503);
      expect(r.body.toString(), p).toContain('This site is suspended');
      expect(r.body.toString(), p).not.toContain('unpaid');
      expect(r.headers['cache-control']).toBe('no-store');
    }
    expect((await rawRequest(t.http, '/', { host: 'a.test' }, 'POST', 'x=1')).status).toBe(503);
    expect((await rawRequest(t.http, '/', { host: 'b.test' })).body.toString()).toBe('site B');

    // FTP: 530 with a clear message for the right password, the usual 530 for a wrong one.
    const err = await ftpLogin(t.ftp!, 'ann@a.test', PASS).then(
      (c) => (c.close(), undefined),
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/530 This account is suspended/);
    const wrong = await ftpLogin(t.ftp!, 'ann@a.test', 'wrong').catch((e: Error) => e);
    expect((wrong as Error).message).toMatch(/530 Login incorrect/);
    expect(t.logs().some((l) => l.msg === 'ftp login refused' && l.why === 'tenant suspended')).toBe(true);
    // The session that was open before the suspension has been closed.
    await waitFor(() => open.closed, 5_000, 'the open FTP session to be closed');
    expect(t.logs().some((l) => l.msg === 'ftp session closed' && l.why === 'tenant suspended')).toBe(true);

    // Mail: a temporary refusal for known and unknown addresses alike, so the sender keeps the message.
    expect(await rcpt('info@a.test')).toMatch(/^450 4\.2\.1 <info@a\.test>: mailbox temporarily disabled/);
    expect(await rcpt('nobody@a.test')).toMatch(/^450 4\.2\.1/);

    t.writeTenant('a.test', tenant);
    await waitFor(async () => (await rawRequest(t.http, '/', { host: 'a.test' })).status === 200, 5_000, 'the resume');
    expect(await ftpCode()).toBe(230);
    expect(await rcpt('info@a.test')).toMatch(/^250/);
  });

  it('accepts `suspended: true` and refuses a typo in the object', async () => {
    t.writeTenant('b.test', { domains: ['b.test'], suspended: true });
    await waitFor(async () => (await rawRequest(t.http, '/', { host: 'b.test' })).status === 503, 5_000, 'the reload');
    t.writeTenant('b.test', { domains: ['b.test'], suspended: { reson: 'x' } });
    expect(t.suite.reload()).toBe(false);
    t.writeTenant('b.test', { domains: ['b.test'] });
    expect(t.suite.reload()).toBe(true);
    expect((await rawRequest(t.http, '/', { host: 'b.test' })).status).toBe(200);
  });
});
