import http from 'node:http';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { AUDITED_DENIALS_PER_MINUTE } from '../../../src/panel/index.ts';
import { AUDIT_FIELD_MAX } from '../../../src/state/panel.ts';
import { rawRequest } from '../../helpers/http.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import { PANEL_HOST, PanelClient } from './helpers.ts';

// A logged-in customer misusing the panel: broken escapes in the path, and a
// flood of refused requests, which must not grow the audit log without end.

let t: TestSuite;
let c: PanelClient;

beforeAll(async () => {
  t = await startTestSuite({
    main: { panel: { host: PANEL_HOST, limits: { listMembers: 3 } }, ftp: { listen: '127.0.0.1:0' } },
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

describe('keys a plain object cannot hold', () => {
  it('refuses a forward named __proto__ (it would be dropped unseen after "added"); the file stays as it was', async () => {
    const file = path.join(t.configDir, 'tenants', 'example.test.yaml');
    const before = readFileSync(file, 'utf8');
    const csrf = await c.csrf('/t/example.test/forwards');
    const res = await c.post('/t/example.test/forwards', { csrf, address: '__proto__', targets: 'a@example.net' });
    expect(res.status).toBe(400);
    expect(res.text).toContain('id="address-error">tenant &quot;example.test&quot;: mail.forward.__proto__: &quot;__proto__&quot; cannot be a key; nothing changed</p>');
    expect(readFileSync(file, 'utf8')).toBe(before);
  });
});

describe('list members added from the panel (panel.limits.listMembers)', () => {
  it('refuses a member past the limit next to the field, nothing stored; an existing member may be added again', async () => {
    const csrf = await c.csrf('/t/example.test/lists/news');
    for (const m of ['a', 'b', 'c']) expect((await c.post('/t/example.test/lists/news/members', { csrf, address: `${m}@example.net` })).status).toBe(303);
    const fourth = await c.post('/t/example.test/lists/news/members', { csrf, address: 'd@example.net' });
    expect(fourth.status).toBe(400);
    expect(fourth.text).toContain('<p class="error" id="member-error">news@example.test: 4 members, more than the 3 the panel may add up to (panel.limits.listMembers); nothing changed</p>');
    expect(t.suite.state.lists.members('example.test', 'news').map((m) => m.address)).toEqual(['a@example.net', 'b@example.net', 'c@example.net']);
    expect(t.logs().some((l) => l.msg === 'panel list change refused' && String(l.why).includes('panel.limits.listMembers'))).toBe(true);
    expect((await c.post('/t/example.test/lists/news/members', { csrf, address: 'b@example.net' })).status).toBe(303);
  });
});

describe('zip uploads of one tenant', () => {
  const B = 'zipboundary';
  const head = (csrf: string) =>
    `--${B}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n${csrf}\r\n--${B}\r\nContent-Disposition: form-data; name="folder"\r\n\r\n/\r\n` +
    `--${B}\r\nContent-Disposition: form-data; name="file"; filename="site.zip"\r\nContent-Type: application/zip\r\n\r\n`;
  const tail = `\r\n--${B}--\r\n`;
  const headers = (length: number) => ({ host: PANEL_HOST, cookie: [...c.jar].map(([k, v]) => `${k}=${v}`).join('; '), 'content-type': `multipart/form-data; boundary=${B}`, 'content-length': String(length) });
  const scratch = () => {
    try {
      return readdirSync(path.join(t.dataDir, 'panel', 'uploads'));
    } catch {
      return []; // not made yet
    }
  };

  it('takes one at a time: a second while the first is still arriving is refused with 429, its scratch copy never made', async () => {
    const csrf = await c.csrf('/t/example.test/upload');
    const part = Buffer.alloc(64 * 1024, 'z');
    const u = new URL(t.http);
    const first = http.request({ host: u.hostname, port: u.port, path: '/t/example.test/upload/zip', method: 'POST', headers: headers(head(csrf).length + 2 * part.length + tail.length), agent: false });
    const firstDone = new Promise<number>((resolve, reject) => {
      first.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      first.on('error', reject);
    });
    first.write(head(csrf));
    first.write(part);
    await waitFor(() => scratch().length === 1, 5_000, 'the first archive in scratch');

    const body = head(csrf) + 'not a zip' + tail;
    const second = await rawRequest(t.http, '/t/example.test/upload/zip', headers(body.length), 'POST', body);
    expect(second.status).toBe(429);
    expect(second.body.toString()).toContain('Another archive of yours is being uploaded or unpacked');
    expect(scratch().length).toBe(1);
    expect(t.logs().some((l) => l.msg === 'panel zip upload refused' && l.why === 'another archive under way')).toBe(true);

    first.end(Buffer.concat([part, Buffer.from(tail)]));
    expect(await firstDone).toBe(400); // not a zip: read to the end and refused
    const third = await rawRequest(t.http, '/t/example.test/upload/zip', headers(body.length), 'POST', body);
    expect(third.status).toBe(400);
    expect(scratch()).toEqual([]);
  });
});

describe('a flood of refused requests', () => {
  it(`audits at most ${AUDITED_DENIALS_PER_MINUTE} refusals of one account a minute, each one short line; every refusal is logged`, async () => {
    const long = 'x'.repeat(12_000);
    const before = t.suite.state.panel.auditLog({ limit: 10_000 }).length;
    const n = AUDITED_DENIALS_PER_MINUTE + 20;
    for (let i = 0; i < n; i++) expect((await c.get(`/t/other.test/${long}`)).status).toBe(403);
    const added = t.suite.state.panel.auditLog({ limit: 10_000 }).slice(before);
    expect(added.length).toBe(AUDITED_DENIALS_PER_MINUTE + 1);
    for (const e of added) {
      expect(e.login).toBe('alice@example.test');
      expect(e.action).toBe('denied');
      expect(e.detail.length).toBeLessThanOrEqual(AUDIT_FIELD_MAX + 1);
    }
    expect(added.at(-1)!.detail).toMatch(/^more than \d+ refusals in a minute/);
    const logged = t.logs().filter((l) => l.msg === 'panel request refused' && l.user === 'alice@example.test' && l.why === 'another tenant');
    expect(logged.length).toBe(n);
    expect(logged.filter((l) => l.audited === false).length).toBe(n - AUDITED_DENIALS_PER_MINUTE);
  });

  it("keeps a tenant asked for in an audit entry short too (the path's to choose)", async () => {
    const other = new PanelClient(t.http);
    await other.login('bob@other.test', 'builder');
    expect((await other.get(`/t/${'y'.repeat(4000)}/`)).status).toBe(403);
    const last = t.suite.state.panel.auditLog({ limit: 1 })[0]!;
    expect(last.login).toBe('bob@other.test');
    expect(last.tenant.length).toBeLessThanOrEqual(AUDIT_FIELD_MAX + 1);
  });
});
