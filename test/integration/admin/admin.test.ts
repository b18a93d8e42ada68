import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sumMetric } from '../../../src/cli/commands/status.ts';
import { rawRequest } from '../../helpers/http.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';

const execFileP = promisify(execFile);
let t: TestSuite;
let admin: string;

beforeAll(async () => {
  t = await startTestSuite({
    main: { admin: { listen: '127.0.0.1:0' } },
    tenants: { 'a.test': { domains: ['a.test'] }, 'b.test': { domains: ['b.test'] } },
    files: { 'a.test/index.html': 'A', 'b.test/index.html': 'B' },
  });
  admin = t.suite.urls.admin![0]!;
});
afterAll(async () => t?.stop());

describe('admin listener', () => {
  it('counts a known workload by tenant and status class in /metrics', async () => {
    for (let i = 0; i < 3; i++) await rawRequest(t.http, '/', { host: 'a.test' });
    await rawRequest(t.http, '/missing', { host: 'a.test' });
    await rawRequest(t.http, '/', { host: 'b.test' });
    await rawRequest(t.http, '/', { host: 'nobody.test' });
    const res = await fetch(`${admin}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    expect(text).toContain('makewaves_http_requests_total{tenant="a.test",class="2xx"} 3');
    expect(text).toContain('makewaves_http_requests_total{tenant="a.test",class="4xx"} 1');
    expect(text).toContain('makewaves_http_requests_total{tenant="b.test",class="2xx"} 1');
    expect(text).toContain('makewaves_http_requests_total{tenant="_default",class="4xx"} 1');
    expect(sumMetric(text, 'makewaves_http_response_bytes_total', 'tenant').get('a.test')).toBeGreaterThanOrEqual(3);
  });

  it('counts config reloads and refusals', async () => {
    t.writeTenant('c.test', { domains: ['c.test'] });
    expect(t.suite.reload()).toBe(true);
    writeFileSync(path.join(t.configDir, 'tenants', 'c.test.yaml'), 'domains: nope\n');
    expect(t.suite.reload()).toBe(false);
    const text = await (await fetch(`${admin}/metrics`)).text();
    expect(sumMetric(text, 'makewaves_config_reloads_total', 'result').get('refused')).toBeGreaterThanOrEqual(1);
    expect(sumMetric(text, 'makewaves_config_reloads_total', 'result').get('ok')).toBeGreaterThanOrEqual(1);
    // The refused file is mended, so the server is healthy again for the tests below.
    writeFileSync(path.join(t.configDir, 'tenants', 'c.test.yaml'), 'domains: [c.test]\n');
    expect(t.suite.reload()).toBe(true);
  });

  it('answers only a loopback Host: a page a browser loaded from another name (DNS rebinding) reads nothing', async () => {
    const port = new URL(admin).port;
    for (const host of ['rebind.evil.test', `rebind.evil.test:${port}`, 'a.test', '127.0.0.1.evil.test', 'localhost.evil.test', '[::1].evil.test', '127.0.0.1@evil.test', '127.0.0.256']) {
      const r = await rawRequest(admin, '/metrics', { host });
      expect(r.status).toBe(421);
      expect(r.body.toString()).not.toContain('makewaves_');
    }
    expect((await rawRequest(admin, '/healthz', { host: 'rebind.evil.test' })).status).toBe(421);
    for (const host of [`127.0.0.1:${port}`, '127.0.0.1', `localhost:${port}`, 'LOCALHOST', `[::1]:${port}`, '127.1.2.3']) {
      expect((await rawRequest(admin, '/metrics', { host })).status).toBe(200);
    }
    expect(t.logs().some((l) => l.msg === 'admin request refused' && l.host === 'rebind.evil.test' && l.remote === '127.0.0.1')).toBe(true);
  });

  it('answers /healthz, refuses other methods and paths', async () => {
    const h = (await (await fetch(`${admin}/healthz`)).json()) as Record<string, unknown>;
    expect(h).toMatchObject({ status: 'ok', services: expect.arrayContaining(['http', 'jobs', 'admin']) });
    expect((await fetch(`${admin}/healthz`, { method: 'POST' })).status).toBe(405);
    expect((await fetch(`${admin}/nope`)).status).toBe(404);
  });

  it('makewaves status prints a summary of the running server', async () => {
    // Not spawnSync: the server under test runs in this very process and must keep answering.
    const r = await execFileP(process.execPath, [path.resolve('bin/makewaves.js'), 'status', '--config', t.configDir], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^makewaves ok: pid \d+, up \d+ s, \d tenants$/m);
    expect(r.stdout).toMatch(/^http: \d+ requests \(2xx \d+, 4xx \d+\)$/m);
  });

  it('refuses a non-loopback admin address in the config', async () => {
    writeFileSync(path.join(t.configDir, 'tenants', 'c.test.yaml'), 'domains: nope\n');
    const r = spawnSync(process.execPath, [path.resolve('bin/makewaves.js'), 'check', '--config', t.configDir], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    writeFileSync(path.join(t.configDir, 'tenants', 'c.test.yaml'), 'domains: [c.test]\n');
    const yaml = `hostname: mx.test\nhttp:\n  listen: ["127.0.0.1:0"]\nadmin:\n  listen: "0.0.0.0:8081"\n`;
    writeFileSync(path.join(t.configDir, 'makewaves.yaml'), yaml);
    const bad = spawnSync(process.execPath, [path.resolve('bin/makewaves.js'), 'check', '--config', t.configDir], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/makewaves\.yaml: admin\.listen: must be a loopback address/);
  });
});
