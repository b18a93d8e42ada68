import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { cli } from '../../helpers/cli.ts';
import { startSink, type MailSink } from '../../helpers/mailsink.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';
import { logLine, PANEL_HOST, PanelClient } from './helpers.ts';

// Bad input in the panel: markup in every field that is shown back, and the
// forward fan-out limits (panel.limits), refused next to their field in the
// words of the tenant-file editor, which the CLI is not bound by.

let t: TestSuite;
let sink: MailSink;
let c: PanelClient;
let csrf: string;
const FILE = () => path.join(t.configDir, 'tenants', 'example.test.yaml');

beforeAll(async () => {
  sink = await startSink();
  t = await startTestSuite({
    main: {
      panel: { host: PANEL_HOST, limits: { forwardTargets: 2, forwards: 3, formsRecipients: 2 } },
      smtp: { listen: ['127.0.0.1:0'], relay: sink.url },
    },
    tenants: {
      'example.test': {
        domains: ['example.test'],
        ftp: [{ user: 'alice', password: await hashPassword('wonderland') }],
        mail: { forward: { info: ['alice@example.net'] }, lists: { news: { owner: 'owner@example.net' } } },
        forms: { recipients: ['alice@example.net'] },
      },
    },
  });
  c = new PanelClient(t.http);
  await c.login('alice@example.test', 'wonderland');
  csrf = await c.csrf('/t/example.test/forwards');
}, 30_000);
afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

const X = '"><script>alert(1)</script><img src=x onerror=alert(2)>';
const XE = '&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;';

describe('markup in every field shown back is escaped', () => {
  const yesterday = () => new Date(Date.now() - 86_400_000);
  const CASES: Array<{ field: string; show: () => Promise<string> }> = [
    { field: 'forward Address (refused, typed value shown again)', show: async () => (await c.post('/t/example.test/forwards', { csrf, address: X, targets: 'a@example.net' })).text },
    { field: 'Forward to (refused, typed value and sentence shown)', show: async () => (await c.post('/t/example.test/forwards', { csrf, address: 'x', targets: X })).text },
    { field: 'Catch-all to', show: async () => (await c.post('/t/example.test/catchall', { csrf, catchAll: X })).text },
    { field: 'forms Recipient', show: async () => (await c.post('/t/example.test/forms', { csrf, address: X })).text },
    { field: 'list Member address', show: async () => (await c.post('/t/example.test/lists/news/members', { csrf, address: X })).text },
    {
      field: 'log lines: pages, referrers and 404s',
      show: async () => {
        const dir = path.join(t.dataDir, 'logs', 'example.test');
        mkdirSync(dir, { recursive: true });
        const day = yesterday().toISOString().slice(0, 10);
        writeFileSync(
          path.join(dir, `access.log.${day}`),
          logLine({ when: yesterday(), path: `/${X}`, status: 200, bytes: 1, referer: `https://evil.example/${X}` }) + logLine({ when: yesterday(), path: `/gone${X}`, status: 404, bytes: 1 }),
        );
        return (await c.get('/t/example.test/traffic')).text;
      },
    },
    {
      field: 'delivery records: address, target, sender, reply',
      show: async () => {
        t.suite.state.mailStats.record({ tenant: 'example.test', kind: 'bounced', address: `info${X}@example.test`, target: `t${X}@example.net`, sender: `s${X}@example.org`, reply: `550 ${X}` });
        return (await c.get('/t/example.test/traffic')).text;
      },
    },
    {
      field: 'form submissions: remote, handler, subject, text',
      show: async () => {
        t.suite.state.forms.add({ tenant: 'example.test', remote: X, handler: `h${X}`, recipients: [`r${X}@example.net`], subject: X, text: X, queueId: 'q1' });
        return (await c.get('/t/example.test/forms')).text;
      },
    },
  ];

  it.each(CASES)('$field', async ({ show }) => {
    const html = await show();
    expect(html).toContain(XE);
    expect(html).not.toContain('<script>alert');
    expect(html).not.toContain('<img src=x');
  });
});

describe('forward fan-out limits (panel.limits)', () => {
  it('refuses more targets per forward, and more forwards in all, next to the field; the file stays as it was', async () => {
    const before = readFileSync(FILE(), 'utf8');
    const three = await c.post('/t/example.test/forwards', { csrf, address: 'sales', targets: 'a@example.net, b@example.net, c@example.net' });
    expect(three.status).toBe(400);
    expect(three.text).toContain(
      '<p class="error" id="targets-error">tenant &quot;example.test&quot;: mail.forward.sales: 3 targets, more than the 2 a forward may have (panel.limits.forwardTargets); nothing changed</p>',
    );
    expect(readFileSync(FILE(), 'utf8')).toBe(before);

    expect((await c.post('/t/example.test/forwards', { csrf, address: 'sales', targets: 'a@example.net, b@example.net' })).status).toBe(303);
    const third = await c.post('/t/example.test/forwards', { csrf, address: 'sales', targets: 'c@example.net' });
    expect(third.status).toBe(400);
    expect(third.text).toContain('id="targets-error">tenant &quot;example.test&quot;: mail.forward.sales: 3 targets, more than the 2');

    expect((await c.post('/t/example.test/forwards', { csrf, address: 'help', targets: 'h@example.net' })).status).toBe(303);
    const fourth = await c.post('/t/example.test/forwards', { csrf, address: 'jobs', targets: 'j@example.net' });
    expect(fourth.status).toBe(400);
    expect(fourth.text).toContain('<p class="error" id="address-error">tenant &quot;example.test&quot;: mail.forward: 4 forwards, more than the 3 allowed (panel.limits.forwards); nothing changed</p>');
    expect(Object.keys(t.suite.registry().tenants.get('example.test')!.config.mail!.forward)).toEqual(['info', 'sales', 'help']);
    expect(t.logs().some((l) => l.msg === 'panel forward change refused' && String(l.why).includes('panel.limits.forwards'))).toBe(true);

    // The operator is not bound by the customers' limits.
    const op = await cli('alias', 'add', 'jobs@example.test', 'j@example.net', '--config', t.configDir);
    expect(op.code, op.err).toBe(0);
  });
});

describe('forms recipients limit (panel.limits.formsRecipients)', () => {
  it('refuses more recipients than the limit next to the field; the file stays as it was; the CLI is not bound', async () => {
    expect((await c.post('/t/example.test/forms', { csrf, address: 'second@example.net' })).status).toBe(303);
    const before = readFileSync(FILE(), 'utf8');
    const third = await c.post('/t/example.test/forms', { csrf, address: 'third@example.net' });
    expect(third.status).toBe(400);
    expect(third.text).toContain(
      '<p class="error" id="recipient-error">tenant &quot;example.test&quot;: forms.recipients: 3 addresses, more than the 2 allowed (panel.limits.formsRecipients); nothing changed</p>',
    );
    expect(readFileSync(FILE(), 'utf8')).toBe(before);
    expect(t.suite.registry().tenants.get('example.test')!.config.forms!.recipients).toEqual(['alice@example.net', 'second@example.net']);
    expect(t.logs().some((l) => l.msg === 'panel forms change refused' && String(l.why).includes('panel.limits.formsRecipients'))).toBe(true);

    const op = await cli('forms', 'recipients', 'add', 'example.test', 'third@example.net', '--config', t.configDir);
    expect(op.code, op.err).toBe(0);
  });
});
