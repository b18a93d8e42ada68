import nodemailer from 'nodemailer';
import { hashPassword } from '../../src/lib/password.ts';
import { call } from './cgi.ts';
import { queueDrained, smtpPort, type MailSink } from './mailsink.ts';
import { waitFor, type TestSuite } from './suite.ts';

/**
 * The tenant a.test as every service serves it: FTP user ann@a.test with
 * `ftpPassword`, info@a.test forwarded to owner@elsewhere.test, its contact
 * form mailed to the same. For a suite whose SMTP relays to a sink.
 */
export async function everyServiceTenant(ftpPassword: string): Promise<Record<string, unknown>> {
  return {
    domains: ['a.test'],
    ftp: [{ user: 'ann', password: await hashPassword(ftpPassword) }],
    mail: { forward: { info: ['owner@elsewhere.test'] } },
    forms: { recipients: ['owner@elsewhere.test'] },
  };
}

/**
 * Mail of both kinds for {@link everyServiceTenant}: one message through
 * SMTP to info@a.test and one contact form POSTed to a.test's formmail
 * handler (answered 200, or this throws); resolves once both reached
 * `sink` and the queue is empty.
 */
export async function mailAndForm(t: TestSuite, sink: MailSink): Promise<void> {
  const before = sink.messages.length;
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort(t.suite), secure: false, ignoreTLS: true });
  await transport.sendMail({ from: 'x@visitor.test', to: 'info@a.test', subject: 's', text: 'one' });
  transport.close();
  const form = await call(t.http, 'a.test', '/cgi-bin/formmail', {
    method: 'POST',
    body: new URLSearchParams({ name: 'V', email: 'v@visitor.test', message: 'two' }).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  if (form.status !== 200) throw new Error(`the form was answered ${form.status}: ${await form.text()}`);
  await waitFor(() => sink.messages.length >= before + 2, 10_000, 'both messages at the relay');
  await queueDrained(t.suite);
}
