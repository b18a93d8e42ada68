import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openState, type State } from '../../../src/state/index.ts';

let dir: string;
let state: State;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'mw-panel-state-'));
  state = openState(dir);
});
afterEach(() => {
  state.close();
  rmSync(dir, { recursive: true, force: true });
});

const MIN = 60_000;
const session = (created: number) => ({ login: 'alice@example.test', tenant: 'example.test', csrf: 'c'.repeat(43), keyTag: 'k', remote: '192.0.2.7', created });

describe('panel sessions', () => {
  it('keep a session while it is used within the idle time, and end it after', () => {
    state.panel.createSession('id-1', session(0));
    expect(state.panel.session('id-1', 30 * MIN, 12 * 60 * MIN, 29 * MIN)?.tenant).toBe('example.test');
    // Each use moves the idle deadline on.
    expect(state.panel.session('id-1', 30 * MIN, 12 * 60 * MIN, 58 * MIN)?.lastSeen).toBe(58 * MIN);
    expect(state.panel.session('id-1', 30 * MIN, 12 * 60 * MIN, 89 * MIN)).toBeUndefined();
    // Gone for good, not just refused once.
    expect(state.panel.session('id-1', 30 * MIN, 12 * 60 * MIN, 89 * MIN + 1)).toBeUndefined();
  });

  it('end a busy session at its maximum age', () => {
    state.panel.createSession('id-2', session(0));
    let t = 0;
    for (; t < 12 * 60 * MIN; t += 20 * MIN) expect(state.panel.session('id-2', 30 * MIN, 12 * 60 * MIN, t)).toBeDefined();
    expect(state.panel.session('id-2', 30 * MIN, 12 * 60 * MIN, 12 * 60 * MIN + 1)).toBeUndefined();
  });

  it('store only a hash of the cookie value', () => {
    state.panel.createSession('the-cookie-value', session(Date.now()));
    const rows = state.db.prepare('SELECT * FROM panel_sessions').all();
    expect(JSON.stringify(rows)).not.toContain('the-cookie-value');
    expect(state.panel.session('the-cookie-valuf', 30 * MIN, 12 * 60 * MIN)).toBeUndefined();
  });

  it("end every session of a login but the one given, and prune idle ones", () => {
    const now = Date.now();
    state.panel.createSession('a', session(now));
    state.panel.createSession('b', session(now));
    state.panel.createSession('c', { ...session(now - 60 * MIN), login: 'carol@example.test' });
    expect(state.panel.endSessionsOf('alice@example.test', 'a')).toBe(1);
    expect(state.panel.session('a', 30 * MIN, 12 * 60 * MIN, now)).toBeDefined();
    expect(state.panel.session('b', 30 * MIN, 12 * 60 * MIN, now)).toBeUndefined();
    expect(state.panel.prune(30 * MIN, 12 * 60 * MIN, now)).toBe(1);
  });
});

describe('panel audit log', () => {
  it('keeps who, when, what and from where, newest last, by tenant', () => {
    state.panel.audit({ at: 1, login: 'alice@example.test', tenant: 'example.test', action: 'login', detail: '', remote: '192.0.2.7' });
    state.panel.audit({ at: 2, login: 'alice@example.test', tenant: 'other.test', action: 'denied', detail: 'GET /t/other.test/: another tenant', remote: '192.0.2.7' });
    state.panel.audit({ at: 3, login: 'alice@example.test', tenant: 'example.test', action: 'forward-add', detail: 'sales@example.test → a@example.net', remote: '192.0.2.7' });
    expect(state.panel.auditLog({ tenant: 'example.test' }).map((e) => e.action)).toEqual(['login', 'forward-add']);
    expect(state.panel.auditLog({ limit: 2 }).map((e) => e.at)).toEqual([2, 3]);
  });
});
