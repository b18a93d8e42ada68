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

describe('postmaster@ and abuse@ (RFC 5321 §4.5.1, RFC 2142)', () => {
  const tenants = {
    'a.test': { domains: ['a.test', 'www.a.test'], mail: { forward: { info: 'alice@remote.test', postmaster: 'pm@a-owner.test' } } },
    'b.test': { domains: ['b.test'], mail: { catchAll: 'carol@remote.test', forward: { help: ['postmaster@c.test', 'abuse@mx.test'] } } },
    'c.test': { domains: ['c.test'] },
    'loopy.test': { domains: ['loopy.test'], mail: { forward: { abuse: 'abuse@loopy.test' } } },
    'shut.test': { domains: ['shut.test'], suspended: true, mail: { forward: { postmaster: 'x@remote.test' } } },
    'lists.test': { domains: ['lists.test'], mail: { lists: { abuse: { owner: 'o@remote.test' } } } },
  };
  const withOps = registryOf(tenants, { mail: { postmaster: 'ops@isp.test' }, smtp: { listen: '127.0.0.1:0', srsDomain: 'srs.test' } });
  const without = registryOf(tenants, { smtp: { listen: '127.0.0.1:0', srsDomain: 'srs.test' } });
  function show(r: RcptRoute): string {
    if (!r.ok) return `${r.reason}${r.noPostmaster ? ' (no postmaster)' : ''}`;
    return `${r.kind === 'operator' ? 'operator' : r.kind === 'list' ? `list ${r.list}` : r.tenant.id} ${r.targets.join(',')}`.trim();
  }
  it.each<[string, string, string]>([
    // address, with mail.postmaster, without
    ['postmaster@a.test', 'a.test pm@a-owner.test', 'a.test pm@a-owner.test'],
    ['POSTMASTER@WWW.A.TEST', 'a.test pm@a-owner.test', 'a.test pm@a-owner.test'],
    ['abuse@a.test', 'operator ops@isp.test', 'unknown-user (no postmaster)'],
    ['Abuse@a.test', 'operator ops@isp.test', 'unknown-user (no postmaster)'],
    // The catch-all is not asked for these addresses while the operator has one.
    ['postmaster@b.test', 'operator ops@isp.test', 'b.test carol@remote.test'],
    ['anyone@b.test', 'b.test carol@remote.test', 'b.test carol@remote.test'],
    // A tenant without any mail settings.
    ['postmaster@c.test', 'operator ops@isp.test', 'unknown-user (no postmaster)'],
    ['other@c.test', 'unknown-user', 'unknown-user'],
    // A forward that reaches them goes the same way.
    ['help@b.test', 'b.test ops@isp.test', 'b.test abuse@mx.test'],
    // The tenant's own forward leading nowhere: the operator's mailbox instead.
    ['abuse@loopy.test', 'operator ops@isp.test', 'loop (no postmaster)'],
    // A suspended tenant's mail waits; the operator's does not.
    ['postmaster@shut.test', 'operator ops@isp.test', 'suspended (no postmaster)'],
    ['info@shut.test', 'suspended', 'suspended'],
    // A list of that name is the tenant's own.
    ['abuse@lists.test', 'list abuse', 'list abuse'],
    // The server's own names (hostname, SRS domain) and bare <postmaster>.
    ['postmaster@mx.test', 'operator ops@isp.test', 'relay-denied (no postmaster)'],
    ['abuse@MX.test.', 'operator ops@isp.test', 'relay-denied (no postmaster)'],
    ['postmaster@srs.test', 'operator ops@isp.test', 'relay-denied (no postmaster)'],
    ['info@mx.test', 'relay-denied', 'relay-denied'],
    ['postmaster', 'operator ops@isp.test', 'syntax (no postmaster)'],
    ['<PostMaster>', 'operator ops@isp.test', 'syntax (no postmaster)'],
    ['abuse', 'syntax', 'syntax'],
    // Never a relay: foreign domains, hidden routes and look-alikes.
    ['postmaster@other.test', 'relay-denied', 'relay-denied'],
    ['postmaster@sub.mx.test', 'relay-denied', 'relay-denied'],
    ['postmaster%other.test@mx.test', 'relay-denied', 'relay-denied'],
    ['"postmaster@other.test"@a.test', 'relay-denied', 'relay-denied'],
    ['@mx.test:postmaster@other.test', 'relay-denied', 'relay-denied'],
    ['postmaster@[127.0.0.1]', 'relay-denied', 'relay-denied'],
    ['postmasters@c.test', 'unknown-user', 'unknown-user'],
    ['postmaster+x@c.test', 'unknown-user', 'unknown-user'],
  ])('%s → %s | %s', (addr, want, wantWithout) => {
    expect(show(withOps.route(addr))).toBe(want);
    expect(show(without.route(addr))).toBe(wantWithout);
  });

  it('follows mail.postmaster through hosted forwards, and says when it leads nowhere', () => {
    const hosted = registryOf({ 'isp.test': { domains: ['isp.test'], mail: { forward: { ops: ['a@remote.test', 'b@remote.test'] } } } }, { mail: { postmaster: 'ops@isp.test' } });
    expect(show(hosted.route('postmaster@mx.test'))).toBe('operator a@remote.test,b@remote.test');
    const dead = registryOf({ 'isp.test': { domains: ['isp.test'] } }, { mail: { postmaster: 'postmaster@isp.test' } });
    expect(show(dead.route('abuse@isp.test'))).toBe('loop');
    expect(dead.postmaster()?.targets).toEqual([]);
    expect(dead.postmaster()?.problems.join()).toContain('forwarding loop: postmaster@isp.test → postmaster@isp.test');
    expect(registryOf({}).postmaster()).toBeUndefined();
  });
});
