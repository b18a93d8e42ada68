import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { openState, type State } from '../../../src/state/index.ts';
import { restoreTenantRows } from '../../../src/state/tenantdata.ts';

let dir: string;
let state: State | undefined;
afterEach(() => {
  state?.close();
  rmSync(dir, { recursive: true, force: true });
});

it('restoring a tenant adds its archived traffic to a day counted again while it was away', () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'mw-tenantdata-'));
  state = openState(dir);
  const db = state.db;
  // The server flushed a request for the id after the removal (the suite serves the id's 404 meanwhile).
  db.prepare('INSERT INTO traffic (tenant, day, requests, bytes) VALUES (?, ?, ?, ?)').run('gone.test', '2026-12-06', 1, 100);
  restoreTenantRows(db, 'gone.test', { traffic: [{ tenant: 'gone.test', day: '2026-12-06', requests: 7, bytes: 700 }, { tenant: 'gone.test', day: '2026-12-05', requests: 3, bytes: 30 }] });
  expect(db.prepare('SELECT day, requests, bytes FROM traffic WHERE tenant = ? ORDER BY day').all('gone.test')).toEqual([
    { day: '2026-12-05', requests: 3, bytes: 30 },
    { day: '2026-12-06', requests: 8, bytes: 800 },
  ]);
});
