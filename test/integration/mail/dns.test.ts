import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../helpers/cli.ts';
import { rr, serveDns } from '../../helpers/dnsserver.ts';
import { haveSwaks, type MailSink, smtpPort, startSink, swaks } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

/**
 * A DNS server on loopback UDP that we control: `good.test` has an address
 * (127.0.0.1) and no MX, `servfail.test` gets SERVFAIL, `silent.test` no
 * answer, anything else NXDOMAIN. `root` says whether it finds the root
 * zone (a resolver without network access does not, and denies every name).
 */
interface Dns {
  port: number;
  root: boolean;
  close(): Promise<void>;
}

async function startDns(): Promise<Dns> {
  const dns: Dns = { port: 0, root: true, close: async () => undefined };
  const server = await serveDns((name, type) => {
    if (name === 'silent.test') return undefined;
    let rcode = 3;
    const answers: Buffer[] = [];
    if (name === '' && dns.root) {
      rcode = 0;
      if (type === 2) answers.push(rr(2, Buffer.from('\x01a\x0croot-servers\x03net\x00', 'latin1')));
    } else if (name === 'good.test') {
      rcode = 0;
      if (type === 1) answers.push(rr(1, Buffer.from([127, 0, 0, 1])));
    } else if (name === 'servfail.test') rcode = 2;
    return { rcode, answers, authoritative: false };
  });
  dns.port = server.port;
  dns.close = server.close;
  return dns;
}

let dns: Dns;
let sink: MailSink;
let t: TestSuite;
let port: number;

beforeAll(async () => {
  dns = await startDns();
  sink = await startSink();
  t = await startTestSuite({
    main: {
      // The suite's one resolver setting (top level; smtp.dns is its old name).
      dns: { servers: [`127.0.0.1:${dns.port}`], timeout: 0.3 },
      smtp: {
        listen: ['127.0.0.1:0'],
        waitForNextHop: 5,
        queue: { minBackoff: 3600, maxBackoff: 3600, mxPort: sink.port },
      },
    },
    tenants: {
      'a.test': {
        domains: ['a.test'],
        mail: { forward: { good: 'x@good.test', nx: 'x@nx.test', sf: 'x@servfail.test', quiet: 'x@silent.test', off: 'x@offline.test' } },
      },
    },
  });
  port = smtpPort(t.suite);
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
  await dns?.close();
});

const queueText = async () => (await runCli('queue', '--config', t.configDir)).out;

describe.skipIf(!haveSwaks)('DNS trouble on direct MX delivery (a resolver on loopback that we control)', () => {
  it('delivers through the configured DNS server (no MX: the domain’s own address)', async () => {
    const r = await swaks(port, '--from', 's@third.test', '--to', 'good@a.test');
    expect(r.out).toMatch(/<-\s+250 2\.6\.0 Ok: queued as/);
    expect(sink.messages.map((m) => m.to)).toEqual([['x@good.test']]);
  });

  it('NXDOMAIN from a resolver that sees the DNS is permanent (refused in the session)', async () => {
    const r = await swaks(port, '--from', 's@third.test', '--to', 'nx@a.test');
    expect(r.out).toMatch(/<\*\*\s+550 5\.1\.2 .*nx\.test: no such domain/);
    expect(t.suite.state.mailQueue.count()).toBe(0);
  });

  it('SERVFAIL and a silent server are temporary: queued, and `makewaves queue` says why', async () => {
    for (const to of ['sf@a.test', 'quiet@a.test']) {
      const r = await swaks(port, '--from', 's@third.test', '--to', to);
      expect(r.out).toMatch(/<-\s+250 2\.6\.0 Ok: queued as/);
    }
    const out = await queueText();
    expect(out).toContain('last reply: 451 4.4.3 servfail.test: MX lookup failed: the DNS server answered SERVFAIL');
    expect(out).toContain('last reply: 451 4.4.3 silent.test: MX lookup failed: no answer from the DNS server (timeout)');
  });

  it('a resolver that denies every name, the root zone too (no network), is temporary, not a bounce', async () => {
    dns.root = false;
    const r = await swaks(port, '--from', 's@third.test', '--to', 'off@a.test');
    expect(r.out).toMatch(/<-\s+250 2\.6\.0 Ok: queued as/);
    expect(await queueText()).toMatch(/last reply: 451 4\.4\.3 offline\.test: the DNS server says no such domain but does not find the root zone either \(no network\?\); will retry/);
    dns.root = true;
  });

  it('an unreachable DNS server is temporary', async () => {
    await dns.close();
    // Nothing listens on the port now: the resolver gets "connection refused" (ICMP port unreachable).
    await runCli('queue', 'flush', '--config', t.configDir);
    await waitFor(async () => (await queueText()).includes('the DNS server could not be reached (connection refused)'), 5_000, 'the unreachable resolver in `queue`');
    expect(t.suite.state.mailQueue.count()).toBe(3);
    dns.close = async () => undefined;
  });
});
