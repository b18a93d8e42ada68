import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addressList, mergeAddresses } from '../../../src/lists/message.ts';
import { runCli } from '../../helpers/cli.ts';
import { dkimPython, noDkimpy, verifyDkim, zoneTxt } from '../../helpers/dkim.ts';
import { startDnsServer, type DnsServer } from '../../helpers/dnsserver.ts';
import { type MailSink, startRelaySuite, stopRelaySuite } from '../../helpers/mailsink.ts';
import type { TestSuite } from '../../helpers/suite.ts';
import { headersOf, logged, mailTo, msg, sendMail } from './helpers.ts';

let sink: MailSink;
let t: TestSuite;
let port: number;
let dns: DnsServer;
const READER = 'reader@remote.test';

beforeAll(async () => {
  dns = await startDnsServer();
  // Every posters' domain lets 127.0.0.1 send (SPF), so the posts pass the inbound checks; their DMARC policies differ.
  for (const [domain, dmarc] of [
    ['strict.test', 'p=reject'],
    ['quar.test', 'p=quarantine'],
    ['loose.test', 'p=none'],
    ['orgd.test', 'p=none; sp=reject'],
    ['mail.orgd.test', undefined],
    ['broken.test', 'silent'],
    ['plain.test', undefined],
    ['a.test', 'p=reject'],
    ['once.test', 'p=reject'],
  ] as const) {
    dns.zone.set(domain, { txt: [['v=spf1 ip4:127.0.0.1 -all']] });
    if (dmarc === 'silent') dns.zone.set(`_dmarc.${domain}`, { silent: true });
    else if (dmarc) dns.zone.set(`_dmarc.${domain}`, { txt: [[`v=DMARC1; ${dmarc}`]] });
  }
  ({ sink, t, port } = await startRelaySuite({
    main: { dns: { servers: [`127.0.0.1:${dns.port}`], timeout: 0.3 } },
    tenants: {
      'a.test': {
        domains: ['a.test'],
        mail: {
          lists: {
            news: { owner: 'owner@remote.test', posting: 'open' },
            talk: { owner: 'owner@remote.test', posting: 'open', replyTo: 'list' },
            keep: { owner: 'owner@remote.test', posting: 'open', fromMunging: 'never' },
          },
        },
      },
    },
  }));
  for (const list of ['news', 'talk', 'keep']) t.suite.state.lists.addMember('a.test', list, READER, 'single', Date.now());
});
afterAll(async () => {
  await stopRelaySuite(t, sink);
  await dns?.close();
});

/** Posts `raw` from `envelope` to `list` and waits for the reader's copy. */
async function post(list: string, envelope: string, from: string, subject: string, extra = '') {
  const before = sink.messages.length;
  await sendMail(port, envelope, `${list}@a.test`, msg(from, `${list}@a.test`, subject, 'hello\r\n', extra));
  return mailTo(sink, READER, new RegExp(`^${subject}$`), before);
}

describe('address lists', () => {
  it('splits at commas outside quotes, comments and angle brackets', () => {
    expect(addressList('"Doe, Jane" <jane@x.test>, bob@y.test (Bob, the builder), <c@z.test>')).toEqual(['"Doe, Jane" <jane@x.test>', 'bob@y.test (Bob, the builder)', '<c@z.test>']);
    expect(mergeAddresses(['Vera <vera@strict.test>'], ['desk@strict.test', 'VERA@strict.test'])).toEqual(['Vera <vera@strict.test>', 'desk@strict.test']);
  });
});

describe('list posts from domains with a strict DMARC policy', () => {
  it('p=reject: From: the list, Reply-To the poster, X-Original-From, signed d=<list domain> (verified by dkimpy)', async () => {
    const m = await post('news', 'vera@strict.test', 'Vera Example <vera@strict.test>', 'from a reject domain');
    const h = headersOf(m);
    expect(h.get('from')).toEqual(['"Vera Example via news" <news@a.test>']);
    expect(h.get('reply-to')).toEqual(['Vera Example <vera@strict.test>']);
    expect(h.get('x-original-from')).toEqual(['Vera Example <vera@strict.test>']);
    expect(await logged(t, "From: rewritten to the list: the poster's domain publishes DMARC p=reject")).toMatchObject({ poster: 'vera@strict.test', domain: 'strict.test', list: 'news' });
    if (!dkimPython) return console.warn(`DKIM of the rewritten post not verified: ${noDkimpy}`);
    const records = zoneTxt((await runCli('dns', 'a.test', '--config', t.configDir)).out);
    const sigs = verifyDkim(m.raw, records);
    expect(sigs.length).toBeGreaterThan(0);
    expect(sigs.every((s) => s.d === 'a.test' && s.ok)).toBe(true);
  });

  it('uses the policy the inbound checks found at receipt: the DMARC record is asked once, by the checks, not again by the list', async () => {
    const m = await post('news', 'olga@once.test', 'Olga <olga@once.test>', 'asked once');
    expect(headersOf(m).get('from')).toEqual(['"Olga via news" <news@a.test>']);
    expect(dns.asked.filter((q) => q === '16 _dmarc.once.test')).toEqual(['16 _dmarc.once.test']);
  });

  it("p=quarantine: rewritten too, the post's own Reply-To merged after the poster (each address once)", async () => {
    const m = await post('news', 'quinn@quar.test', 'quinn@quar.test', 'from a quarantine domain', 'Reply-To: desk@quar.test, Quinn <QUINN@quar.test>\r\n');
    const h = headersOf(m);
    expect(h.get('from')).toEqual(['"quinn via news" <news@a.test>']);
    expect(h.get('reply-to')).toEqual(['quinn@quar.test, desk@quar.test']);
    expect(h.get('x-original-from')).toEqual(['quinn@quar.test']);
  });

  it('a subdomain takes its organisational domain\'s sp=reject', async () => {
    const m = await post('news', 'sam@mail.orgd.test', 'Sam <sam@mail.orgd.test>', 'from a subdomain');
    expect(headersOf(m).get('from')).toEqual(['"Sam via news" <news@a.test>']);
  });

  it('replyTo: list keeps Reply-To the list and puts the poster in Cc', async () => {
    const m = await post('talk', 'vera@strict.test', 'Vera <vera@strict.test>', 'to a reply-to-list list', 'Cc: other@remote.test\r\n');
    const h = headersOf(m);
    expect(h.get('from')).toEqual(['"Vera via talk" <talk@a.test>']);
    expect(h.get('reply-to')).toEqual(['<talk@a.test>']);
    expect(h.get('cc')).toEqual(['Vera <vera@strict.test>, other@remote.test']);
  });

  it('p=none, no DMARC record, or fromMunging: never: From: unchanged, no X-Original-From', async () => {
    for (const [list, from, subject] of [
      ['news', 'Lou <lou@loose.test>', 'from a p=none domain'],
      ['news', 'pat@plain.test', 'from a domain without DMARC'],
      ['keep', 'Vera <vera@strict.test>', 'to a list that never rewrites'],
    ] as const) {
      const m = await post(list, /<(.*)>/.exec(from)?.[1] ?? from, from, subject);
      expect(headersOf(m).get('from')).toEqual([from]);
      expect(headersOf(m).has('x-original-from')).toBe(false);
      expect(headersOf(m).has('reply-to')).toBe(false);
    }
  });

  it("a poster from one of the suite's own domains keeps From: (the copies are signed with that domain's key and pass its DMARC)", async () => {
    const m = await post('news', 'alice@a.test', 'Alice <alice@a.test>', 'from our own p=reject domain');
    expect(headersOf(m).get('from')).toEqual(['Alice <alice@a.test>']);
    if (!dkimPython) return console.warn(`DKIM of the post not verified: ${noDkimpy}`);
    const sigs = verifyDkim(m.raw, zoneTxt((await runCli('dns', 'a.test', '--config', t.configDir)).out));
    expect(sigs.length).toBeGreaterThan(0);
    expect(sigs.every((s) => s.d === 'a.test' && s.ok)).toBe(true);
  });

  it('a DMARC lookup that fails leaves From: unchanged and says so in the log', async () => {
    const m = await post('news', 'bo@broken.test', 'Bo <bo@broken.test>', 'from a domain whose DNS does not answer');
    expect(headersOf(m).get('from')).toEqual(['Bo <bo@broken.test>']);
    expect(await logged(t, "post distributed with its From: unchanged: the DMARC policy of the poster's domain could not be looked up")).toMatchObject({ poster: 'bo@broken.test', domain: 'broken.test' });
  });
});
