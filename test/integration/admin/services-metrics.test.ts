import { Readable } from 'node:stream';
import { Client } from 'basic-ftp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sumMetric } from '../../../src/cli/commands/status.ts';
import { boxMissing } from '../../helpers/cgi.ts';
import { startSink, type MailSink } from '../../helpers/mailsink.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';
import { everyServiceTenant, mailAndForm } from '../../helpers/workload.ts';

let t: TestSuite;
let sink: MailSink;
let admin: string;
const metrics = async () => (await fetch(`${admin}/metrics`)).text();

beforeAll(async () => {
  sink = await startSink();
  t = await startTestSuite({
    main: { admin: { listen: '127.0.0.1:0' }, smtp: { listen: ['127.0.0.1:0'], relay: sink.url }, ftp: {} },
    tenants: {
      'a.test': await everyServiceTenant('metrics-pass'),
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
    await mailAndForm(t, sink);

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
