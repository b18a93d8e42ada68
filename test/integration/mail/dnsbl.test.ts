import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queryName } from '../../../src/mail/dnsbl.ts';
import { startDnsServer, type DnsServer } from '../../helpers/dnsserver.ts';
import { haveSwaks, smtpPort, startSink, swaks, type MailSink } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite;
let sink: MailSink;
let dns: DnsServer;

beforeAll(async () => {
  dns = await startDnsServer();
  sink = await startSink();
  t = await startTestSuite({
    main: {
      dns: { servers: [`127.0.0.1:${dns.port}`], timeout: 0.5 },
      smtp: { listen: ['127.0.0.1:0'], relay: sink.url, waitForNextHop: 0 },
      spam: { dnsbl: ['bl.test', { zone: 'own.test', url: 'https://own.test/lookup' }] },
    },
    tenants: { 'a.test': { domains: ['a.test'], mail: { forward: { info: 'alice@remote.test' } } } },
  });
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
  await dns?.close();
});

const send = () => swaks(smtpPort(t.suite), '--from', 'x@sender.test', '--to', 'info@a.test', '--header', 'Subject: dnsbl');

describe('the reversed name asked of a blocklist (RFC 5782 §2.1, §2.4)', () => {
  it.each([
    ['192.0.2.99', 'bl.test', '99.2.0.192.bl.test'],
    ['::ffff:192.0.2.99', 'bl.test', '99.2.0.192.bl.test'],
    ['2001:db8:1:2:3:4:567:89ab', 'bl.test', 'b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test'],
    ['2001:db8::1', 'bl.test', `1.${'0.'.repeat(23)}8.b.d.0.1.0.0.2.bl.test`],
    ['not an ip', 'bl.test', undefined],
  ])('%s in %s → %s', (ip, zone, name) => expect(queryName(ip, zone)).toBe(name));
});

describe.skipIf(!haveSwaks)('DNS blocklists at connect', () => {
  it('lets an unlisted client in', async () => {
    expect((await send()).out).toMatch(/<-\s+250 2\.6\.0 Ok: queued/);
  });

  it("refuses a listed client before its greeting with 554 5.7.1 and the list's URL (from its TXT record)", async () => {
    dns.zone.set('1.0.0.127.bl.test', { a: ['127.0.0.2'], txt: [['Listed: see https://bl.test/query/ip/127.0.0.1']] });
    try {
      const r = await send();
      expect(r.out).toMatch(/<\*\*\s+554 5\.7\.1 Service unavailable; client host \[127\.0\.0\.1\] blocked using bl\.test; see https:\/\/bl\.test\/query\/ip\/127\.0\.0\.1/);
      expect(r.out).not.toMatch(/EHLO/);
      expect(t.logs().some((l) => l.msg === 'refused: listed by the DNS blocklist bl.test' && l.answer === '127.0.0.2')).toBe(true);
    } finally {
      dns.zone.delete('1.0.0.127.bl.test');
    }
  });

  it('uses the URL given in the config when there is one', async () => {
    dns.zone.set('1.0.0.127.own.test', { a: ['127.0.0.4'] });
    try {
      expect((await send()).out).toMatch(/<\*\*\s+554 5\.7\.1 .*blocked using own\.test; see https:\/\/own\.test\/lookup/);
    } finally {
      dns.zone.delete('1.0.0.127.own.test');
    }
  });

  it("a list's own error code (127.255.255.x) or a list that does not answer lets the client in", async () => {
    dns.zone.set('1.0.0.127.bl.test', { a: ['127.255.255.254'] });
    dns.zone.set('1.0.0.127.own.test', { silent: true });
    try {
      expect((await send()).out).toMatch(/<-\s+250 /);
      await waitFor(() => t.logs().find((l) => l.msg === 'DNS blocklist not answered; the client is let in' && l.zone === 'own.test'), 5_000, 'the log line');
    } finally {
      dns.zone.delete('1.0.0.127.bl.test');
      dns.zone.delete('1.0.0.127.own.test');
    }
  });
});
