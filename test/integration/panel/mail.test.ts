import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { queueDrained, smtpPort, startSink, type MailSink } from '../../helpers/mailsink.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';
import { msg, sendMail } from '../lists/helpers.ts';
import { PanelClient } from './helpers.ts';

// Mail per day and the latest outcomes on the Traffic page: real mail over
// SMTP to the tenant's addresses, forwarded to a sink that takes one target
// and refuses another (after the sender left: a bounce), and a recipient
// refused at RCPT. The page's numbers are compared with what was sent.

let t: TestSuite;
let sink: MailSink;
const XSS_REPLY = '5.1.1 <script>alert(1)</script> no such user';

beforeAll(async () => {
  sink = await startSink();
  sink.rcptReply.set('nobody@sink.test', [550, XSS_REPLY]);
  t = await startTestSuite({
    // waitForNextHop 0: the next hop's refusal comes after the sender left, so it bounces.
    main: { panel: { host: 'panel.makewaves.test' }, smtp: { listen: ['127.0.0.1:0'], relay: sink.url, waitForNextHop: 0, checks: { enabled: false } } },
    tenants: {
      'example.test': {
        domains: ['example.test'],
        ftp: [{ user: 'alice', password: await hashPassword('wonderland') }],
        mail: { forward: { info: ['friend@sink.test'], gone: ['nobody@sink.test'] } },
      },
      'other.test': { domains: ['other.test'], ftp: [{ user: 'bob', password: await hashPassword('builder') }], mail: { forward: { sales: ['boss@sink.test'] } } },
    },
  });
}, 30_000);
afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

const today = () => new Date().toISOString().slice(0, 10);

describe('mail per day in the panel', () => {
  it('counts forwarded, refused and bounced mail of its own addresses only, plots them and lists the latest, escaped', async () => {
    const port = smtpPort(t.suite);
    await sendMail(port, 'x&y@sender.test', 'info@example.test', msg('x&y@sender.test', 'info@example.test', 'one'));
    await sendMail(port, 'x&y@sender.test', 'info@example.test', msg('x&y@sender.test', 'info@example.test', 'two'));
    await sendMail(port, 'x&y@sender.test', 'gone@example.test', msg('x&y@sender.test', 'gone@example.test', 'three'));
    await expect(sendMail(port, 'x&y@sender.test', 'nosuch@example.test', msg('x&y@sender.test', 'nosuch@example.test', 'four'))).rejects.toThrow(/550/);
    await sendMail(port, 'z@sender.test', 'sales@other.test', msg('z@sender.test', 'sales@other.test', 'theirs'));
    await queueDrained(t.suite);

    const c = new PanelClient(t.http);
    expect((await c.login('alice@example.test', 'wonderland')).status).toBe(303);
    const page = await c.get('/t/example.test/traffic');
    expect(page.status).toBe(200);
    const row = new RegExp(`<tr data-day="${today()}"><th scope="row">${today()}</th><td data-k="forwarded" data-v="(\\d+)">[^<]*</td><td data-k="refused" data-v="(\\d+)">[^<]*</td><td data-k="bounced" data-v="(\\d+)">`).exec(page.text);
    expect(row?.slice(1)).toEqual(['2', '1', '1']);
    expect(page.text).toContain('2 forwarded, 1 refused, 1 bounced in the last 30 days.');
    expect(page.text).toContain('<div id="plot-mail"></div>');

    const recent = /<table id="mail-recent">.*?<\/table>/s.exec(page.text)?.[0] ?? '';
    expect(recent.match(/<tr class="mail-/g)).toHaveLength(4);
    expect(recent).toContain('<td>forwarded</td><td>info@example.test</td><td>friend@sink.test</td><td>x&amp;y@sender.test</td>');
    expect(recent).toContain('<td>refused</td><td>nosuch@example.test</td><td>—</td>');
    expect(recent).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(recent).not.toContain('<script>');
    // Another tenant's mail is not counted nor shown.
    expect(recent).not.toContain('sales@other.test');
  });

  it("refuses another tenant's Traffic page with 403, logged", async () => {
    const c = new PanelClient(t.http);
    await c.login('alice@example.test', 'wonderland');
    const res = await c.get('/t/other.test/traffic');
    expect(res.status).toBe(403);
    expect(res.text).not.toContain('sales@other.test');
    expect(t.logs().some((l) => l.msg === 'panel request refused' && l.tenant === 'other.test' && l.user === 'alice@example.test')).toBe(true);
  });
});
