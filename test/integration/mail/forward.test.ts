import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MailSink, RawSmtp, startRelaySuite, stopRelaySuite } from '../../helpers/mailsink.ts';
import { waitFor, type TestSuite } from '../../helpers/suite.ts';

let sink: MailSink;
let t: TestSuite;
let port: number;

beforeAll(async () => {
  ({ sink, t, port } = await startRelaySuite({
    smtp: { maxMessageBytes: 20_000, maxRecipients: 3 },
    tenants: {
      'a.test': {
        domains: ['a.test', 'www.a.test'],
        mail: {
          forward: {
            info: ['alice@remote.test'],
            team: ['info@a.test', 'bob@remote.test', 'sales@b.test'],
            both: ['alice@remote.test', 'info@a.test'],
          },
        },
      },
      'b.test': { domains: ['b.test'], mail: { forward: {}, catchAll: 'carol@remote.test' } },
    },
  }));
});
afterAll(() => stopRelaySuite(t, sink));

function client() {
  return nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true, name: 'client.test' });
}

describe('forwarding', () => {
  it('forwards an alias to its target through the relay, with Received: prepended and the body untouched', async () => {
    const before = sink.messages.length;
    const info = await client().sendMail({
      envelope: { from: 'sender@elsewhere.test', to: ['info@a.test'] },
      raw: 'From: sender@elsewhere.test\r\nTo: info@a.test\r\nSubject: hello\r\nDKIM-Signature: v=1; a=rsa-sha256; b=abc\r\n\r\nbody line 1\r\n.dot line\r\n',
    });
    expect(info.response).toMatch(/^250 2\.6\.0 Ok: queued as [A-Z0-9]+$/);
    const m = (await waitFor(() => sink.messages[before], 5_000, 'forwarded message'))!;
    expect(m.to).toEqual(['alice@remote.test']);
    // SRS: the envelope sender is rewritten to our domain.
    expect(m.from).toMatch(/^SRS0=[^=]+=[A-Z2-7]{2}=elsewhere\.test=sender@mx\.test$/);
    const text = m.raw.toString();
    // On top: the ARC set and our Authentication-Results (see auth.test.ts), then our Received:.
    expect(text).toMatch(/^ARC-Seal: i=1; /);
    expect(text.slice(text.indexOf('\r\nReceived: ') + 2)).toMatch(/^Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n\tby mx\.test \(makewaves\) with ESMTP id [A-Z0-9]+\r\n\tfor <info@a\.test>;\r\n\t.+\r\nFrom: sender@elsewhere\.test\r\n/);
    expect(text.slice(text.indexOf('From:'))).toBe(
      'From: sender@elsewhere.test\r\nTo: info@a.test\r\nSubject: hello\r\nDKIM-Signature: v=1; a=rsa-sha256; b=abc\r\n\r\nbody line 1\r\n.dot line\r\n',
    );
    expect(t.logs().some((l) => l.msg === 'message accepted' && l.tenant === 'a.test' && l.from === 'sender@elsewhere.test')).toBe(true);
    // The sink has the message a moment before our side hears its 250.
    await waitFor(() => t.logs().some((l) => l.msg === 'delivery attempt' && l.rcpt === 'alice@remote.test' && l.status === 'sent'), 5_000, 'the attempt log');
  });

  it('expands forwards through hosted domains and catch-alls, one copy per mailbox', async () => {
    const before = sink.messages.length;
    await client().sendMail({ envelope: { from: 'x@elsewhere.test', to: ['team@a.test', 'both@a.test'] }, raw: 'Subject: t\r\n\r\nhi\r\n' });
    const m = (await waitFor(() => sink.messages[before], 5_000, 'expanded message'))!;
    expect([...m.to].sort()).toEqual(['alice@remote.test', 'bob@remote.test', 'carol@remote.test']);
  });

  it('sends a null sender on unchanged (no SRS for bounces)', async () => {
    const before = sink.messages.length;
    const c = await RawSmtp.connect(port);
    expect(await c.cmd('EHLO client.test')).toMatch(/^250 SIZE 20000$/m);
    expect(await c.cmd('MAIL FROM:<>')).toMatch(/^250/);
    expect(await c.cmd('RCPT TO:<info@a.test>')).toMatch(/^250/);
    expect(await c.cmd('DATA')).toMatch(/^354/);
    expect(await c.cmd('Subject: bounce\r\n\r\nx\r\n.')).toMatch(/^250 2\.6\.0/);
    c.close();
    const m = (await waitFor(() => sink.messages[before], 5_000, 'message'))!;
    expect(m.from).toBe('');
  });

  it('advertises the extensions the issue asks for', async () => {
    const c = await RawSmtp.connect(port);
    const ehlo = await c.cmd('EHLO client.test');
    for (const ext of ['PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'SIZE 20000']) {
      expect(ehlo).toMatch(new RegExp(`^250[- ]${ext}$`, 'm'));
    }
    expect(ehlo).not.toMatch(/AUTH|STARTTLS/);
    c.close();
  });
});
