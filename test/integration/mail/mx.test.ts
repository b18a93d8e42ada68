import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MxDeliverer, type MxResolver } from '../../../src/mail/deliver.ts';
import { startSink, type MailSink } from '../../helpers/mailsink.ts';

// Direct MX delivery against a resolver that points at loopback: the DNS
// answers are made up here, the SMTP sessions are real (smtp-server sinks
// on 127.0.0.1). 127.0.0.2 is loopback too, with nothing listening.

function dnsError(code: string): Error {
  return Object.assign(new Error(`queryMx ${code}`), { code });
}

let sink: MailSink;
let tlsSink: MailSink;
const asked: string[] = [];

function resolver(): MxResolver {
  const mx: Record<string, Array<{ exchange: string; priority: number }> | string> = {
    'far.test': [
      { exchange: 'mx2.far.test', priority: 20 },
      { exchange: 'mx1.far.test', priority: 10 },
    ],
    'nomx.test': 'ENODATA',
    'nxdomain.test': 'ENOTFOUND',
    'servfail.test': 'ESERVFAIL',
    'nullmx.test': [{ exchange: '', priority: 0 }],
    'deadmx.test': [{ exchange: 'mx1.far.test', priority: 10 }],
    'tls.test': [{ exchange: 'mx.tls.test', priority: 10 }],
  };
  const a: Record<string, string[]> = { 'mx1.far.test': ['127.0.0.2'], 'mx2.far.test': ['127.0.0.1'], 'nomx.test': ['127.0.0.1'], 'mx.tls.test': ['127.0.0.1'] };
  return {
    async resolveMx(d) {
      asked.push(`MX ${d}`);
      const r = mx[d];
      if (r === undefined) throw dnsError('ENOTFOUND');
      if (typeof r === 'string') throw dnsError(r);
      return r;
    },
    async resolve4(h) {
      asked.push(`A ${h}`);
      const r = a[h];
      if (!r) throw dnsError('ENODATA');
      return r;
    },
    async resolve6(h) {
      asked.push(`AAAA ${h}`);
      throw dnsError('ENODATA');
    },
  };
}

beforeAll(async () => {
  sink = await startSink();
  tlsSink = await startSink(0, { starttls: true });
});
afterAll(async () => {
  await sink.close();
  await tlsSink.close();
});

const raw = () => Readable.from([Buffer.from('Subject: mx\r\n\r\nhello\r\n')]);

describe('direct MX delivery', () => {
  it('tries MX hosts by priority and falls through one that refuses connections', async () => {
    asked.length = 0;
    const d = new MxDeliverer({ hostname: 'mx.test', port: sink.port, resolver: resolver(), connectTimeout: 2_000 });
    const out = await d.deliver({ id: 'T1', sender: 's@a.test', recipients: ['x@far.test', 'y@far.test'], open: raw });
    expect(out.map((o) => [o.rcpt, o.status, o.via])).toEqual([
      ['x@far.test', 'sent', 'mx2.far.test[127.0.0.1]'],
      ['y@far.test', 'sent', 'mx2.far.test[127.0.0.1]'],
    ]);
    expect(asked.filter((q) => q.startsWith('A '))).toEqual(['A mx1.far.test', 'A mx2.far.test']);
    expect(sink.messages.at(-1)!.to).toEqual(['x@far.test', 'y@far.test']);
  });

  it('falls back to the domain\'s own address when it has no MX (RFC 5321 §5.1)', async () => {
    const d = new MxDeliverer({ hostname: 'mx.test', port: sink.port, resolver: resolver() });
    const [o] = await d.deliver({ id: 'T2', sender: '', recipients: ['z@nomx.test'], open: raw });
    expect(o).toMatchObject({ status: 'sent', via: 'nomx.test[127.0.0.1]' });
  });

  it.each([
    ['nxdomain.test', 'perm', /^550 5\.1\.2 /],
    ['servfail.test', 'temp', /^451 4\.4\.3 /],
    ['nullmx.test', 'perm', /^556 5\.1\.10 /],
    ['deadmx.test', 'temp', /ECONNREFUSED/],
  ])('%s → %s', async (domain, status, reply) => {
    const d = new MxDeliverer({ hostname: 'mx.test', port: sink.port, resolver: resolver(), connectTimeout: 2_000 });
    const [o] = await d.deliver({ id: 'T3', sender: 's@a.test', recipients: [`u@${domain}`], open: raw });
    expect(o!.status).toBe(status);
    expect(o!.reply).toMatch(reply);
  });

  it('splits recipients by domain and reports each', async () => {
    const d = new MxDeliverer({ hostname: 'mx.test', port: sink.port, resolver: resolver(), connectTimeout: 2_000 });
    const out = await d.deliver({ id: 'T4', sender: 's@a.test', recipients: ['a@far.test', 'b@nxdomain.test', 'c@nomx.test'], open: raw });
    expect(out.map((o) => `${o.rcpt} ${o.status}`).sort()).toEqual(['a@far.test sent', 'b@nxdomain.test perm', 'c@nomx.test sent']);
  });

  it('uses STARTTLS when the MX offers it (opportunistic: the test certificate is not verified)', async () => {
    const d = new MxDeliverer({ hostname: 'mx.test', port: tlsSink.port, resolver: resolver() });
    const [o] = await d.deliver({ id: 'T5', sender: 's@a.test', recipients: ['t@tls.test'], open: raw });
    expect(o!.status).toBe('sent');
    expect(tlsSink.messages.at(-1)!.secure).toBe(true);
  });

  it('reports a 5xx from the MX as permanent, per recipient', async () => {
    sink.rcptReply.set('gone@far.test', [550, '5.1.1 gone']);
    const d = new MxDeliverer({ hostname: 'mx.test', port: sink.port, resolver: resolver(), connectTimeout: 2_000 });
    const out = await d.deliver({ id: 'T6', sender: 's@a.test', recipients: ['gone@far.test', 'here@far.test'], open: raw });
    expect(out.map((o) => [o.rcpt, o.status, o.reply])).toEqual([
      ['gone@far.test', 'perm', '550 5.1.1 gone'],
      ['here@far.test', 'sent', expect.stringMatching(/^250 /)],
    ]);
    sink.rcptReply.clear();
  });
});
