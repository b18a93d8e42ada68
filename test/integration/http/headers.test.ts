import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../helpers/cli.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';

const execFileP = promisify(execFile);
let t: TestSuite;
let upstream: http.Server;

const HANDLER = `module.exports = async function (cgi) {
  cgi.stdout.write('Content-Type: text/plain\\r\\nCache-Control: no-store\\r\\nX-Frame-Options: SAMEORIGIN\\r\\nX-Made-By: handler\\r\\n\\r\\nhi');
};
`;

beforeAll(async () => {
  upstream = http.createServer((req, res) => {
    res.writeHead(req.url?.includes('missing') ? 404 : 200, { 'content-type': 'text/plain', 'cache-control': 'private', 'x-frame-options': 'SAMEORIGIN', 'x-made-by': 'backend' });
    res.end('from backend');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const origin = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  t = await startTestSuite({
    tenants: {
      'plain.test': { domains: ['plain.test'] },
      'site.test': {
        domains: ['site.test'],
        cgi: true,
        proxy: [
          { path: '/app/', to: origin },
          { path: '/raw/', to: origin },
        ],
        headers: [
          { match: '/assets/*', set: { 'Cache-Control': 'public, max-age=31536000, immutable' } },
          { match: '/raw/*', set: { 'X-Frame-Options': 'DENY', 'Content-Security-Policy': "default-src 'self'", 'X-Content-Type-Options': '' }, proxied: false },
          { match: '/app/forced/*', set: { 'X-Frame-Options': 'DENY', 'X-Made-By': '' }, override: true },
          { match: '/cgi-bin/forced*', set: { 'Cache-Control': 'no-cache', 'X-Made-By': '' }, override: true },
          { match: '*.pdf', set: { 'Content-Disposition': 'attachment' } },
          { match: '/*', set: { 'Content-Security-Policy': "default-src 'self'", 'X-Frame-Options': 'DENY', 'Cache-Control': 'no-cache', 'Referrer-Policy': '' } },
          { match: '/*', set: { 'X-Always': 'yes' }, always: true },
        ],
      },
    },
    files: {
      'plain.test/index.html': 'plain home',
      'site.test/index.html': 'site home',
      'site.test/assets/app.css': 'body{}',
      'site.test/docs/a.pdf': '%PDF-1.4',
      'site.test/cgi-bin/hello.js': HANDLER,
      'site.test/cgi-bin/forced.js': HANDLER,
    },
  });
});
afterAll(async () => {
  await t?.stop();
  upstream?.closeAllConnections();
  await new Promise((r) => upstream?.close(r));
});

/** curl over a real socket; the response head as name (lower-case) → values. */
async function curl(host: string, p: string, extra: string[] = []): Promise<{ status: number; h: Map<string, string[]> }> {
  const { stdout } = await execFileP('curl', ['-sS', '-o', '/dev/null', '-D', '-', '-H', `Host: ${host}`, ...extra, `${t.http}${p}`]);
  const lines = stdout.split('\r\n');
  const h = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) h.set(line.slice(0, i).toLowerCase(), [...(h.get(line.slice(0, i).toLowerCase()) ?? []), line.slice(i + 1).trim()]);
  }
  return { status: Number(/^HTTP\/[\d.]+ (\d{3})/.exec(lines[0] ?? '')?.[1]), h };
}
const one = (h: Map<string, string[]>, name: string) => h.get(name)?.join(' | ');

describe('response headers per tenant', () => {
  it('gives a tenant that sets nothing the safe defaults, on files, 304s and error pages alike', async () => {
    const home = await curl('plain.test', '/');
    expect(home.status).toBe(200);
    expect(one(home.h, 'x-content-type-options')).toBe('nosniff');
    expect(one(home.h, 'referrer-policy')).toBe('strict-origin-when-cross-origin');
    const missing = await curl('plain.test', '/nope');
    expect(missing.status).toBe(404);
    expect(one(missing.h, 'referrer-policy')).toBe('strict-origin-when-cross-origin');
    const again = await curl('plain.test', '/', ['-H', `If-None-Match: ${one(home.h, 'etag')}`]);
    expect(again.status).toBe(304);
    expect(one(again.h, 'referrer-policy')).toBe('strict-origin-when-cross-origin');
  });

  it('takes the first matching entry per field, on the cached and the uncached path', async () => {
    for (let i = 0; i < 2; i++) {
      const css = await curl('site.test', '/assets/app.css');
      expect(css.status).toBe(200);
      expect(one(css.h, 'cache-control')).toBe('public, max-age=31536000, immutable');
      expect(one(css.h, 'content-security-policy')).toBe("default-src 'self'");
      expect(one(css.h, 'x-frame-options')).toBe('DENY');
      // "" drops the default; the other default stays.
      expect(css.h.has('referrer-policy')).toBe(false);
      expect(one(css.h, 'x-content-type-options')).toBe('nosniff');
    }
    const home = await curl('site.test', '/');
    expect(one(home.h, 'cache-control')).toBe('no-cache');
    const pdf = await curl('site.test', '/docs/a.pdf');
    expect(one(pdf.h, 'content-disposition')).toBe('attachment');
    expect(one(pdf.h, 'cache-control')).toBe('no-cache');
    // Matched on the decoded, normalised path, as the router sees it.
    const sneaky = await curl('site.test', '/docs/../%61ssets/app.css', ['--path-as-is']);
    expect(sneaky.status).toBe(200);
    expect(one(sneaky.h, 'cache-control')).toBe('public, max-age=31536000, immutable');
  });

  it('applies entries to 2xx and 3xx only unless `always`, as nginx add_header', async () => {
    const missing = await curl('site.test', '/assets/gone.css');
    expect(missing.status).toBe(404);
    expect(missing.h.has('cache-control')).toBe(false);
    expect(missing.h.has('content-security-policy')).toBe(false);
    expect(one(missing.h, 'x-always')).toBe('yes');
    expect(one(missing.h, 'x-content-type-options')).toBe('nosniff');
    const redirect = await curl('site.test', '/assets');
    expect(redirect.status).toBe(301);
    expect(one(redirect.h, 'x-frame-options')).toBe('DENY');
  });

  it("leaves a backend's own fields to it, adds the missing ones, and replaces them with override", async () => {
    const app = await curl('site.test', '/app/x');
    expect(app.status).toBe(200);
    expect(one(app.h, 'cache-control')).toBe('private');
    expect(one(app.h, 'x-frame-options')).toBe('SAMEORIGIN');
    expect(one(app.h, 'content-security-policy')).toBe("default-src 'self'");
    const forced = await curl('site.test', '/app/forced/x');
    expect(one(forced.h, 'x-frame-options')).toBe('DENY');
    expect(forced.h.has('x-made-by')).toBe(false);
    expect(one(forced.h, 'cache-control')).toBe('private');
    // proxied: false skips the entry for a backend's answers; the next matching entry decides.
    const raw = await curl('site.test', '/raw/x');
    expect(one(raw.h, 'x-frame-options')).toBe('SAMEORIGIN');
    expect(one(raw.h, 'x-content-type-options')).toBe('nosniff');
    const upstream404 = await curl('site.test', '/app/missing');
    expect(upstream404.status).toBe(404);
    expect(upstream404.h.has('content-security-policy')).toBe(false);
    expect(one(upstream404.h, 'x-always')).toBe('yes');
  });

  it("leaves a handler's own fields to it unless the entry overrides them", async () => {
    const own = await curl('site.test', '/cgi-bin/hello');
    expect(own.status).toBe(200);
    expect(one(own.h, 'cache-control')).toBe('no-store');
    expect(one(own.h, 'x-frame-options')).toBe('SAMEORIGIN');
    expect(one(own.h, 'x-made-by')).toBe('handler');
    expect(one(own.h, 'content-security-policy')).toBe("default-src 'self'");
    const forced = await curl('site.test', '/cgi-bin/forced');
    expect(forced.status).toBe(200);
    expect(one(forced.h, 'cache-control')).toBe('no-cache');
    expect(forced.h.has('x-made-by')).toBe(false);
    expect(one(forced.h, 'x-frame-options')).toBe('SAMEORIGIN');
  });
});

describe('hostile header entries', () => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['CRLF in a value', { 'X-Evil': 'a\r\nSet-Cookie: x=1' }, /headers\[0\]\.set\.X-Evil: the value must be one line/],
    ['LF in a value', { 'X-Evil': 'a\nb' }, /headers\[0\]\.set\.X-Evil: the value must be one line/],
    ['NUL in a value', { 'X-Evil': 'a\u0000b' }, /headers\[0\]\.set\.X-Evil: the value must be one line/],
    ['non-ASCII in a value', { 'X-Evil': 'caf\u00e9' }, /headers\[0\]\.set\.X-Evil: the value must be one line/],
    ['Connection', { Connection: 'close' }, /headers\[0\]\.set\.Connection: "Connection" cannot be set: a hop-by-hop field/],
    ['Transfer-Encoding', { 'transfer-encoding': 'chunked' }, /"transfer-encoding" cannot be set: it frames the message/],
    ['Content-Length', { 'Content-Length': '0' }, /"Content-Length" cannot be set: it frames the message/],
    ['Upgrade', { Upgrade: 'h2c' }, /"Upgrade" cannot be set: a hop-by-hop field/],
    ['Keep-Alive', { 'Keep-Alive': 'timeout=5' }, /"Keep-Alive" cannot be set/],
    ['TE', { TE: 'trailers' }, /"TE" cannot be set/],
    ['Trailer', { Trailer: 'X' }, /"Trailer" cannot be set/],
    ['Proxy-*', { 'Proxy-Authenticate': 'Basic' }, /"Proxy-Authenticate" cannot be set: a hop-by-hop field/],
    ['Host', { Host: 'evil.test' }, /"Host" cannot be set: a request field/],
    ['a pseudo-header', { ':status': '200' }, /":status" cannot be set: a pseudo-header of HTTP\/2/],
    ['a space in a name', { 'X Evil': '1' }, /"X Evil" cannot be set: not a field name/],
    ['a colon in a name', { 'X-Evil:': '1' }, /"X-Evil:" cannot be set: not a field name/],
    ['CRLF in a name', { 'X-A\r\nX-B': '1' }, /cannot be set: not a field name/],
    ['an empty name', { '': '1' }, /"" cannot be set: not a field name/],
    ['one field twice', { 'X-Frame-Options': 'DENY', 'x-frame-options': 'SAMEORIGIN' }, /"x-frame-options" is also set as "X-Frame-Options"/],
    ['nothing set', {}, /headers\[0\]\.set: sets no field/],
  ];

  function check(entries: unknown[]): Promise<{ code: number | null; out: string; err: string }> {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-headers-'));
    mkdirSync(path.join(dir, 'tenants'));
    writeFileSync(path.join(dir, 'makewaves.yaml'), stringify({ hostname: 'mx.test', data: '../data', sites: '../sites', http: { listen: ['127.0.0.1:0'] } }));
    writeFileSync(path.join(dir, 'tenants', 'bad.test.yaml'), stringify({ domains: ['bad.test'], headers: entries }));
    return runCli('check', '--config', dir).finally(() => rmSync(dir, { recursive: true, force: true }));
  }

  it.each(cases)('`makewaves check` refuses %s, naming file and key', async (_what, set, message) => {
    const r = await check([{ match: '/*', set }]);
    expect(r.code).not.toBe(0);
    const text = r.out + r.err;
    expect(text).toMatch(/tenants\/bad\.test\.yaml: headers\[0\]\.set/);
    expect(text).toMatch(message);
  });

  it('refuses patterns that are not paths and unknown keys', async () => {
    const r = await check([
      { match: 'assets/*', set: { 'X-A': '1' } },
      { match: '/a?b', set: { 'X-A': '1' } },
      { match: '/*', set: { 'X-A': '1' }, overide: true },
    ]);
    const text = r.out + r.err;
    expect(r.code).not.toBe(0);
    expect(text).toMatch(/headers\[0\]\.match: must be a path pattern/);
    expect(text).toMatch(/headers\[1\]\.match: must be a path pattern/);
    expect(text).toMatch(/headers\[2\]\.overide: unknown key/);
  });

  it('accepts a good list', async () => {
    const r = await check([{ match: '/assets/*', set: { 'Cache-Control': 'public, max-age=31536000, immutable', 'X-Num': 5 } }, { match: '/*', set: { 'Referrer-Policy': '' }, override: true, always: true }]);
    expect(r.out + r.err).not.toMatch(/headers\[/);
    expect(r.code).toBe(0);
  });
});
