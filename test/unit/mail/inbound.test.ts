import { describe, expect, it } from 'vitest';
import { decide, policyFor, stripOurResults } from '../../../src/mail/inbound.ts';
import { authservId, type InboundAuth } from '../../../src/mail/mailauth.ts';

const defaults = { enabled: true, arcSeal: true, dmarcReject: 'refuse', spfFail: 'tag', temporary: 'accept', timeout: 30 } as const;

describe('authservId (RFC 8601 §2.2)', () => {
  it.each([
    ['mx.test; spf=pass', 'mx.test'],
    ['MX.TEST; spf=pass', 'mx.test'],
    ['mx.test 1; spf=pass', 'mx.test'],
    ['mx.test (forged);\r\n spf=pass', 'mx.test'],
    ['  mx.test;', 'mx.test'],
    ['other.test; dkim=pass header.d=mx.test', 'other.test'],
  ])('%j → %s', (value, id) => expect(authservId(value)).toBe(id));
});

describe('stripOurResults', () => {
  const body = '\r\nbody\r\nAuthentication-Results: mx.test; in the body\r\n';
  it('removes every field claiming our name (folded or not, any case), keeps the rest byte for byte', () => {
    const raw = Buffer.from(`X-A: 1\r\nAuthentication-Results: mx.test; dkim=pass\r\nauthentication-results : MX.test\r\n\t; spf=pass\r\nAuthentication-Results: other.test; spf=pass\r\nX-B: 2\r\n${body}`);
    const out = stripOurResults(raw, 'mx.test');
    expect(out.removed).toBe(2);
    expect(out.raw.toString()).toBe(`X-A: 1\r\nAuthentication-Results: other.test; spf=pass\r\nX-B: 2\r\n${body}`);
  });
  it('leaves a message without such fields as it is (the same buffer)', () => {
    const raw = Buffer.from(`Authentication-Results: mx.test.evil; spf=pass\r\nX-Mx.test: 1\r\n${body}`);
    const out = stripOurResults(raw, 'mx.test');
    expect(out).toEqual({ raw, removed: 0 });
  });
});

describe('policyFor', () => {
  it("takes a tenant's keys over the defaults, and the strictest when recipients' tenants differ", () => {
    expect(policyFor(defaults, [])).toEqual({ dmarcReject: 'refuse', spfFail: 'tag', temporary: 'accept' });
    const lax = { domains: ['a'], mail: { checks: { dmarcReject: 'tag' } } } as never;
    const strict = { domains: ['b'], mail: { checks: { spfFail: 'refuse', temporary: 'defer' } } } as never;
    expect(policyFor(defaults, [lax])).toEqual({ dmarcReject: 'tag', spfFail: 'tag', temporary: 'accept' });
    expect(policyFor(defaults, [lax, strict])).toEqual({ dmarcReject: 'refuse', spfFail: 'refuse', temporary: 'defer' });
  });
});

describe('decide', () => {
  const auth = (o: Partial<InboundAuth>): InboundAuth => ({
    results: 'mx.test; none',
    fromDomain: 'd.test',
    spf: 'none',
    dkim: [],
    dkimPass: [],
    dmarc: { result: 'none', policy: undefined },
    aligned: undefined,
    temporary: false,
    ...o,
  });
  const p = policyFor(defaults, []);
  const env = { sender: 's@d.test', ip: '192.0.2.9' };
  it.each([
    ['DMARC fail, p=reject', auth({ dmarc: { result: 'fail', policy: 'reject' } }), p, '550 UNAUTHENTICATED'],
    ['DMARC fail, p=quarantine', auth({ dmarc: { result: 'fail', policy: 'quarantine' } }), p, 'accept'],
    ['DMARC fail, p=reject, tenant says tag', auth({ dmarc: { result: 'fail', policy: 'reject' } }), { ...p, dmarcReject: 'tag' as const }, 'accept'],
    ['SPF fail without DMARC', auth({ spf: 'fail' }), p, 'accept'],
    ['SPF fail without DMARC, tenant says refuse', auth({ spf: 'fail' }), { ...p, spfFail: 'refuse' as const }, '550 SPF_FAILED'],
    ['SPF fail with a DMARC record (DMARC decides)', auth({ spf: 'fail', dmarc: { result: 'fail', policy: 'none' } }), { ...p, spfFail: 'refuse' as const }, 'accept'],
    // A DMARC fail that may be one only because SPF timed out is never permanent.
    ['temperror with a DMARC p=reject fail', auth({ temporary: true, dmarc: { result: 'fail', policy: 'reject' } }), p, 'accept'],
    ['temperror, tenant says defer', auth({ temporary: true, dmarc: { result: 'fail', policy: 'reject' } }), { ...p, temporary: 'defer' as const }, '451 CHECK_TEMPFAIL'],
  ])('%s → %s', (_name, a, policy, want) => {
    const r = decide(a, policy, env);
    expect(r ? `${r.code === 'CHECK_TEMPFAIL' ? 451 : 550} ${r.code}` : 'accept').toBe(want);
  });
  it('names the From: domain in a DMARC refusal', () => {
    expect(decide(auth({ dmarc: { result: 'fail', policy: 'reject' } }), p, env)?.text).toMatch(/^Message refused: its From: domain d\.test publishes a DMARC policy of reject/);
  });
});

describe('stripFields: the one way fields leave a received message', () => {
  it('takes out what it is asked to, folded lines included, for both our results and a sender\'s spam verdict; the rest stays byte for byte', async () => {
    const { stripFields } = await import('../../../src/mail/fields.ts');
    const { stripSpamFields } = await import('../../../src/mail/rspamd.ts');
    const head =
      'Authentication-Results: mx.test;\r\n\tspf=pass\r\nX-Spam-Symbols: A(1),\r\n\tB(2)\r\nReceived: from a\r\n\tby b\r\nX-Spam: Yes\r\nX-Spammer: kept\r\nSubject:  two  spaces \r\n';
    const raw = Buffer.from(`${head}\r\nX-Spam: in the body\r\n`, 'latin1');
    const spam = stripSpamFields(raw);
    expect(spam.removed).toBe(2);
    expect(spam.raw.toString('latin1')).toBe(
      'Authentication-Results: mx.test;\r\n\tspf=pass\r\nReceived: from a\r\n\tby b\r\nX-Spammer: kept\r\nSubject:  two  spaces \r\n\r\nX-Spam: in the body\r\n',
    );
    const ours = stripOurResults(spam.raw, 'MX.test');
    expect(ours.removed).toBe(1);
    expect(ours.raw.toString('latin1')).toBe('Received: from a\r\n\tby b\r\nX-Spammer: kept\r\nSubject:  two  spaces \r\n\r\nX-Spam: in the body\r\n');
    // The value a predicate sees is unfolded; nothing asked for, nothing copied.
    const seen: string[] = [];
    expect(stripFields(raw, (name, value) => (seen.push(`${name}=${value}`), false)).raw).toBe(raw);
    expect(seen[0]).toBe('authentication-results= mx.test;\tspf=pass');
  });
});
