import { describe, expect, it } from 'vitest';
import { CrlfNormalizer } from '../../../src/mail/crlf.ts';
import { Srs } from '../../../src/mail/srs.ts';

function normalize(chunks: string[]): string {
  const n = new CrlfNormalizer();
  return chunks.map((c) => n.push(Buffer.from(c, 'latin1')).toString('latin1')).join('') + n.end().toString('latin1');
}

describe('CrlfNormalizer', () => {
  const table: Array<[string[], string]> = [
    [['a\r\nb\r\n'], 'a\r\nb\r\n'],
    [['a\nb\n'], 'a\r\nb\r\n'],
    [['a\rb\r'], 'a\r\nb\r\n'],
    [['x\n.\ny'], 'x\r\n.\r\ny'],
    [['x\r.\ry'], 'x\r\n.\r\ny'],
    [['x\n.\r\ny'], 'x\r\n.\r\ny'],
    [['x\r\n.\ny'], 'x\r\n.\r\ny'],
    [['a\r', '\nb'], 'a\r\nb'],
    [['a\r', 'b'], 'a\r\nb'],
    [['a\r', '\r', '\n'], 'a\r\n\r\n'],
    [['a', '\n'], 'a\r\n'],
    [['\n'], '\r\n'],
    [['a\r'], 'a\r\n'],
    [['\r\n\r\n'], '\r\n\r\n'],
  ];
  it.each(table)('%j → %j', (chunks, want) => {
    expect(normalize(chunks)).toBe(want);
  });
});

describe('SRS', () => {
  const day = 86_400_000;
  let now = 1_780_000_000_000;
  const srs = new Srs(Buffer.alloc(32, 7), 'mx.test', () => now);

  it('round-trips and leaves null senders and our own domain alone', () => {
    const a = srs.forward('Bob@Elsewhere.test');
    expect(a).toMatch(/^SRS0=[A-Za-z0-9x]{6}=[A-Z2-7]{2}=elsewhere\.test=Bob@mx\.test$/);
    const local = a.slice(0, a.lastIndexOf('@'));
    expect(srs.reverse(local)).toEqual({ ok: true, address: 'Bob@elsewhere.test' });
    expect(srs.reverse(local.toLowerCase())).toEqual({ ok: true, address: 'bob@elsewhere.test' });
    expect(srs.forward('')).toBe('');
    expect(srs.forward('x@mx.test')).toBe('x@mx.test');
  });

  it('refuses a forged hash, another secret, and an expired stamp', () => {
    const local = srs.forward('bob@elsewhere.test').split('@')[0]!;
    const forged = local.replace(/^SRS0=(.)/, (_m, c: string) => `SRS0=${c === 'a' ? 'b' : 'a'}`);
    expect(srs.reverse(forged)).toEqual({ ok: false, why: 'SRS hash does not match' });
    expect(srs.reverse(local.replace('elsewhere.test', 'victim.test'))).toEqual({ ok: false, why: 'SRS hash does not match' });
    expect(new Srs(Buffer.alloc(32, 8), 'mx.test', () => now).reverse(local).ok).toBe(false);
    expect(srs.reverse('plain')).toEqual({ ok: false, why: 'not an SRS0 address' });
    now += 21 * day;
    expect(srs.reverse(local).ok).toBe(true);
    now += day;
    expect(srs.reverse(local)).toEqual({ ok: false, why: 'SRS address has expired' });
  });
});
