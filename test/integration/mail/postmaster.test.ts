import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { runCli } from '../../helpers/cli.ts';
import { startDnsServer, type DnsServer } from '../../helpers/dnsserver.ts';
import { haveSwaks, swaks, startRelaySuite, stopRelaySuite, type MailSink, type SunkMessage } from '../../helpers/mailsink.ts';
import { waitFor, writeConfig, type TestSuite } from '../../helpers/suite.ts';

/**
 * postmaster@ (RFC 5321 §4.5.1) and abuse@ (RFC 2142) of every hosted
 * domain, of the host name, and <postmaster> with no domain: the tenant's
 * own forward of that name, else `mail.postmaster` of makewaves.yaml (set
 * here by a reload, as an operator would); never a relay, and checked like
 * any other forward.
 */

let dns: DnsServer;
let sink: MailSink;
let t: TestSuite;
let port: number;

beforeAll(async () => {
  dns = await startDnsServer();
  // rejecter.test: SPF allows only 192.0.2.1 and DMARC says p=reject, so its mail from loopback fails DMARC.
  dns.zone.set('rejecter.test', { txt: [['v=spf1 ip4:192.0.2.1 -all']] });
  dns.zone.set('_dmarc.rejecter.test', { txt: [['v=DMARC1; p=reject']] });
  ({ sink, t, port } = await startRelaySuite({
    // hostname: mx.test (the helper's)
    main: { dns: { servers: [`127.0.0.1:${dns.port}`], timeout: 0.5 } },
    smtp: { waitForNextHop: 0 },
    tenants: {
      // Forwards its own postmaster (not abuse), and lets its checks tag what the suite refuses.
      'own.test': { domains: ['own.test'], mail: { forward: { postmaster: 'pm@owner.test', info: 'info@owner.test' }, checks: { dmarcReject: 'tag' } } },
      // Forwards neither, and has a catch-all.
      'bare.test': { domains: ['bare.test', 'www.bare.test'], mail: { forward: { info: 'info@owner.test' }, catchAll: 'catch@owner.test' } },
      // No mail settings at all.
      'web.test': { domains: ['web.test'] },
    },
  }));
}, 30_000);
afterAll(async () => {
  await stopRelaySuite(t, sink);
  await dns?.close();
});

let n = 0;

/**
 * Sends one message to `rcpt` with swaks: the forward target(s) it reached
 * (the sink's envelope), or the reply that refused it (`550 5.1.1`).
 */
async function outcome(rcpt: string, from = 'someone@elsewhere.test'): Promise<string> {
  const subject = `pm-${++n}`;
  const r = await swaks(port, '--from', from, '--to', rcpt, '--header', `Subject: ${subject}`, '--header', `From: ${from}`);
  const refused = /^<\*\* +(\d{3} \d\.\d{1,3}\.\d{1,3})/m.exec(r.out);
  if (refused) return refused[1]!;
  expect(r.out, r.out).toMatch(/<- {2}250 .*queued as/);
  const m = await waitFor(() => sink.messages.find((x) => x.raw.includes(`Subject: ${subject}\r\n`)), 5_000, `the message to ${rcpt}`);
  // The same SRS path as every forward: the envelope sender is ours.
  expect(m.from).toMatch(/^SRS0=[^@]+@mx\.test$/);
  return [...m.to].sort().join(',');
}

/** Each row: RCPT TO, what happens without mail.postmaster, what happens with `mail.postmaster: ops@isp.test`. */
const TABLE: Array<[string, string, string]> = [
  // A hosted domain whose tenant forwards postmaster: its own forward either way.
  ['postmaster@own.test', 'pm@owner.test', 'pm@owner.test'],
  ['Postmaster@own.test', 'pm@owner.test', 'pm@owner.test'],
  ['POSTMASTER@OWN.TEST', 'pm@owner.test', 'pm@owner.test'],
  // ... but not abuse.
  ['abuse@own.test', '550 5.1.1', 'ops@isp.test'],
  // A hosted domain with no such forward: its catch-all as before, the operator once set.
  ['postmaster@bare.test', 'catch@owner.test', 'ops@isp.test'],
  ['Postmaster@www.bare.test', 'catch@owner.test', 'ops@isp.test'],
  ['abuse@bare.test', 'catch@owner.test', 'ops@isp.test'],
  ['info@bare.test', 'info@owner.test', 'info@owner.test'],
  // A hosted domain without mail settings.
  ['postmaster@web.test', '550 5.1.1', 'ops@isp.test'],
  ['POSTMASTER@web.test', '550 5.1.1', 'ops@isp.test'],
  ['abuse@web.test', '550 5.1.1', 'ops@isp.test'],
  ['info@web.test', '550 5.1.1', '550 5.1.1'],
  // The server's own host name.
  ['postmaster@mx.test', '550 5.7.1', 'ops@isp.test'],
  ['Postmaster@MX.test', '550 5.7.1', 'ops@isp.test'],
  ['abuse@mx.test', '550 5.7.1', 'ops@isp.test'],
  ['info@mx.test', '550 5.7.1', '550 5.7.1'],
  // No domain: postmaster only (RFC 5321 §4.1.1.3).
  ['postmaster', '501 5.1.3', 'ops@isp.test'],
  ['PostMaster', '501 5.1.3', 'ops@isp.test'],
  ['abuse', '501 5.1.3', '501 5.1.3'],
  // Never a relay.
  ['postmaster@elsewhere.test', '550 5.7.1', '550 5.7.1'],
  ['Abuse@elsewhere.test', '550 5.7.1', '550 5.7.1'],
  ['postmaster@sub.mx.test', '550 5.7.1', '550 5.7.1'],
  ['postmaster%elsewhere.test@mx.test', '550 5.7.1', '550 5.7.1'],
];

const warnings = () => t.logs().filter((l) => l.level === 40 && typeof l.msg === 'string' && l.msg.includes('mail.postmaster is not set'));

describe.skipIf(!haveSwaks)('without mail.postmaster (swaks; install the Debian package swaks)', () => {
  let began = 0;
  beforeAll(() => {
    began = Date.now();
  });
  it.each(TABLE)('%s → %s', async (rcpt, without) => {
    expect(await outcome(rcpt)).toBe(without);
  });

  it('says the setting is missing in the log, at most once a minute however many are refused', () => {
    const lines = warnings();
    expect(lines.length).toBeGreaterThanOrEqual(1);
    // Eight refusals in the table above; one line per started minute of it at most.
    expect(lines.length).toBeLessThanOrEqual(1 + Math.floor((Date.now() - began) / 60_000));
    // Who and why: the session, the client, the sender and the address.
    expect(lines[0]).toMatchObject({ rcpt: 'abuse@own.test', from: 'someone@elsewhere.test', remote: '127.0.0.1', conn: expect.any(String) as string });
  });
});

describe.skipIf(!haveSwaks)('with mail.postmaster set by a reload', () => {
  beforeAll(() => {
    const file = path.join(t.configDir, 'makewaves.yaml');
    const main = parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    writeFileSync(file, stringify({ ...main, mail: { postmaster: 'ops@isp.test' } }));
    expect(t.suite.reload()).toBe(true);
    expect(t.suite.registry().config.main.mail?.postmaster).toBe('ops@isp.test');
  });

  it.each(TABLE)('%s → %s | %s', async (rcpt, _without, want) => {
    expect(await outcome(rcpt)).toBe(want);
  });

  it('sends one copy to the operator for several of these addresses in one message', async () => {
    const before = sink.messages.length;
    const r = await swaks(port, '--from', 'x@elsewhere.test', '--to', 'postmaster@web.test,abuse@bare.test,postmaster,abuse@mx.test', '--header', 'Subject: four-in-one');
    expect(r.out).toMatch(/<- {2}250 .*queued as/);
    const m: SunkMessage = await waitFor(() => sink.messages.slice(before).find((x) => x.raw.includes('Subject: four-in-one')), 5_000, 'the message');
    expect(m.to).toEqual(['ops@isp.test']);
    // Received: names no single recipient (there were four), and our checks ran on it.
    expect(m.raw.toString()).toMatch(/^Authentication-Results: mx\.test;\r\n/m);
  });

  it('checks the operator\'s mail like any forward: a DMARC p=reject failure is refused in the session under the suite\'s policy', async () => {
    expect(await outcome('postmaster@web.test', 'ceo@rejecter.test')).toBe('550 5.7.1');
    expect(await outcome('postmaster', 'ceo@rejecter.test')).toBe('550 5.7.1');
    // own.test tags such mail for its own addresses, and still does for its own postmaster forward.
    expect(await outcome('postmaster@own.test', 'ceo@rejecter.test')).toBe('pm@owner.test');
    // Its abuse@ goes to the operator, so the suite's policy (refuse) applies, not the tenant's.
    expect(await outcome('abuse@own.test', 'ceo@rejecter.test')).toBe('550 5.7.1');
    expect(t.logs().filter((l) => l.msg === 'message refused: dmarc-reject' && l.from === 'ceo@rejecter.test')).toHaveLength(3);
  });
});

describe('makewaves check on mail.postmaster', () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'makewaves-check-postmaster-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  let k = 0;
  async function check(main: Record<string, unknown>, tenants: Record<string, Record<string, unknown>> = { 'a.test': { domains: ['a.test'], mail: { forward: { abuse: 'x@remote.test' } } } }) {
    const { configDir } = writeConfig(path.join(root, String(++k)), { main, tenants });
    return runCli('check', '--config', configDir);
  }
  const smtp = { listen: ['127.0.0.1:0'] };

  it('warns when mail is on without it, and says where the addresses go when it is set', async () => {
    const without = await check({ smtp });
    expect(without.out).toMatch(/^warning: .*makewaves\.yaml: mail\.postmaster is not set: postmaster@ and abuse@ of hosted domains without a forward of that name, of mx\.test, and <postmaster> are refused .*tenants forwarding them themselves: a\.test$/m);
    const set = await check({ smtp: { ...smtp, srsDomain: 'srs.test' }, mail: { postmaster: 'Ops@ISP.test' } });
    expect(set.out).toMatch(/^note: postmaster@ and abuse@ of every hosted domain without a forward of that name, of mx\.test and srs\.test, and <postmaster> go to mail\.postmaster ops@isp\.test; tenants forwarding them themselves: a\.test$/m);
    expect(set.out).not.toMatch(/warning: .*postmaster/);
    // No mail at all: nothing to warn about.
    expect((await check({})).out).not.toMatch(/mail\.postmaster|postmaster@/);
  });

  it('refuses an address that is not one, one at the server\'s own name, and one that leads nowhere', async () => {
    const bad = await check({ smtp, mail: { postmaster: 'ops' } });
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/makewaves\.yaml: mail\.postmaster: "ops" is not an e-mail address/);
    const own = await check({ smtp, mail: { postmaster: 'root@MX.test' } });
    expect(own.code).toBe(1);
    expect(own.err).toMatch(/makewaves\.yaml: mail\.postmaster: "root@mx\.test" is at this server's own name mx\.test/);
    const loop = await check({ smtp, mail: { postmaster: 'postmaster@a.test' } }, { 'a.test': { domains: ['a.test'] } });
    expect(loop.code).toBe(1);
    expect(loop.err).toMatch(/mail\.postmaster: postmaster@a\.test leads nowhere \(forwarding loop: postmaster@a\.test → postmaster@a\.test\)/);
  });
});
