import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openState, type State } from '../../../src/state/index.ts';

let dir: string;
let state: State;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'lists-state-'));
  state = openState(dir);
});
afterEach(() => {
  state.close();
  rmSync(dir, { recursive: true, force: true });
});

const token = (address: string, expiresAt: number, list = 'news') =>
  ({ tenant: 'a.test', list, action: 'subscribe', address, mode: 'single', heldId: null, createdAt: 0, expiresAt }) as const;

describe('list state (real SQLite)', () => {
  it('a token is taken once, only for its own list, and only before it expires', () => {
    state.lists.addToken('h1', token('a@x.test', 1_000));
    expect(state.lists.takeToken('h1', 'a.test', 'other', 500)).toBeUndefined();
    expect(state.lists.takeToken('h1', 'a.test', 'news', 1_000)).toBeUndefined();
    expect(state.lists.peekToken('h1', 'a.test', 'news', 999)?.address).toBe('a@x.test');
    expect(state.lists.takeToken('h1', 'a.test', 'news', 999)?.address).toBe('a@x.test');
    expect(state.lists.takeToken('h1', 'a.test', 'news', 999)).toBeUndefined();
  });

  it('expire() removes expired tokens and held posts only', () => {
    state.lists.addToken('old', token('a@x.test', 100));
    state.lists.addToken('new', token('b@x.test', 10_000));
    state.lists.hold({ tenant: 'a.test', list: 'news', poster: 'p@x.test', subject: 's', reason: 'r', raw: Buffer.from('x'), createdAt: 0, expiresAt: 100 });
    state.lists.hold({ tenant: 'a.test', list: 'news', poster: 'q@x.test', subject: 's', reason: 'r', raw: Buffer.from('x'), createdAt: 0, expiresAt: 10_000 });
    expect(state.lists.expire(5_000)).toEqual({ tokens: 1, held: 1 });
    expect(state.lists.peekToken('new', 'a.test', 'news', 5_000)).toBeDefined();
    expect(state.lists.heldOf('a.test', 'news').map((h) => h.poster)).toEqual(['q@x.test']);
  });

  it('re-adding a member enables it and clears its bounce score; batches skip digest and disabled members', () => {
    state.lists.addMember('a.test', 'news', 'a@x.test', 'single', 0);
    state.lists.addMember('a.test', 'news', 'b@x.test', 'digest', 0);
    state.lists.addMember('a.test', 'news', 'c@x.test', 'single', 0);
    const c = state.lists.member('a.test', 'news', 'c@x.test')!;
    state.lists.setBounce(c.id, 5, '2026-01-01', true);
    expect(state.lists.deliveryBatch('a.test', 'news', 0, 10).map((m) => m.address)).toEqual(['a@x.test']);
    state.lists.addMember('a.test', 'news', 'c@x.test', 'single', 0);
    expect(state.lists.member('a.test', 'news', 'c@x.test')).toMatchObject({ disabled: false, bounceScore: 0, bounceDay: null });
    expect(state.lists.deliveryBatch('a.test', 'news', 0, 10).map((m) => m.address)).toEqual(['a@x.test', 'c@x.test']);
    expect(state.lists.digestMembers('a.test', 'news')).toEqual(['b@x.test']);
  });

  it('approving a held post moves it into the inbox in the same transaction, with its approval tokens gone', () => {
    const id = state.lists.hold({ tenant: 'a.test', list: 'news', poster: 'p@x.test', subject: 's', reason: 'r', raw: Buffer.from('post'), createdAt: 0, expiresAt: 10_000 });
    state.lists.addToken('appr', { ...token('owner@x.test', 10_000), action: 'approve', heldId: id });
    const inbox = state.lists.release(state.lists.held(id)!, true, 1)!;
    expect(state.lists.inboxGet(inbox)).toMatchObject({ role: 'post', approved: true, sender: 'p@x.test' });
    expect(state.lists.held(id)).toBeUndefined();
    expect(state.lists.peekToken('appr', 'a.test', 'news', 0)).toBeUndefined();
  });
});
