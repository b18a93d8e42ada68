import { existsSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest } from '../../helpers/http.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import { aliceAndBob, logLine, PANEL_HOST, PanelClient } from './helpers.ts';

// A customer downloads its own access log (today's and the rotated days)
// from the Traffic page: the bytes on disk, as an attachment that runs
// nothing; no other tenant's, no other file.

let t: TestSuite;
let c: PanelClient;
const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
const logsOf = (tenant: string) => path.join(t.dataDir, 'logs', tenant);

beforeAll(async () => {
  t = await startTestSuite({ main: { panel: { host: PANEL_HOST } }, ...(await aliceAndBob()) });
  // Real requests, one with markup in its path and referrer: today's log is the HTTP service's own.
  await rawRequest(t.http, '/', { host: 'example.test' });
  await rawRequest(t.http, '/%3Cscript%3Ealert(1)%3C/script%3E', { host: 'example.test', referer: 'https://evil.example/"><img src=x onerror=alert(1)>' });
  await rawRequest(t.http, '/', { host: 'other.test' });
  await waitFor(() => existsSync(path.join(logsOf('example.test'), 'access.log')) && readFileSync(path.join(logsOf('example.test'), 'access.log'), 'utf8').split('\n').length > 2, 5_000, 'the access log written');
  await waitFor(() => existsSync(path.join(logsOf('other.test'), 'access.log')), 5_000, "the other tenant's log");
  writeFileSync(path.join(logsOf('example.test'), `access.log.${yesterday}`), logLine({ when: new Date(Date.now() - 86_400_000), path: '/yesterday', status: 200, bytes: 7 }));
  c = new PanelClient(t.http);
  await c.login('alice@example.test', 'wonderland');
}, 30_000);
afterAll(() => t?.stop());

describe('access log downloads', () => {
  it('lists today and the rotated days on the Traffic page, and sends each as it is on disk', async () => {
    const page = await c.get('/t/example.test/traffic');
    expect(page.text).toContain('<a href="/t/example.test/logs/access.log" download>access.log</a> (today (since the last rotation)');
    expect(page.text).toContain(`<a href="/t/example.test/logs/access.log.${yesterday}" download>`);

    const today = await c.get('/t/example.test/logs/access.log');
    expect(today.status).toBe(200);
    expect(today.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(today.headers['content-disposition']).toBe('attachment; filename="example.test-access.log"');
    expect(today.headers['content-security-policy']).toBe("default-src 'none'; sandbox");
    expect(today.headers['x-content-type-options']).toBe('nosniff');
    const disk = readFileSync(path.join(logsOf('example.test'), 'access.log'));
    expect(today.body.equals(disk)).toBe(true);
    expect(today.text).toContain('"GET /%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1" 404');
    expect(today.text).not.toContain('other.test');

    const old = await c.get(`/t/example.test/logs/access.log.${yesterday}`);
    expect(old.status).toBe(200);
    expect(old.text).toContain('GET /yesterday HTTP/1.1');
  });

  it('refuses another name, a path out of the folder and a planted link with 404', async () => {
    for (const name of ['access.log.x', 'ftp.log', '..%2F..%2Fmakewaves.db', '..%2Fother.test%2Faccess.log', 'access.log%00']) {
      const res = await c.get(`/t/example.test/logs/${name}`);
      expect(res.status, name).toBe(404);
      expect(res.text, name).not.toContain('other.test -');
    }
    symlinkSync('/etc/passwd', path.join(logsOf('example.test'), 'access.log.2000-01-01'));
    const link = await c.get('/t/example.test/logs/access.log.2000-01-01');
    expect(link.status).toBe(404);
    expect(link.text).not.toContain('root:');
  });

  it("refuses another tenant's log with 403, logged and audited", async () => {
    const res = await c.get('/t/other.test/logs/access.log');
    expect(res.status).toBe(403);
    expect(res.text).not.toContain('GET / HTTP/1.1');
    expect(t.logs().some((l) => l.msg === 'panel request refused' && l.tenant === 'other.test' && l.why === 'another tenant')).toBe(true);
    expect(t.suite.state.panel.auditLog({ tenant: 'other.test' }).some((e) => e.action === 'denied' && e.detail.includes('/logs/access.log'))).toBe(true);
  });
});


