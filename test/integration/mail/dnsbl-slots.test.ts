import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsServer, type DnsServer } from '../../helpers/dnsserver.ts';
import { RawSmtp, smtpPort } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

// An SMTP session counts against its client from onConnect, its DNS blocklist lookup included. A client gone while
// that lookup runs has its slot back when it closes, and the lookup's end after that gives it no slot again: before,
// each such session was counted at the lookup's end and never counted off, until the client was refused for good.
const CAP = 2;
let t: TestSuite;
let dns: DnsServer;

beforeAll(async () => {
  dns = await startDnsServer();
  t = await startTestSuite({
    main: {
      dns: { servers: [`127.0.0.1:${dns.port}`], timeout: 0.5 },
      smtp: { listen: ['127.0.0.1:0'], maxConnectionsPerIp: CAP },
      spam: { dnsbl: ['slow.test'] },
    },
    tenants: { 'a.test': { domains: ['a.test'] } },
  });
});
afterAll(async () => {
  await t?.stop();
  await dns?.close();
});

describe('an SMTP client gone during its DNS blocklist lookup', () => {
  it('does not keep a connection slot', async () => {
    const name = '1.0.0.127.slow.test';
    dns.zone.set(name, { silent: true });
    const notAnswered = () => t.logs().filter((l) => l.msg === 'DNS blocklist not answered; the client is let in').length;
    try {
      for (let i = 0; i < CAP; i++) {
        const asked = dns.asked.filter((q) => q.endsWith(name)).length;
        const before = notAnswered();
        const s = net.connect(smtpPort(t.suite), '127.0.0.1');
        s.on('error', () => undefined);
        // Gone once its lookup has begun, before it ends.
        await waitFor(() => dns.asked.filter((q) => q.endsWith(name)).length > asked, 5_000, 'the blocklist question');
        await new Promise<void>((resolve) => {
          s.once('close', () => resolve());
          s.destroy();
        });
        await waitFor(() => notAnswered() > before, 5_000, 'the end of the lookup');
      }
    } finally {
      dns.zone.delete(name);
    }
    const c = await RawSmtp.connect(smtpPort(t.suite));
    expect(c.greeting).toMatch(/^220 /);
    c.close();
  });
});
