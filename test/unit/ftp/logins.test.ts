import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loginRules, openState, throttledLogin, type LoginRule, type State } from '../../../src/state/index.ts';

let dir: string;
let state: State;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'mw-logins-'));
  state = openState(dir);
});
afterEach(() => {
  state.close();
  rmSync(dir, { recursive: true, force: true });
});

const WINDOW = 600_000;
const LOCK = 300_000;
const rules = (ip: string): LoginRule[] => [
  { key: `pair:alice@a.test|${ip}`, account: 'alice@a.test', limit: 3 },
  { key: 'account:alice@a.test', account: 'alice@a.test', limit: 5 },
  { key: `address:${ip}`, account: '', limit: 50 },
];

describe('FTP login locks (state)', () => {
  it('attempts still being checked count: a fourth reservation is refused while three are pending', () => {
    const l = state.ftpLogins;
    const tickets = [1, 2, 3].map(() => l.reserve(rules('192.0.2.1'), WINDOW, 1_000));
    expect(tickets.every((t) => 'ticket' in t)).toBe(true);
    expect(l.reserve(rules('192.0.2.1'), WINDOW, 1_000)).toMatchObject({ key: 'pair:alice@a.test|192.0.2.1' });
    // Another address is counted apart.
    expect('ticket' in l.reserve(rules('192.0.2.2'), WINDOW, 1_000)).toBe(true);
  });

  it('locks at the limit, per address and then for the account; success forgives the pair; unlock lifts the account locks only', () => {
    const l = state.ftpLogins;
    const fail = (ip: string, now: number) => {
      const r = l.reserve(rules(ip), WINDOW, now);
      if (!('ticket' in r)) return r;
      return l.failed(r.ticket, rules(ip), WINDOW, LOCK, now);
    };
    expect(fail('192.0.2.1', 1)).toEqual([]);
    expect(fail('192.0.2.1', 2)).toEqual([]);
    expect(fail('192.0.2.1', 3)).toEqual(['pair:alice@a.test|192.0.2.1']);
    expect(fail('192.0.2.1', 4)).toMatchObject({ lockedMs: LOCK - 1, key: 'pair:alice@a.test|192.0.2.1' });
    const ok = l.reserve(rules('192.0.2.2'), WINDOW, 5);
    expect('ticket' in ok).toBe(true);
    if ('ticket' in ok) l.succeeded(ok.ticket, [rules('192.0.2.2')[0]!.key]);
    expect(fail('192.0.2.3', 6)).toEqual([]);
    expect(fail('192.0.2.3', 7)).toEqual(['account:alice@a.test']);
    expect(l.reserve(rules('192.0.2.4'), WINDOW, 8)).toMatchObject({ key: 'account:alice@a.test' });
    expect(l.locks(8).map((k) => k.key).sort()).toEqual(['account:alice@a.test', 'pair:alice@a.test|192.0.2.1']);
    expect(l.unlock('alice@a.test', 9)).toBe(2);
    expect('ticket' in l.reserve(rules('192.0.2.1'), WINDOW, 10)).toBe(true);
  });

  it('reservations left by a stopped process are dropped at start', () => {
    const l = state.ftpLogins;
    for (let i = 0; i < 3; i++) l.reserve(rules('192.0.2.1'), WINDOW, 1);
    l.dropPending();
    expect('ticket' in l.reserve(rules('192.0.2.1'), WINDOW, 2)).toBe(true);
  });

  it('counts an IPv6 client by its /64 and an IPv4-mapped one as its IPv4 address: other addresses of the /64 are locked too', async () => {
    const lockout = { failures: 3, accountFailures: 100, addressFailures: 100, windowSeconds: 600, lockSeconds: 300 };
    expect(loginRules(lockout, 'alice@a.test', '2001:db8:1:2::7').map((r) => r.key)).toEqual(['pair:alice@a.test|2001:db8:1:2::/64', 'account:alice@a.test', 'address:2001:db8:1:2::/64']);
    expect(loginRules(lockout, 'alice@a.test', '::ffff:192.0.2.7')[0]!.key).toBe('pair:alice@a.test|192.0.2.7');
    const wrong = async () => false;
    // Three failures, each from another address of one /64 (as a client picking a fresh address each time would).
    for (const ip of ['2001:db8:1:2::1', '2001:db8:1:2::2', '2001:db8:1:2:ffff::3']) expect(await throttledLogin(state.ftpLogins, lockout, 'alice@a.test', ip, wrong)).toMatchObject({ ok: false });
    expect(await throttledLogin(state.ftpLogins, lockout, 'alice@a.test', '2001:db8:1:2::4', async () => true)).toMatchObject({ ok: false, key: 'pair:alice@a.test|2001:db8:1:2::/64' });
    // Another /64 is another client.
    expect(await throttledLogin(state.ftpLogins, lockout, 'alice@a.test', '2001:db8:1:3::1', async () => true)).toEqual({ ok: true });
  });
});
