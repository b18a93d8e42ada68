import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Srs } from '../../../src/mail/srs.ts';
import { haveSwaks, type MailSink, RawSmtp, smtpPort, startSink, swaks } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

// An SRS address carries bounces back to the original sender, nothing
// else: mail to it is taken only from the null reverse-path (DSNs and
// RFC 3834 auto-replies), with a good hash and a day stamp inside the
// window. Anything else would make every SRS address we ever wrote an
// open relay to its original sender.

const DAY = 86_400_000;
let sink: MailSink;
let t: TestSuite;
let port: number;
let srsAt: (daysAgo: number) => Srs;

beforeAll(async () => {
  sink = await startSink();
  t = await startTestSuite({
    main: { smtp: { listen: ['127.0.0.1:0'], relay: sink.url, srsMaxAgeDays: 30 } },
    tenants: { 'a.test': { domains: ['a.test'], mail: { forward: { info: 'alice@remote.test' } } } },
  });
  port = smtpPort(t.suite);
  const key = Buffer.from(readFileSync(path.join(t.dataDir, 'srs.key'), 'utf8').trim(), 'hex');
  srsAt = (daysAgo) => new Srs(key, 'mx.test', () => Date.now() - daysAgo * DAY);
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

function local(address: string): string {
  return address.slice(0, address.lastIndexOf('@'));
}

/** Flips the case of every letter of the hash (an MTA that folds local parts). */
function mangleHash(address: string): string {
  return address.replace(/^(SRS0=)([^=]+)/, (_m, p: string, h: string) => p + [...h].map((c) => (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase())).join(''));
}

describe('mail to an SRS address', () => {
  const table: Array<[string, string, () => string, RegExp]> = [
    ['non-null sender, good hash', 'spammer@evil.test', () => srsAt(0).forward('a@visitor.test'), /^550 5\.7\.1 .*only bounces/],
    ['null sender, good hash', '', () => srsAt(0).forward('a@visitor.test'), /^250 /],
    ['null sender, hash of another address', '', () => srsAt(0).forward('a@visitor.test').replace('=a@', '=b@'), /^550 5\.7\.1 .*SRS hash does not match/],
    ['null sender, forged hash', '', () => srsAt(0).forward('a@visitor.test').replace(/^SRS0=[^=]+/, 'SRS0=AAAAAA'), /^550 5\.7\.1 .*SRS hash does not match/],
    ['null sender, inside the configured 30-day window', '', () => srsAt(29).forward('a@visitor.test'), /^250 /],
    ['null sender, expired stamp', '', () => srsAt(31).forward('a@visitor.test'), /^550 5\.7\.1 .*expired/],
    ['non-null sender, expired stamp', 'spammer@evil.test', () => srsAt(31).forward('a@visitor.test'), /^550 5\.7\.1 /],
    ['null sender, case-mangled hash', '', () => mangleHash(srsAt(0).forward('a@visitor.test')), /^250 /],
    ['null sender, whole address upper-cased', '', () => srsAt(0).forward('a@visitor.test').toUpperCase(), /^250 /],
    ['null sender, SRS1 (never written by us)', '', () => `SRS1=abcdef=forwarder.test==${local(srsAt(0).forward('a@visitor.test')).slice(5)}@mx.test`, /^550 5\.7\.1 /],
    ['non-null sender, SRS1', 'spammer@evil.test', () => 'SRS1=abcdef=forwarder.test==AAAAAA=AA=visitor.test=a@mx.test', /^550 5\.7\.1 /],
    ['postmaster sender, good hash', 'postmaster@remote.test', () => srsAt(0).forward('a@visitor.test'), /^550 5\.7\.1 /],
  ];
  it.each(table)('%s', async (_name, from, rcpt, want) => {
    const c = await RawSmtp.connect(port);
    await c.cmd('EHLO client.test');
    expect(await c.cmd(`MAIL FROM:<${from}>`)).toMatch(/^250/);
    expect(await c.cmd(`RCPT TO:<${rcpt()}>`)).toMatch(want);
    c.close();
  });

  it('logs a refused non-bounce with who and why', () => {
    const line = t.logs().find((l) => l.msg === 'RCPT refused: srs-not-bounce');
    expect(line).toMatchObject({ remote: '127.0.0.1', from: 'spammer@evil.test' });
  });
});

describe.skipIf(!haveSwaks)('SRS as a relay, with swaks (install the Debian package swaks)', () => {
  it('refuses a forged sender at RCPT and delivers nothing; a real bounce still reaches the original sender', async () => {
    const srs = srsAt(0).forward('a@visitor.test');
    const before = sink.messages.length;
    const spam = await swaks(port, '--from', 'spammer@evil.test', '--to', srs, '--header', 'From: ceo@bank.test');
    expect(spam.out).toMatch(/<\*\* 550 5\.7\.1 .*only bounces/);
    expect(spam.code).not.toBe(0);

    const bounce = await swaks(port, '--from', '<>', '--to', srs, '--header', 'Subject: Undelivered Mail Returned to Sender');
    expect(bounce.code).toBe(0);
    const m = await waitFor(() => sink.messages.slice(before).find((x) => x.to.includes('a@visitor.test')), 5_000, 'the bounce');
    expect(m.from).toBe('');
    expect(sink.messages.slice(before)).toHaveLength(1);
  });
});

describe('greeting', () => {
  it('names the protocol once', async () => {
    const c = await RawSmtp.connect(port);
    expect(c.greeting).toBe('220 mx.test ESMTP makewaves');
    c.close();
  });
});
