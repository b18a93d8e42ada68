import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EVENTS_KEPT, PENDING_MAX } from '../../../src/state/mailstats.ts';
import { openState, type State } from '../../../src/state/index.ts';

let dir: string;
let state: State;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'mw-mailstats-'));
  state = openState(dir);
});
afterEach(() => {
  state.close();
  rmSync(dir, { recursive: true, force: true });
});

const DAY = 86_400_000;
const at = Date.parse('2026-12-06T12:00:00Z');
const ev = (tenant: string, kind: 'forwarded' | 'refused' | 'bounced', when: number, n = 0) => ({ tenant, kind, address: `info@${tenant}`, target: `t${n}@example.net`, sender: 's@example.org', reply: `250 ${n}`, at: when });

describe('per-tenant mail outcomes', () => {
  it('counts per tenant and UTC day, and reads what was recorded before it was written', () => {
    state.mailStats.record(ev('a.test', 'forwarded', at));
    state.mailStats.record(ev('a.test', 'forwarded', at));
    state.mailStats.record(ev('a.test', 'bounced', at));
    state.mailStats.record(ev('a.test', 'refused', at - DAY));
    state.mailStats.record(ev('b.test', 'forwarded', at));
    expect(state.mailStats.days('a.test', '2026-12-01')).toEqual([
      { day: '2026-12-05', forwarded: 0, refused: 1, bounced: 0 },
      { day: '2026-12-06', forwarded: 2, refused: 0, bounced: 1 },
    ]);
    expect(state.mailStats.days('a.test', '2026-12-06')).toHaveLength(1);
    expect(state.mailStats.days('b.test', '2026-12-01')).toEqual([{ day: '2026-12-06', forwarded: 1, refused: 0, bounced: 0 }]);
  });

  it(`keeps the newest ${EVENTS_KEPT} outcomes of each tenant, newest first, and writes what is pending at close`, () => {
    for (let i = 0; i < EVENTS_KEPT + 30; i++) state.mailStats.record(ev('a.test', 'forwarded', at + i, i));
    state.mailStats.record(ev('b.test', 'bounced', at));
    const recent = state.mailStats.recent('a.test', 1000);
    expect(recent).toHaveLength(EVENTS_KEPT);
    expect(recent[0]!.target).toBe(`t${EVENTS_KEPT + 29}@example.net`);
    expect(recent.at(-1)!.target).toBe('t30@example.net');
    expect(state.mailStats.recent('a.test', 3).map((e) => e.reply)).toEqual([`250 ${EVENTS_KEPT + 29}`, `250 ${EVENTS_KEPT + 28}`, `250 ${EVENTS_KEPT + 27}`]);
    expect(state.mailStats.recent('b.test')).toHaveLength(1);
    // The day's count is not pruned with the outcomes.
    expect(state.mailStats.days('a.test', '2026-12-06')[0]!.forwarded).toBe(EVENTS_KEPT + 30);

    state.mailStats.record(ev('c.test', 'refused', at));
    state.close();
    state = openState(dir);
    expect(state.mailStats.days('c.test', '2026-12-06')[0]!.refused).toBe(1);
  });
});

describe('per-tenant mail outcomes under load and failure', () => {
  it(`counts every outcome of the day even past ${PENDING_MAX} waiting for their write (only the oldest outcomes themselves are dropped)`, () => {
    for (let i = 0; i < PENDING_MAX + 700; i++) state.mailStats.record(ev('a.test', 'refused', at, i));
    expect(state.mailStats.days('a.test', '2026-12-06')).toEqual([{ day: '2026-12-06', forwarded: 0, refused: PENDING_MAX + 700, bounced: 0 }]);
    expect(state.mailStats.recent('a.test', 1)[0]!.reply).toBe(`250 ${PENDING_MAX + 699}`);
  });

  it('a write that fails is told (not thrown, not lost): what was pending is written by the next one', () => {
    const told: string[] = [];
    state.mailStats.onError = (err) => told.push(err.message);
    state.db.exec(`CREATE TEMP TRIGGER refuse_events BEFORE INSERT ON mail_events WHEN NEW.tenant = 'a.test' BEGIN SELECT RAISE(ABORT, 'disk says no'); END`);
    state.mailStats.record(ev('a.test', 'forwarded', at));
    state.mailStats.record(ev('b.test', 'bounced', at));
    expect(state.mailStats.days('b.test', '2026-12-01')).toEqual([]);
    expect(told).toEqual(['disk says no']);
    state.db.exec('DROP TRIGGER refuse_events');
    state.mailStats.record(ev('a.test', 'forwarded', at));
    expect(state.mailStats.days('a.test', '2026-12-01')).toEqual([{ day: '2026-12-06', forwarded: 2, refused: 0, bounced: 0 }]);
    expect(state.mailStats.days('b.test', '2026-12-01')).toEqual([{ day: '2026-12-06', forwarded: 0, refused: 0, bounced: 1 }]);
    expect(told).toHaveLength(1);
  });
});
