import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boxMissing, call } from '../../helpers/cgi.ts';
import { runCli } from '../../helpers/cli.ts';
import { queueDrained, startSink, type MailSink } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite;
let sink: MailSink;

beforeAll(async () => {
  sink = await startSink();
  sink.rcptReply.set('gone@remote.test', [550, '5.1.1 <gone@remote.test>: no such user']);
  sink.rcptReply.set('busy@remote.test', [451, '4.2.1 mailbox busy']);
  t = await startTestSuite({
    main: { smtp: { listen: ['127.0.0.1:0'], relay: sink.url, queue: { minBackoff: 3600, maxBackoff: 3600 } } },
    tenants: { 'a.test': { domains: ['a.test'], forms: { recipients: ['owner@remote.test', 'gone@remote.test', 'busy@remote.test'] } } },
  });
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

async function submit(to: string, subject: string): Promise<void> {
  // formmail takes the recipient from the form's `recipient` field, checked against forms.recipients.
  const res = await call(t.http, 'a.test', '/cgi-bin/formmail', {
    method: 'POST',
    body: new URLSearchParams({ recipient: to, subject, name: 'Vera', email: 'vera@visitor.test', message: 'hello' }).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  expect(res.status).toBe(200);
}

const forms = async () => (await runCli('forms', 'a.test', '--config', t.configDir)).out;

describe.skipIf(boxMissing)('form submissions record what became of their mail', () => {
  it('a form mail whose next hop answers 550 is shown as bounced with the reply; no bounce is mailed to forms@', async () => {
    await submit('gone@remote.test', 'To the void');
    await waitFor(() => t.suite.state.forms.list('a.test').at(-1)?.status === 'bounced', 5_000, 'the bounce recorded');
    await queueDrained(t.suite);
    expect(t.suite.state.forms.list('a.test').at(-1)).toMatchObject({ status: 'bounced', reply: expect.stringContaining('550 5.1.1 <gone@remote.test>: no such user') });
    expect(await forms()).toMatch(/"To the void" {2}queue \S+ {2}bounced: gone@remote\.test: 550 5\.1\.1 <gone@remote\.test>: no such user\n/);
    // The customer learns from the form log; nothing went to forms@a.test.
    expect(sink.messages.filter((m) => m.to.includes('forms@a.test'))).toEqual([]);
    expect(t.logs().some((l) => l.msg === 'bounce recorded in the form log instead of mailed')).toBe(true);
  });

  it('delivered and still queued are told apart', async () => {
    await submit('owner@remote.test', 'Arrives');
    await waitFor(() => t.suite.state.forms.list('a.test').at(-1)?.status === 'delivered', 5_000, 'delivery recorded');
    await submit('busy@remote.test', 'Waits');
    await waitFor(() => t.suite.state.forms.list('a.test').at(-1)?.reply, 5_000, 'the deferral recorded');
    const out = await forms();
    expect(out).toMatch(/"Arrives" {2}queue \S+ {2}delivered\n/);
    expect(out).toMatch(/"Waits" {2}queue \S+ {2}queued \(last try: busy@remote\.test: 451 4\.2\.1 mailbox busy\)\n/);
  });
});
