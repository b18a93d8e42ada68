import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boxMissing, call } from '../../helpers/cgi.ts';
import { startSink, type MailSink } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

// FormMail end to end, as main.ts wires it: HTTP → sandboxed handler → the
// durable mail queue → a real SMTP relay (the sink).

let t: TestSuite;
let sink: MailSink;
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

beforeAll(async () => {
  sink = await startSink();
  t = await startTestSuite({
    main: { smtp: { listen: ['127.0.0.1:0'], relay: sink.url } },
    tenants: { 'example.test': { domains: ['example.test'], forms: { recipients: ['alice@example.net'] } } },
    files: { 'example.test/index.html': 'home' },
  });
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

describe.skipIf(boxMissing)('FormMail through the real queue', () => {
  it('delivers a visitor form to the site owner only', async () => {
    const body = new URLSearchParams({ name: 'Vera', email: 'vera@visitor.test', message: 'Please call me back', recipient: 'mallory@evil.test' }).toString();
    const res = await call(t.http, 'example.test', '/cgi-bin/formmail', { method: 'POST', body, headers: FORM });
    const page = await res.text();
    // A recipient outside forms.recipients is refused, never used.
    expect(res.status).toBe(400);
    expect(page).not.toContain('Thank you');

    const ok = await call(t.http, 'example.test', '/cgi-bin/formmail', {
      method: 'POST',
      body: new URLSearchParams({ name: 'Vera', email: 'vera@visitor.test', message: 'Please call me back' }).toString(),
      headers: FORM,
    });
    expect(ok.status).toBe(200);
    const msg = await waitFor(() => sink.messages.find((m) => m.raw.toString().includes('Please call me back')), 10_000, 'the form mail at the relay');
    expect(msg.to).toEqual(['alice@example.net']);
    expect(msg.raw.toString()).toMatch(/^Reply-To: .*vera@visitor\.test/m);
    expect(sink.messages.some((m) => m.to.includes('mallory@evil.test'))).toBe(false);
  });

  it('refuses a header injection attempt, and nothing reaches the relay', async () => {
    const before = sink.messages.length;
    const res = await call(t.http, 'example.test', '/cgi-bin/formmail', {
      method: 'POST',
      body: new URLSearchParams({ name: 'x', email: 'x@visitor.test\r\nBcc: victim@elsewhere.test', message: 'spam' }).toString(),
      headers: FORM,
    });
    expect(res.status).toBe(400);
    // Give the queue every chance to (wrongly) deliver: a known-good message sent after must arrive alone.
    await call(t.http, 'example.test', '/cgi-bin/formmail', {
      method: 'POST',
      body: new URLSearchParams({ name: 'y', email: 'y@visitor.test', message: 'marker after injection' }).toString(),
      headers: FORM,
    });
    await waitFor(() => sink.messages.some((m) => m.raw.toString().includes('marker after injection')), 10_000, 'the marker message');
    expect(sink.messages.length).toBe(before + 1);
    expect(sink.messages.some((m) => m.to.includes('victim@elsewhere.test') || m.raw.toString().includes('victim@elsewhere.test'))).toBe(false);
  });
});
