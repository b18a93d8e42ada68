import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';
import { PANEL_HOST, PanelClient } from './helpers.ts';

// A logged-in customer misusing the panel: broken escapes in the path.

let t: TestSuite;
let c: PanelClient;

beforeAll(async () => {
  t = await startTestSuite({
    main: { panel: { host: PANEL_HOST } },
    tenants: {
      'example.test': { domains: ['example.test'], ftp: [{ user: 'alice', password: await hashPassword('wonderland') }], mail: { lists: { news: { owner: 'owner@example.net' } } } },
      'other.test': { domains: ['other.test'], ftp: [{ user: 'bob', password: await hashPassword('builder') }] },
    },
  });
  c = new PanelClient(t.http);
  expect((await c.login('alice@example.test', 'wonderland')).status).toBe(303);
}, 30_000);
afterAll(async () => {
  await t?.stop();
});

describe('bad paths of a logged-in customer', () => {
  it('answers a broken %-escape in the tenant or a list name with 404, not a server error', async () => {
    for (const p of ['/t/%E0%A4%A/', '/t/example.test%ZZ/forwards', '/t/example.test/lists/%E0%A4', '/t/example.test/lists/news%/members.csv']) {
      const res = await c.get(p);
      expect(res.status, p).toBe(404);
    }
    expect(t.logs().some((l) => l.msg === 'panel request failed')).toBe(false);
    expect(t.logs().some((l) => l.msg === 'panel request refused' && l.why === 'broken %-escape in the tenant')).toBe(true);
  });
});
