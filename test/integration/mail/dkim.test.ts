import { statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../helpers/cgi.ts';
import { runCli } from '../../helpers/cli.ts';
import { dkimPython, noDkimpy, verifyDkim, zoneTxt } from '../../helpers/dkim.ts';
import { loadZone, startDnsServer, type DnsServer } from '../../helpers/dnsserver.ts';
import { haveSwaks, type MailSink, startRelaySuite, stopRelaySuite, type SunkMessage, swaks } from '../../helpers/mailsink.ts';
import { waitFor, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite;
let sink: MailSink;
let port: number;
let dns: DnsServer;

beforeAll(async () => {
  dns = await startDnsServer();
  ({ sink, t, port } = await startRelaySuite({
    main: { dns: { servers: [`127.0.0.1:${dns.port}`], timeout: 1 } },
    smtp: { waitForNextHop: 0, queue: { minBackoff: 3600, maxBackoff: 3600 } },
    tenants: {
      'a.test': {
        domains: ['a.test'],
        forms: { recipients: ['owner@remote.test'] },
        mail: { forward: { lost: 'gone@remote.test' }, lists: { news: { owner: 'owner@remote.test', posting: 'members' } } },
      },
    },
  }));
  sink.rcptReply.set('gone@remote.test', [550, '5.1.1 <gone@remote.test>: no such user']);
});
afterAll(async () => {
  await stopRelaySuite(t, sink);
  await dns?.close();
});

/** The DKIM TXT records `makewaves dns` prints now (for a tenant, or the suite's own). */
async function published(tenant?: string): Promise<Map<string, string>> {
  const r = await runCli('dns', ...(tenant ? [tenant] : []), '--config', t.configDir);
  expect(r).toMatchObject({ code: 0, err: '' });
  return zoneTxt(r.out);
}

async function formMail(subject: string): Promise<SunkMessage> {
  const before = sink.messages.length;
  const res = await call(t.http, 'a.test', '/cgi-bin/formmail', {
    method: 'POST',
    body: new URLSearchParams({ recipient: 'owner@remote.test', subject, name: 'Vera', email: 'vera@visitor.test', message: 'hello, ünïcode' }).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  expect(res.status).toBe(200);
  return waitFor(() => sink.messages.slice(before).find((m) => m.raw.includes(subject)), 5_000, `the form mail "${subject}"`);
}

describe.skipIf(!dkimPython)(dkimPython ? 'DKIM signing of the mail the suite originates, verified by dkimpy' : `DKIM signing (skipped: ${noDkimpy})`, () => {
  it('`makewaves dns a.test` prints MX, SPF, both DKIM keys and DMARC in zone-file form; the keys are 0600 under data/dkim/', async () => {
    const r = await runCli('dns', 'a.test', '--config', t.configDir);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^a\.test\.\s+IN MX\s+10 mx\.test\.$/m);
    expect(r.out).toMatch(/^a\.test\.\s+IN TXT\s+"v=spf1 a:mx\.test ~all"$/m);
    expect(r.out).toMatch(/^_dmarc\.a\.test\.\s+IN TXT\s+"v=DMARC1; p=none; adkim=r; aspf=r"$/m);
    const txt = zoneTxt(r.out);
    const rsa = [...txt].find(([k]) => /^mw\d{8}r\._domainkey\.a\.test$/.test(k));
    const ed = [...txt].find(([k]) => /^mw\d{8}e\._domainkey\.a\.test$/.test(k));
    expect(rsa?.[1]).toMatch(/^v=DKIM1; k=rsa; p=MIIBIjAN[A-Za-z0-9+/=]{380,}$/);
    expect(ed?.[1]).toMatch(/^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/);
    // The RSA record is longer than one TXT string may be: it is split.
    expect(r.out).toMatch(/k=rsa; p=\S+" "\S+"$/m);
    for (const k of t.suite.state.dkim.signing('a.test')) {
      expect(path.dirname(k.file)).toBe(path.join(t.dataDir, 'dkim', 'a.test'));
      expect(statSync(k.file).mode & 0o777).toBe(0o600);
      expect(statSync(path.dirname(k.file)).mode & 0o777).toBe(0o700);
    }
    // Printing again makes no new keys.
    expect(zoneTxt((await runCli('dns', 'a.test', '--config', t.configDir)).out)).toEqual(txt);
  });

  it('a form mail arrives over SMTP with an RSA and an Ed25519 signature of a.test that dkimpy verifies', async () => {
    const m = await formMail('Signed form');
    const checks = verifyDkim(m.raw, await published('a.test'));
    expect(checks.map((c) => [c.d, c.a, c.ok])).toEqual([
      ['a.test', 'rsa-sha256', true],
      ['a.test', 'ed25519-sha256', true],
    ]);
    // A changed body no longer verifies: the check is a real one.
    const tampered = Buffer.from(m.raw.toString('latin1').replace('Vera', 'Vero'), 'latin1');
    expect(verifyDkim(tampered, await published('a.test')).map((c) => c.ok)).toEqual([false, false]);
  });

  it.skipIf(!haveSwaks)("a member's post to the list goes out to members signed by the list's domain", async () => {
    expect((await runCli('list', '--config', t.configDir, 'add', 'member@remote.test', 'news@a.test', '--no-confirm')).code).toBe(0);
    // The member's domain lets 127.0.0.1 send for it: the post is authenticated (SPF, aligned), so it is not held.
    dns.zone.set('remote.test', { txt: [['v=spf1 ip4:127.0.0.1 -all']] });
    const before = sink.messages.length;
    const r = await swaks(port, '--from', 'member@remote.test', '--to', 'news@a.test', '--header', 'Subject: list post', '--body', 'to all');
    expect(r.out).toMatch(/<-\s+250 /);
    const post = await waitFor(() => sink.messages.slice(before).find((m) => m.to.includes('member@remote.test') && m.raw.includes('list post')), 5_000, 'the list post');
    const checks = verifyDkim(post.raw, await published('a.test'));
    expect(checks.map((c) => [c.d, c.ok])).toEqual([
      ['a.test', true],
      ['a.test', true],
    ]);
  });

  it.skipIf(!haveSwaks)("a bounce (DSN) is signed with the suite's own key, as `makewaves dns` prints it", async () => {
    const before = sink.messages.length;
    const r = await swaks(port, '--from', 'sender@third.test', '--to', 'lost@a.test', '--header', 'Subject: will bounce');
    expect(r.out).toMatch(/<-\s+250 /);
    const dsn = await waitFor(() => sink.messages.slice(before).find((m) => m.to.includes('sender@third.test') && m.from === ''), 5_000, 'the DSN');
    expect(dsn.raw.toString('latin1')).toMatch(/^From: Mail Delivery System <MAILER-DAEMON@mx\.test>\r$/m);
    const own = await published();
    // Two DKIM keys and the ARC sealing key.
    expect([...own.keys()].filter((k) => k.endsWith('._domainkey.mx.test'))).toHaveLength(3);
    expect(verifyDkim(dsn.raw, own).map((c) => [c.d, c.ok])).toEqual([
      ['mx.test', true],
      ['mx.test', true],
    ]);
  });

  it('after `makewaves dkim rotate a.test`, new mail uses the new selectors; the old ones stay published for the grace period', async () => {
    const old = t.suite.state.dkim.signing('a.test').map((k) => k.selector);
    const r = await runCli('dkim', '--config', t.configDir, 'rotate', 'a.test', '--grace', '3');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^retired a\.test {2}mw\d{8}r {2}rsa-sha256 2048 .* publish until \d{4}-\d\d-\d\d$/m);
    const fresh = t.suite.state.dkim.signing('a.test').map((k) => k.selector);
    expect(fresh).toHaveLength(2);
    expect(fresh.filter((s) => old.includes(s))).toEqual([]);
    const records = await published('a.test');
    for (const s of [...old, ...fresh]) expect(records.has(`${s}._domainkey.a.test`)).toBe(true);
    expect((await runCli('dns', 'a.test', '--config', t.configDir)).out).toMatch(/^; retired \d{4}-\d\d-\d\d: keep until \d{4}-\d\d-\d\d, then remove$/m);

    const m = await formMail('After rotation');
    const checks = verifyDkim(m.raw, records);
    expect(checks.map((c) => [c.s, c.ok])).toEqual(fresh.map((s) => [s, true]));
    // With only the old records published, the new signatures do not verify: the new selectors really are used.
    const onlyOld = new Map([...records].filter(([k]) => old.some((s) => k.startsWith(`${s}.`))));
    expect(verifyDkim(m.raw, onlyOld).map((c) => c.ok)).toEqual([false, false]);
    expect((await runCli('dkim', '--config', t.configDir, 'list', 'a.test')).out).toMatch(/signing\n[\s\S]*retired/);
  });

  it('`makewaves dkim rotate` refuses a domain that is not ours', async () => {
    const r = await runCli('dkim', '--config', t.configDir, 'rotate', 'elsewhere.test');
    expect(r).toMatchObject({ code: 1, err: 'makewaves: "elsewhere.test" is neither a tenant domain nor this server\'s host name (mx.test)\n' });
  });

  it('`makewaves dns --check a.test` asks the configured resolver and says which records are missing or wrong', async () => {
    dns.zone.clear();
    const empty = await runCli('dns', '--check', 'a.test', '--config', t.configDir);
    expect(empty.code).toBe(1);
    expect(empty.out).toMatch(/^missing MX a\.test +publish: 10 mx\.test\.$/m);
    expect(empty.out).toMatch(/^missing SPF a\.test +publish: "v=spf1 a:mx\.test ~all"$/m);
    expect(empty.out).toMatch(/^missing DKIM mw\d{8}(n\d+)?r\._domainkey\.a\.test +mail signed with this key fails DKIM until it is published$/m);
    expect(empty.out).toMatch(/^missing DMARC _dmarc\.a\.test/m);

    // Published as printed: all present.
    loadZone(dns.zone, (await runCli('dns', 'a.test', '--config', t.configDir)).out);
    const good = await runCli('dns', '--check', 'a.test', '--config', t.configDir);
    expect(good.out).not.toMatch(/^(missing|wrong|unknown)/m);
    expect(good).toMatchObject({ code: 0, out: expect.stringMatching(/a\.test: every record is published\n$/) });

    // Another key under a selector of ours, and an SPF record that does not name this server.
    const signing = t.suite.state.dkim.signing('a.test').find((k) => k.algorithm === 'ed25519')!;
    dns.zone.set(`${signing.selector}._domainkey.a.test`, { txt: [['v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=']] });
    dns.zone.set('a.test', { ...dns.zone.get('a.test'), txt: [['v=spf1 include:elsewhere.test -all']] });
    const bad = await runCli('dns', '--check', 'a.test', '--config', t.configDir);
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(new RegExp(`^wrong   DKIM ${signing.selector}\\._domainkey\\.a\\.test +the published key is not the one the suite signs with`, 'm'));
    expect(bad.out).toMatch(/^wrong {3}SPF a\.test +"v=spf1 include:elsewhere\.test -all" does not name mx\.test \(add a:mx\.test\)$/m);
    expect(bad.out).toMatch(/a\.test: 2 records missing, wrong or not checked\n$/);
  });

  it('`makewaves dns` without a tenant prints the suite\'s own records', async () => {
    const r = await runCli('dns', '--config', t.configDir);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^; mx\.test\. +IN A +<public IPv4 address>$/m);
    expect(r.out).toMatch(/^; PTR: /m);
    expect(r.out).toMatch(/^mx\.test\. +IN TXT +"v=spf1 a -all"$/m);
    expect(r.out).toMatch(/^_dmarc\.mx\.test\. +IN TXT +"v=DMARC1; p=none; adkim=r; aspf=r"$/m);
    expect(r.out).toMatch(/^; outbound mail leaves through smtp\.relay \(127\.0\.0\.1\)/m);
  });
});
