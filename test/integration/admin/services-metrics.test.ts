import { Readable } from 'node:stream';
import { Client } from 'basic-ftp';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sumMetric } from '../../../src/cli/commands/status.ts';
import { hashPassword } from '../../../src/lib/password.ts';
import { freePort } from '../../../src/lib/listen.ts';
import { boxMissing, call } from '../../helpers/cgi.ts';
import { queueDrained, smtpPort, startSink, type MailSink } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite;
let sink: MailSink;
let admin: string;
const metrics = async () => (await fetch(`${admin}/metrics`)).text();

beforeAll(async () => {
  sink = await startSink();
  t = await startTestSuite({
    main: { admin: { listen: `127.0.0.1:${await freePort()}` }, smtp: { listen: ['127.0.0.1:0'], relay: sink.url }, ftp: {} },
    tenants: {
      'a.test': {
        domains: ['a.test'],
        ftp: [{ user: 'ann', password: await hashPassword('metrics-pass') }],
        mail: { forward: { info: ['owner@elsewhere.test'] } },
        forms: { recipients: ['owner@elsewhere.test'] },
      },
    },
    files: { 'a.test/index.html': 'A' },
  });
  admin = t.suite.urls.admin![0]!;
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

describe.skipIf(boxMissing)('metrics of every service', () => {
  it('count a known workload: mail deliveries, the queue, FTP bytes and sessions, handler runs', async () => {
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort(t.suite), secure: false, ignoreTLS: true });
    await transport.sendMail({ from: 'x@visitor.test', to: 'info@a.test', subject: 's', text: 'one' });
    transport.close();
    const form = await call(t.http, 'a.test', '/cgi-bin/formmail', {
      method: 'POST',
      body: new URLSearchParams({ name: 'V', email: 'v@visitor.test', message: 'two' }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(form.status).toBe(200);
    await waitFor(() => sink.messages.length >= 2, 10_000, 'both messages at the relay');
    await queueDrained(t.suite);

    const u = new URL(t.ftp!);
    const c = new Client();
    await c.access({ host: u.hostname, port: Number(u.port), user: 'ann@a.test', password: 'metrics-pass' });
    const during = await metrics();
    expect(sumMetric(during, 'makewaves_ftp_sessions').get('')).toBe(1);
    await c.uploadFrom(Readable.from([Buffer.alloc(1234, 'x')]), 'up.bin');
    c.close();

    const text = await metrics();
    expect(sumMetric(text, 'makewaves_mail_deliveries_total', 'result').get('sent')).toBe(2);
    expect(sumMetric(text, 'makewaves_mail_queue_messages').get('')).toBe(0);
    expect(sumMetric(text, 'makewaves_mail_queue_oldest_seconds').get('')).toBe(0);
    expect(sumMetric(text, 'makewaves_ftp_bytes_total', 'direction').get('in')).toBe(1234);
    expect(text).toContain('makewaves_handler_runs_total{tenant="a.test",result="ok"} 1');
  });
});
