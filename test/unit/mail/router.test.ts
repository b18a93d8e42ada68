import { describe, expect, it } from 'vitest';
import { parseRecipient } from '../../../src/core/recipient.ts';
import type { RcptRoute } from '../../../src/core/registry.ts';
import { registryOf } from '../../helpers/registry.ts';

const reg = registryOf({
  'a.test': {
    domains: ['a.test', 'alias.a.test'],
    mail: {
      forward: {
        info: 'alice@remote.test',
        Sales: ['bob@remote.test', 'info@a.test'],
        loop1: 'loop2@a.test',
        loop2: 'loop1@a.test',
        partloop: ['loop1@a.test', 'ok@remote.test'],
        dead: 'nobody@c.test',
        d0: 'd1@a.test', d1: 'd2@a.test', d2: 'd3@a.test', d3: 'd4@a.test', d4: 'd5@a.test', d5: 'd6@a.test',
        d6: 'd7@a.test', d7: 'd8@a.test', d8: 'd9@a.test', d9: 'd10@a.test', d10: 'd11@a.test', d11: 'deep@remote.test',
      },
    },
  },
  'b.test': { domains: ['b.test'], mail: { catchAll: 'carol@remote.test' } },
  'c.test': { domains: ['c.test'] },
  'selfcatch.test': { domains: ['selfcatch.test'], mail: { catchAll: 'nobody@selfcatch.test' } },
});

function outcome(r: RcptRoute): string {
  return r.ok ? `ok ${r.targets.join(',')}` : r.reason;
}

describe('recipient routing: every relay trick is refused', () => {
  const table: Array<[string, string]> = [
    // plain cases
    ['info@a.test', 'ok alice@remote.test'],
    ['INFO@A.TEST', 'ok alice@remote.test'],
    ['info@a.test.', 'ok alice@remote.test'],
    ['<info@a.test>', 'ok alice@remote.test'],
    ['info@alias.a.test', 'ok alice@remote.test'],
    ['"info"@a.test', 'ok alice@remote.test'],
    ['sales@a.test', 'ok bob@remote.test,alice@remote.test'],
    ['nobody@a.test', 'unknown-user'],
    ['anyone@b.test', 'ok carol@remote.test'],
    ['anyone@c.test', 'unknown-user'],
    // domains we do not host
    ['x@other.test', 'relay-denied'],
    ['x@a.test.other.test', 'relay-denied'],
    ['x@sub.a.test', 'relay-denied'],
    ['x@[127.0.0.1]', 'relay-denied'],
    ['x@[IPv6:::1]', 'relay-denied'],
    // source routes: the route is dropped (RFC 5321 §C), the mailbox decides
    ['@a.test:x@other.test', 'relay-denied'],
    ['@a.test,@b.test:x@other.test', 'relay-denied'],
    ['<@a.test:x@other.test>', 'relay-denied'],
    ['@other.test:info@a.test', 'ok alice@remote.test'],
    // percent hack (a forward cannot be named so: the config refuses it, test/unit/core/config.test.ts)
    ['x%other.test@a.test', 'relay-denied'],
    ['x%other.test%a.test@a.test', 'relay-denied'],
    // bang paths
    ['other.test!x@a.test', 'relay-denied'],
    ['a.test!other.test!x@a.test', 'relay-denied'],
    // quoted local parts that hide another address or route
    ['"x@other.test"@a.test', 'relay-denied'],
    ['"x%other.test"@a.test', 'relay-denied'],
    ['"other.test!x"@a.test', 'relay-denied'],
    ['"@other.test:x"@a.test', 'relay-denied'],
    ['"x\\@other.test"@a.test', 'relay-denied'],
    ['x"@other.test"@a.test', 'relay-denied'],
    ['x\\@other.test@a.test', 'relay-denied'],
    ['x@other.test@a.test', 'relay-denied'],
    ['x:y@a.test', 'relay-denied'],
    ['x,y@a.test', 'relay-denied'],
    // not addresses
    ['', 'syntax'],
    ['postmaster', 'syntax'],
    ['@a.test', 'syntax'],
    ['x@', 'syntax'],
    ['"unterminated@a.test', 'syntax'],
    ['x y@a.test', 'syntax'],
    // loops and depth
    ['loop1@a.test', 'loop'],
    ['partloop@a.test', 'ok ok@remote.test'],
    ['dead@a.test', 'unknown-user'],
    ['d0@a.test', 'loop'],
    ['d2@a.test', 'ok deep@remote.test'],
    ['someone@selfcatch.test', 'loop'],
  ];
  it.each(table)('%s → %s', (addr, want) => {
    expect(outcome(reg.route(addr))).toBe(want);
  });

  it('reports the loop path and the tenant', () => {
    const r = reg.route('loop1@a.test');
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.tenant?.id).toBe('a.test');
      expect(r.detail).toContain('loop1@a.test → loop2@a.test → loop1@a.test');
    }
    const p = reg.route('partloop@a.test');
    expect(p.ok && p.problems.join()).toContain('forwarding loop');
  });
});

describe('parseRecipient', () => {
  it('unquotes with escapes and keeps the domain exact', () => {
    expect(parseRecipient('"a\\"b"@X.Test')).toEqual({ ok: true, local: 'a"b', domain: 'x.test' });
    expect(parseRecipient('"a b"@x.test')).toEqual({ ok: false, why: 'syntax', detail: expect.any(String) as string });
    expect(parseRecipient('"ab"@X.Test.')).toEqual({ ok: true, local: 'ab', domain: 'x.test' });
  });
});
