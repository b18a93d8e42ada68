import { readdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MailSink, RawSmtp, startRelaySuite, stopRelaySuite } from '../../helpers/mailsink.ts';
import { waitFor, type TestSuite } from '../../helpers/suite.ts';

let sink: MailSink;
let t: TestSuite;
let port: number;

beforeAll(async () => {
  ({ sink, t, port } = await startRelaySuite({
    smtp: { maxMessageBytes: 1024 * 1024 },
    tenants: { 'a.test': { domains: ['a.test'], mail: { forward: { info: 'alice@remote.test' } } } },
  }));
});
afterAll(() => stopRelaySuite(t, sink));

function spoolFiles(): string[] {
  return readdirSync(path.join(t.dataDir, 'spool', 'q'));
}

/** One transaction over a raw socket; returns the reply to the final dot. */
async function send(body: string | Buffer, mailFrom = 'MAIL FROM:<s@elsewhere.test>', rcpt = 'info@a.test'): Promise<string> {
  const c = await RawSmtp.connect(port);
  await c.cmd('EHLO client.test');
  expect(await c.cmd(mailFrom)).toMatch(/^250/);
  expect(await c.cmd(`RCPT TO:<${rcpt}>`)).toMatch(/^250/);
  expect(await c.cmd('DATA')).toMatch(/^354/);
  c.send(body);
  const r = await c.cmd('\r\n.');
  c.close();
  return r;
}

describe('lines longer than 998 octets (RFC 5322 §2.1.1)', () => {
  const table: Array<[string, () => string, RegExp]> = [
    ['a 200 KB body line', () => `Subject: long\r\n\r\nstart\r\n${'x'.repeat(200 * 1024)}\r\nend`, /^554 5\.6\.0 /],
    ['a 999-octet body line', () => `Subject: long\r\n\r\n${'y'.repeat(999)}`, /^554 5\.6\.0 /],
    ['a 999-octet header line', () => `Subject: ${'z'.repeat(990)}\r\n\r\nbody`, /^554 5\.6\.0 /],
    ['a long line split by bare LFs (normalised to short lines)', () => `Subject: ok\r\n\r\n${'w'.repeat(900)}\n${'w'.repeat(900)}`, /^250 /],
    ['a 998-octet line', () => `Subject: edge\r\n\r\n${'v'.repeat(998)}`, /^250 /],
  ];
  it.each(table)('%s', async (_name, body, want) => {
    const queued = t.suite.state.mailQueue.count();
    const before = sink.messages.length;
    const r = await send(body());
    expect(r).toMatch(want);
    if (r.startsWith('554')) {
      expect(r).toMatch(/line longer than 998/);
      // Nothing half-stored: no queue row, nothing new in the spool, nothing sent on.
      expect(t.suite.state.mailQueue.count()).toBe(queued);
      expect(readdirSync(path.join(t.dataDir, 'spool', 'tmp'))).toEqual([]);
      expect(sink.messages.length).toBe(before);
    } else {
      await waitFor(() => sink.messages.length > before, 5_000, 'the forwarded message');
    }
  });

  it('logs the refusal with the sender and the longest line', () => {
    expect(t.logs().find((l) => l.msg === 'message refused: a line is longer than 998 octets')).toMatchObject({ from: 's@elsewhere.test', longestLine: 200 * 1024, remote: '127.0.0.1' });
    expect(spoolFiles().every((f) => /^[GM]/.test(f))).toBe(true);
  });
});
