import { Client, FTPError } from 'basic-ftp';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sumMetric } from '../../../src/cli/commands/status.ts';
import { hashPassword } from '../../../src/lib/password.ts';
import { rawRequest } from '../../helpers/http.ts';
import { queueDrained, smtpPort, startSink, type MailSink } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite;
let sink: MailSink;
let admin: string;
const scrape = async () => (await fetch(`${admin}/metrics`)).text();
/** One sample: the series `name{labels}` exactly as exposed (0 when absent). */
const sample = (text: string, series: string) => Number(new RegExp(`^${series.replace(/[{}.+]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);

beforeAll(async () => {
  sink = await startSink();
  t = await startTestSuite({
    main: { admin: { listen: '127.0.0.1:0' }, smtp: { listen: ['127.0.0.1:0'], relay: sink.url }, ftp: { lockout: { failures: 2 } } },
    tenants: {
      'a.test': { domains: ['a.test'], ftp: [{ user: 'ann', password: await hashPassword('right-pass') }], mail: { forward: { info: ['owner@elsewhere.test'] } } },
      'b.test': { domains: ['b.test'], suspended: true, ftp: [{ user: 'bob', password: await hashPassword('bob-pass') }] },
    },
    files: { 'a.test/index.html': 'A' },
  });
  admin = t.suite.urls.admin![0]!;
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

async function ftpLogin(user: string, password: string): Promise<boolean> {
  const u = new URL(t.ftp!);
  const c = new Client();
  try {
    await c.access({ host: u.hostname, port: Number(u.port), user, password });
    return true;
  } catch (err) {
    if (err instanceof FTPError && err.code === 530) return false;
    throw err;
  } finally {
    c.close();
  }
}

describe('metrics after real traffic', () => {
  it('SMTP sessions, accepted by tenant, refused by reason; FTP logins by tenant and result; latency histograms; process metrics', async () => {
    const before = await scrape();

    for (let i = 0; i < 4; i++) await rawRequest(t.http, '/', { host: 'a.test' });
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort(t.suite), secure: false, ignoreTLS: true });
    await transport.sendMail({ from: 'x@visitor.test', to: 'info@a.test', subject: 's', text: 'one' });
    // Refusals at RCPT: a foreign address (relay) and unknown local parts, many different ones.
    await expect(transport.sendMail({ from: 'x@visitor.test', to: 'someone@elsewhere.test', text: 'no' })).rejects.toThrow(/5\.7\.1/);
    for (let i = 0; i < 5; i++) await expect(transport.sendMail({ from: 'x@visitor.test', to: `nobody${i}@a.test`, text: 'no' })).rejects.toThrow(/5\.1\.1/);
    transport.close();
    await waitFor(() => sink.messages.length >= 1, 10_000, 'the message at the relay');
    await queueDrained(t.suite);
    expect(await ftpLogin('ann@a.test', 'right-pass')).toBe(true);
    expect(await ftpLogin('ann@a.test', 'wrong-pass')).toBe(false);
    expect(await ftpLogin('mallory@nowhere.test', 'x')).toBe(false);
    expect(await ftpLogin('ann@a.test', 'wrong-again')).toBe(false); // the second failure locks ann from here
    expect(await ftpLogin('ann@a.test', 'right-pass')).toBe(false);
    expect(await ftpLogin('bob@b.test', 'bob-pass')).toBe(false);

    const after = await scrape();
    const delta = (series: string) => sample(after, series) - sample(before, series);
    expect(delta('makewaves_smtp_sessions_total')).toBe(7);
    expect(delta('makewaves_smtp_messages_accepted_total{tenant="a.test"}')).toBe(1);
    expect(delta('makewaves_smtp_refused_total{reason="relay-denied"}')).toBe(1);
    expect(delta('makewaves_smtp_refused_total{reason="unknown-user"}')).toBe(5);
    expect(delta('makewaves_ftp_logins_total{tenant="a.test",result="ok"}')).toBe(1);
    expect(delta('makewaves_ftp_logins_total{tenant="a.test",result="failed"}')).toBe(2);
    expect(delta('makewaves_ftp_logins_total{tenant="a.test",result="locked"}')).toBe(1);
    expect(delta('makewaves_ftp_logins_total{tenant="b.test",result="suspended"}')).toBe(1);
    expect(delta('makewaves_ftp_logins_total{tenant="_unknown",result="failed"}')).toBe(1);
    expect(delta('makewaves_http_request_duration_seconds_count')).toBe(4);
    expect(sample(after, 'makewaves_http_request_duration_seconds_bucket{le="+Inf"}')).toBe(sample(after, 'makewaves_http_request_duration_seconds_count'));
    expect(delta('makewaves_mail_delivery_duration_seconds_count')).toBe(1);
    expect(sample(after, 'makewaves_mail_delivery_duration_seconds_sum')).toBeGreaterThan(0);
    // prom-client's default process and Node.js metrics.
    expect(sumMetric(after, 'process_cpu_user_seconds_total').get('')).toBeGreaterThan(0);
    expect(after).toMatch(/^nodejs_eventloop_lag_seconds \S+$/m);
    expect(after).toMatch(/^nodejs_heap_size_used_bytes \S+$/m);
    // Bounded label sets: no address, local part or client IP ever becomes a label value.
    expect(after).not.toMatch(/\{[^}]*(@|nobody\d|127\.0\.0\.1)[^}]*\}/);
  });
});
