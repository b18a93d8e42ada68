import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest } from '../../helpers/http.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import { aliceAndBob, countsFromLogs, logLine, PANEL_HOST, PanelClient } from './helpers.ts';

let t: TestSuite;
let logs: string;
const DAY = 86_400_000;
const dayOf = (ms: number) => new Date(ms).toISOString().slice(0, 10);

beforeAll(async () => {
  t = await startTestSuite({ main: { panel: { host: PANEL_HOST } }, ...(await aliceAndBob()) });
  logs = path.join(t.dataDir, 'logs', 'example.test');
  mkdirSync(logs, { recursive: true });
  const now = Date.now();
  // Three earlier days in one rotated file, a line older than the plots among them, and a file too old to be read.
  const at = (days: number) => new Date(now - days * DAY);
  writeFileSync(
    path.join(logs, `access.log.${dayOf(now - 3 * DAY)}`),
    logLine({ when: at(35), path: '/ancient', status: 200, bytes: 1 }) +
      logLine({ when: at(5), path: '/', status: 200, bytes: 100 }) +
      logLine({ when: at(5), path: '/<script>alert(1)</script>', status: 404, bytes: 10 }) +
      logLine({ when: at(4), path: '/shop?x=1', status: 200, bytes: 2000, referer: 'https://search.example/?q=<b>"hi"</b>' }) +
      logLine({ when: at(4), path: '/cgi-bin/x', status: 502, bytes: 0 }) +
      'this is not a log line\n' +
      logLine({ when: at(3), path: '/shop', status: 200, bytes: 3000, referer: 'http://example.test/' }) +
      logLine({ when: at(3), path: '/old', status: 410, bytes: 5 }),
  );
  writeFileSync(path.join(logs, `access.log.${dayOf(now - 40 * DAY)}`), logLine({ when: at(40), path: '/', status: 200, bytes: 99 }));
}, 30_000);
afterAll(() => t?.stop());

/** The per-day rows of the traffic table: day → numbers. */
function tableOf(html: string): Map<string, { requests: number; bytes: number; c4xx: number; c5xx: number }> {
  const out = new Map<string, { requests: number; bytes: number; c4xx: number; c5xx: number }>();
  for (const m of html.matchAll(/<tr data-day="([\d-]+)">.*?data-k="requests" data-v="(\d+)".*?data-k="bytes" data-v="(\d+)".*?data-k="c4xx" data-v="(\d+)".*?data-k="c5xx" data-v="(\d+)"/g)) {
    out.set(m[1]!, { requests: Number(m[2]), bytes: Number(m[3]), c4xx: Number(m[4]), c5xx: Number(m[5]) });
  }
  return out;
}

/** What the table must show: the independent count of every day shown, zero for days without traffic. */
function expected(shown: Iterable<string>) {
  const counts = countsFromLogs(logs);
  return new Map([...shown].map((d) => [d, counts.get(d) ?? { requests: 0, bytes: 0, c4xx: 0, c5xx: 0 }]));
}

describe('the traffic page', () => {
  it("shows 30 days of the tenant's own access log as a table, counted the same as the log says, then only what was appended", async () => {
    const site = (p: string) => rawRequest(t.http, p, { host: 'example.test' });
    expect((await site('/')).status).toBe(200);
    expect((await site('/missing')).status).toBe(404);
    await rawRequest(t.http, '/', { host: 'other.test' });
    const log = path.join(logs, 'access.log');
    await waitFor(() => existsSync(log) && readFileSync(log, 'utf8').includes('/missing'), 5_000, 'the access log lines');

    const c = new PanelClient(t.http);
    await c.login('alice@example.test', 'wonderland');
    const page = await c.get('/t/example.test/traffic');
    expect(page.status).toBe(200);
    const table = tableOf(page.text);
    expect(table.size).toBe(30);
    expect([...table.keys()][0]).toBe(dayOf(Date.now()));
    expect(table.has(dayOf(Date.now() - 35 * DAY))).toBe(false);
    expect(table).toEqual(expected(table.keys()));
    expect(table.get(dayOf(Date.now() - 4 * DAY))).toEqual({ requests: 2, bytes: 2000, c4xx: 0, c5xx: 1 });
    expect(table.get(dayOf(Date.now()))!.c4xx).toBeGreaterThanOrEqual(1);
    // The plots load from the panel itself, under a policy that allows scripts from there only.
    expect(page.text).toContain('<script src="/assets/uplot.min.js"></script>');
    expect(page.headers['content-security-policy']).toMatch(/script-src 'self';/);
    expect(page.headers['content-security-policy']).toMatch(/default-src 'none'/);

    // Lines appended since (a request now; one written straight to the file) show at the next view.
    appendFileSync(log, logLine({ when: new Date(), path: '/appended', status: 503, bytes: 7 }));
    const again = tableOf((await c.get('/t/example.test/traffic')).text);
    expect(again).toEqual(expected(again.keys()));
    expect(again.get(dayOf(Date.now()))!.c5xx).toBe(table.get(dayOf(Date.now()))!.c5xx + 1);
  });

  it('shows top pages, referrers and 404s of the last week, escaped, without self-referrals', async () => {
    const c = new PanelClient(t.http);
    await c.login('alice@example.test', 'wonderland');
    const html = (await c.get('/t/example.test/traffic')).text;
    const section = (id: string) => /<table id="([^"]+)">.*?<\/table>/gs.exec(html.slice(html.indexOf(`id="${id}"`) - 11))?.[0] ?? '';
    expect(section('top-pages')).toMatch(/<td>\/shop<\/td><td>2<\/td>/);
    expect(section('top-404')).toContain('<td>/&lt;script&gt;alert(1)&lt;/script&gt;</td>');
    expect(section('top-referrers')).toContain('<td>https://search.example/?q=&lt;b&gt;&quot;hi&quot;&lt;/b&gt;</td>');
    expect(section('top-referrers')).not.toContain('http://example.test/');
    expect(html).not.toContain('<script>alert');
    expect(html).not.toContain('/ancient');
  });

  it("serves uPlot and the plot script from the panel, and shows a tenant's traffic to it alone", async () => {
    const js = await rawRequest(t.http, '/assets/uplot.min.js', { host: PANEL_HOST });
    expect(js.status).toBe(200);
    expect(js.headers['content-type']).toMatch(/^text\/javascript/);
    expect(js.body.toString()).toContain('uPlot');
    const again = await rawRequest(t.http, '/assets/uplot.min.js', { host: PANEL_HOST, 'if-none-match': js.headers.etag as string });
    expect(again.status).toBe(304);
    expect((await rawRequest(t.http, '/assets/uplot.min.css', { host: PANEL_HOST })).status).toBe(200);
    expect((await rawRequest(t.http, '/assets/traffic.js', { host: PANEL_HOST })).status).toBe(200);
    expect((await rawRequest(t.http, '/assets/../index.ts', { host: PANEL_HOST })).status).toBe(404);
    expect((await rawRequest(t.http, '/assets/panel.js', { host: PANEL_HOST })).status).toBe(404);

    const bob = new PanelClient(t.http);
    await bob.login('bob@other.test', 'builder');
    expect((await bob.get('/t/example.test/traffic')).status).toBe(403);
    const own = await bob.get('/t/other.test/traffic');
    expect(own.status).toBe(200);
    expect(own.text).not.toContain('/shop');
  });
});
