import { describe, expect, it } from 'vitest';
import { clientFields, clientKey, PeerCounter } from '../../../src/lib/peers.ts';

describe('clientKey (the budget a client address counts against)', () => {
  const table: Array<[string, string, string]> = [
    // IPv4 as it is.
    ['IPv4', '192.0.2.7', '192.0.2.7'],
    ['IPv4 loopback', '127.0.0.1', '127.0.0.1'],
    ['IPv4 zero', '0.0.0.0', '0.0.0.0'],
    // IPv4-mapped IPv6 (a dual-stack listener's IPv4 client) as the IPv4 address.
    ['mapped, dotted', '::ffff:192.0.2.7', '192.0.2.7'],
    ['mapped, upper case', '::FFFF:192.0.2.7', '192.0.2.7'],
    ['mapped, hex groups', '::ffff:c000:207', '192.0.2.7'],
    ['mapped, written out', '0:0:0:0:0:ffff:192.0.2.7', '192.0.2.7'],
    ['mapped, leading zeros', '0000:0000:0000:0000:0000:FFFF:7f00:0001', '127.0.0.1'],
    ['mapped loopback', '::ffff:127.0.0.1', '127.0.0.1'],
    // Other IPv6: the /64, canonical (RFC 5952).
    ['global', '2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['another address of the same /64', '2001:db8:1:2:ffff:ffff:ffff:ffff', '2001:db8:1:2::/64'],
    ['compressed interface id', '2001:db8:1:2::1', '2001:db8:1:2::/64'],
    ['upper case, leading zeros', '2001:0DB8:0001:0002:0000:0000:0000:0001', '2001:db8:1:2::/64'],
    ['zeros inside the prefix', '2001:db8:0:0:1::1', '2001:db8::/64'],
    ['compression across the /64 boundary', '2001:db8::1', '2001:db8::/64'],
    ['a neighbouring /64', '2001:db8:1:3::1', '2001:db8:1:3::/64'],
    ['no zero group in the prefix', 'fd12:3456:789a:1::5', 'fd12:3456:789a:1::/64'],
    ['loopback', '::1', '::/64'],
    ['unspecified', '::', '::/64'],
    ['IPv4-compatible (deprecated; not mapped)', '::192.0.2.7', '::/64'],
    ['embedded IPv4 in a global address', '64:ff9b::192.0.2.7', '64:ff9b::/64'],
    ['link-local with a zone id', 'fe80::1%eth0', 'fe80::/64'],
    ['link-local with a numeric zone id', 'fe80::abcd:1%2', 'fe80::/64'],
    ['a trailing run', '2001:db8:1:2:3::', '2001:db8:1:2::/64'],
    // Not an address: the input itself.
    ['empty', '', ''],
    ['the placeholder for no address', '-', '-'],
    ['bracketed', '[::1]', '[::1]'],
    ['with a port', '192.0.2.7:25', '192.0.2.7:25'],
    ['IPv4 with leading zeros (octal in some parsers)', '010.0.0.1', '010.0.0.1'],
    ['IPv4 out of range', '256.1.1.1', '256.1.1.1'],
    ['two gaps', '1::2::3', '1::2::3'],
    ['nine groups', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7:8:9'],
    ['a group of five digits', '12345::1', '12345::1'],
    ['mapped with a bad IPv4', '::ffff:1.2.3.256', '::ffff:1.2.3.256'],
    ['space around', ' 192.0.2.7 ', ' 192.0.2.7 '],
    ['an empty zone id', 'fe80::1%', 'fe80::1%'],
    ['a host name', 'localhost', 'localhost'],
    ['a NUL inside', '192.0.2.7\0', '192.0.2.7\0'],
  ];
  it.each(table)('%s: %j → %j', (_what, input, key) => {
    expect(clientKey(input)).toBe(key);
  });

  it('gives every address of one /64 one key, and another /64 another', () => {
    const keys = new Set(['2001:db8:a:b::1', '2001:db8:a:b:dead:beef:0:1', '2001:DB8:A:B:FFFF::', '2001:db8:a:b::ffff:1.2.3.4'].map(clientKey));
    expect([...keys]).toEqual(['2001:db8:a:b::/64']);
    expect(clientKey('2001:db8:a:c::1')).not.toBe(clientKey('2001:db8:a:b::1'));
  });

  it('log fields: the real address, and the key only when it differs', () => {
    expect(clientFields('192.0.2.7')).toEqual({ remote: '192.0.2.7' });
    expect(clientFields('::ffff:192.0.2.7')).toEqual({ remote: '::ffff:192.0.2.7', clientKey: '192.0.2.7' });
    expect(clientFields('2001:db8::5')).toEqual({ remote: '2001:db8::5', clientKey: '2001:db8::/64' });
  });
});

describe('PeerCounter (open connections per client key)', () => {
  it('admits up to the limit per key, then refuses; other keys are apart', () => {
    const c = new PeerCounter();
    const a = c.acquire('2001:db8:1:2::1', 2);
    const b = c.acquire('2001:db8:1:2::2', 2);
    expect(a.ok && b.ok).toBe(true);
    const third = c.acquire('2001:db8:1:2:ffff::9', 2);
    expect(third).toEqual({ ok: false, key: '2001:db8:1:2::/64', open: 2 });
    expect(c.acquire('2001:db8:1:3::1', 2).ok).toBe(true);
    expect(c.acquire('192.0.2.7', 1).ok).toBe(true);
    expect(c.acquire('::ffff:192.0.2.7', 1).ok).toBe(false);
  });

  it('frees a slot on release, once however often release is called', () => {
    const c = new PeerCounter();
    const first = c.acquire('192.0.2.7', 2);
    const second = c.acquire('192.0.2.7', 2);
    if (!first.ok || !second.ok) throw new Error('not admitted');
    first.release();
    first.release();
    first.release();
    expect(c.count('192.0.2.7')).toBe(1);
    expect(c.acquire('192.0.2.7', 2).ok).toBe(true);
    expect(c.acquire('192.0.2.7', 2).ok).toBe(false);
  });

  it('forgets a key whose last connection closed', () => {
    const c = new PeerCounter();
    const one = c.acquire('2001:db8::1', 5);
    if (!one.ok) throw new Error('not admitted');
    expect(c.size).toBe(1);
    one.release();
    expect(c.size).toBe(0);
    expect(c.count('2001:db8::1')).toBe(0);
  });

  it('limit 0 counts without a cap', () => {
    const c = new PeerCounter();
    for (let i = 0; i < 1000; i++) expect(c.acquire('192.0.2.7', 0).ok).toBe(true);
    expect(c.count('192.0.2.7')).toBe(1000);
  });
});
