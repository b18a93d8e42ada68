import { readFileSync, renameSync, symlinkSync, writeFileSync, utimesSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest } from '../../helpers/http.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

const BIG = Buffer.alloc(400 * 1024, 'abcdefghij'); // larger than the memory-cache limit: streamed
const CSS = 'body { color: #123456; }\n'.repeat(40);

let t: TestSuite;
const get = (p: string, host = 'a.test', headers: Record<string, string> = {}, method = 'GET') => rawRequest(t.http, p, { host, ...headers }, method);

beforeAll(async () => {
  t = await startTestSuite({
    // Every hit checked against the disk, so direct edits below show at once.
    main: { http: { userdir: 'members.test', cacheRevalidate: 0 } },
    tenants: {
      'a.test': { domains: ['a.test', 'www.a.test'] },
      'a.test2': { domains: ['a2.test'] },
      'b.test': { domains: ['b.test'] },
    },
    files: {
      'a.test/index.html': '<h1>A home</h1>',
      'a.test/style.css': CSS,
      'a.test/notes.txt': 'plain notes',
      'a.test/data.json': '{"a":1}',
      'a.test/docs/index.html': '<h1>A docs</h1>',
      'a.test/docs/guide.html': '<h1>Guide</h1>',
      'a.test/empty/.keep': '',
      'a.test/evil.com/index.html': 'a folder named like a host',
      'a.test/big.bin': BIG,
      'a.test/big.txt': BIG,
      'a.test/.htpasswd': 'alice:secret',
      'a.test/.git/config': '[core]',
      'a.test/%2e%2e/x': 'literal name',
      'a.test/.well-known/security.txt': 'Contact: mailto:sec@a.test',
      'a.test/cgi-bin/tool.js': 'console.log("source")',
      'a.test2/secret.html': 'sibling secret',
      'b.test/index.html': '<h1>B home</h1>',
      'b.test/404.html': '<h1>B has no such page</h1>',
      'outside.txt': 'not for anyone',
    },
  });
  const a = path.join(t.sitesDir, 'a.test');
  symlinkSync(path.join(a, 'docs', 'guide.html'), path.join(a, 'guide-link.html'));
  symlinkSync(path.join(t.sitesDir, 'outside.txt'), path.join(a, 'out-link.txt'));
  symlinkSync('../a.test2', path.join(a, 'sibling'));
  symlinkSync('/etc', path.join(a, 'etc'));
  symlinkSync(path.join(t.sitesDir, 'b.test'), path.join(a, 'b-site'));
  execFileSync('mkfifo', [path.join(a, 'pipe.html')]); // opening a FIFO would hang a naive server
});
afterAll(async () => t?.stop());

describe('virtual hosting', () => {
  it('serves each tenant by Host, case, port and trailing dot ignored', async () => {
    expect((await get('/', 'a.test')).body.toString()).toBe('<h1>A home</h1>');
    expect((await get('/', 'WWW.A.TEST.:8080')).body.toString()).toBe('<h1>A home</h1>');
    expect((await get('/', 'b.test')).body.toString()).toBe('<h1>B home</h1>');
  });

  it('answers an unknown or missing Host with the suite page, never a tenant site', async () => {
    for (const host of ['nobody.test', '127.0.0.1', 'a.test.evil.test']) {
      const r = await get('/', host);
      expect(r.status).toBe(404);
      expect(r.body.toString()).toContain('makewaves');
      expect(r.body.toString()).not.toContain('A home');
    }
    // HTTP/1.0 without Host
    const r = await new Promise<string>((resolve) => {
      import('node:net').then(({ connect }) => {
        const u = new URL(t.http);
        const s = connect(Number(u.port), u.hostname, () => s.write('GET / HTTP/1.0\r\n\r\n'));
        let data = '';
        s.on('data', (c) => (data += c));
        s.on('end', () => resolve(data));
      });
    });
    expect(r).toMatch(/^HTTP\/1\.1 404/);
    expect(r).not.toContain('A home');
  });

  it('uses the absolute-form request target authority over Host', async () => {
    const r = await rawRequest(t.http, 'http://b.test/', { host: 'a.test' });
    expect(r.body.toString()).toBe('<h1>B home</h1>');
  });

  it('serves ~tenant personal pages on the userdir host', async () => {
    expect((await get('/~a.test/', 'members.test')).body.toString()).toBe('<h1>A home</h1>');
    expect((await get('/~a.test/docs/guide.html', 'members.test')).body.toString()).toBe('<h1>Guide</h1>');
    const r = await get('/~a.test', 'members.test');
    expect(r.status).toBe(301);
    expect(r.headers.location).toBe('/~a.test/');
    const d = await get('/~a.test/docs?x=1', 'members.test');
    expect(d.headers.location).toBe('/~a.test/docs/?x=1');
    expect((await get('/~nobody/', 'members.test')).status).toBe(404);
    expect((await get('/~a.test/../b.test/', 'members.test')).status).toBe(403);
  });
});

describe('static files', () => {
  it('serves index.html for a folder and redirects a folder without its slash', async () => {
    expect((await get('/docs/')).body.toString()).toBe('<h1>A docs</h1>');
    const r = await get('/docs?q=1');
    expect(r.status).toBe(301);
    expect(r.headers.location).toBe('/docs/?q=1');
  });

  it('never builds a redirect to another host (//host, /\\host, encoded forms)', async () => {
    for (const p of ['//evil.com', '///evil.com', '/.//evil.com', '//evil.com/']) {
      const r = await get(p);
      if (r.status === 301) expect(r.headers.location).toBe('/evil.com/');
      if (r.headers.location) expect(r.headers.location).not.toMatch(/^\/\/|^\/\\|^[a-z]+:/i);
    }
    expect((await get('/\\evil.com')).status).toBe(400);
    expect((await get('/%5cevil.com')).status).toBe(400);
    expect((await get('/%2fevil.com')).status).toBe(400);
  });

  it('answers 404 for a folder without index.html (no listings) and for a file with a trailing slash', async () => {
    expect((await get('/empty/')).status).toBe(404);
    expect((await get('/notes.txt/')).status).toBe(404);
    expect((await get('/missing.html')).status).toBe(404);
  });

  it('sends MIME types with a charset for text, nosniff everywhere', async () => {
    const cases: Array<[string, string]> = [
      ['/', 'text/html; charset=utf-8'],
      ['/style.css', 'text/css; charset=utf-8'],
      ['/notes.txt', 'text/plain; charset=utf-8'],
      ['/data.json', 'application/json; charset=utf-8'],
      ['/big.bin', 'application/octet-stream'],
    ];
    for (const [p, type] of cases) {
      const r = await get(p);
      expect(r.headers['content-type']).toBe(type);
      expect(r.headers['x-content-type-options']).toBe('nosniff');
    }
  });

  it('refuses methods other than GET and HEAD with 405 and Allow', async () => {
    for (const m of ['POST', 'PUT', 'DELETE', 'TRACE', 'PATCH']) {
      const r = await get('/', 'a.test', {}, m);
      expect(r.status).toBe(405);
      expect(r.headers.allow).toBe('GET, HEAD, OPTIONS');
    }
    const o = await get('/', 'a.test', {}, 'OPTIONS');
    expect(o.status).toBe(204);
    expect(o.headers.allow).toBe('GET, HEAD, OPTIONS');
    const h = await get('/style.css', 'a.test', {}, 'HEAD');
    expect(h.status).toBe(200);
    expect(h.body.length).toBe(0);
    expect(Number(h.headers['content-length'])).toBe(CSS.length);
  });

  it('uses the tenant 404.html with status 404, else the suite page', async () => {
    const b = await get('/nope', 'b.test');
    expect(b.status).toBe(404);
    expect(b.body.toString()).toBe('<h1>B has no such page</h1>');
    // Kept in memory, but a changed page is served at once (this suite checks the disk on every hit).
    writeFileSync(path.join(t.sitesDir, 'b.test', '404.html'), '<h1>B, new 404</h1>');
    expect((await get('/other', 'b.test')).body.toString()).toBe('<h1>B, new 404</h1>');
    const a = await get('/nope', 'a.test');
    expect(a.status).toBe(404);
    expect(a.body.toString()).toContain('404 Not Found');
  });
});

describe('the jail', () => {
  const refused: Array<[string, number]> = [
    ['/../a.test2/secret.html', 403],
    ['/%2e%2e/a.test2/secret.html', 403],
    ['/%2E%2E/%2E%2E/etc/passwd', 403],
    ['/docs/../../a.test2/secret.html', 403],
    ['/..%2fa.test2%2fsecret.html', 400],
    ['/%2e%2e%2fa.test2%2fsecret.html', 400],
    ['/..%5ca.test2%5csecret.html', 400],
    ['/index.html%00.txt', 400],
    ['/bad%zzescape', 400],
    ['/out-link.txt', 403],
    ['/sibling/secret.html', 403],
    ['/etc/passwd', 403],
    ['/b-site/index.html', 403],
    ['/.htpasswd', 404],
    ['/.git/config', 404],
    ['/%2ehtpasswd', 404],
    ['/cgi-bin/tool.js', 404],
    ['/pipe.html', 404],
  ];
  it.each(refused)('%s → %i, never the file', async (p, status) => {
    const r = await get(p);
    expect(r.status).toBe(status);
    const body = r.body.toString();
    expect(body).not.toContain('sibling secret');
    expect(body).not.toContain('root:');
    expect(body).not.toContain('not for anyone');
    expect(body).not.toContain('alice:secret');
    expect(body).not.toContain('B home');
    expect(body).not.toContain(t.dir);
  });

  it('resolves a harmless .. inside the root, keeps double-encoding literal, follows symlinks that stay inside', async () => {
    expect((await get('/docs/../notes.txt')).body.toString()).toBe('plain notes');
    expect((await get('/%252e%252e/x')).body.toString()).toBe('literal name');
    expect((await get('/guide-link.html')).body.toString()).toBe('<h1>Guide</h1>');
    expect((await get('/.well-known/security.txt')).status).toBe(200);
  });

  it('does not let a.test reach the sibling root a.test2 that shares its prefix', async () => {
    expect((await get('/secret.html', 'a.test')).status).toBe(404);
    expect((await get('/secret.html', 'a2.test')).body.toString()).toBe('sibling secret');
  });

  it('logs who was refused and why', async () => {
    await get('/out-link.txt');
    const line = await waitFor(() => t.logs().find((l) => l.msg === 'request refused' && l.url === '/out-link.txt'));
    expect(line).toMatchObject({ tenant: 'a.test', remote: '127.0.0.1', why: expect.stringContaining('outside') });
  });
});

describe('validators, ranges and compression', () => {
  it('derives the ETag from size, mtime and coding, not the inode (CVE-2003-1418): identical bytes and mtime give one tag', async () => {
    const when = new Date('2026-11-01T10:00:00.123Z');
    const dir = path.join(t.sitesDir, 'b.test');
    for (const name of ['copy1.txt', 'copy2.txt', 'copy3.txt']) {
      writeFileSync(path.join(dir, name), CSS);
      utimesSync(path.join(dir, name), when, when);
    }
    const tags = async (p: string, host = 'b.test') => [(await get(p, host)).headers.etag, (await get(p, host, { 'accept-encoding': 'gzip' })).headers.etag];
    const [plain, gzip] = await tags('/copy1.txt');
    expect(plain).toMatch(/^"[^"]+"$/);
    expect(gzip).not.toBe(plain);
    // Another file (another inode) with the same bytes and mtime, as a second node serving a copy would have.
    expect(await tags('/copy2.txt')).toEqual([plain, gzip]);
    // A re-upload of identical bytes with the same mtime (a new inode, renamed over the old one).
    renameSync(path.join(dir, 'copy3.txt'), path.join(dir, 'copy1.txt'));
    expect(await tags('/copy1.txt')).toEqual([plain, gzip]);
    // Other bytes of the same size, or the same bytes at another mtime: another tag.
    writeFileSync(path.join(dir, 'copy2.txt'), CSS.replace('1', '2'));
    utimesSync(path.join(dir, 'copy2.txt'), new Date(when.getTime() + 1), new Date(when.getTime() + 1));
    expect((await get('/copy2.txt', 'b.test')).headers.etag).not.toBe(plain);
  });

  it('answers If-None-Match (which wins over If-Modified-Since) and If-Modified-Since with 304', async () => {
    const first = await get('/notes.txt');
    const etag = first.headers.etag!;
    const lm = first.headers['last-modified']!;
    expect(etag).toMatch(/^"[^"]+"$/);
    expect((await get('/notes.txt', 'a.test', { 'if-none-match': etag })).status).toBe(304);
    expect((await get('/notes.txt', 'a.test', { 'if-modified-since': lm })).status).toBe(304);
    expect((await get('/notes.txt', 'a.test', { 'if-none-match': '"stale"', 'if-modified-since': lm })).status).toBe(200);
    expect((await get('/notes.txt', 'a.test', { 'if-match': '"stale"' })).status).toBe(412);
  });

  it('serves a single range with 206, an unsatisfiable one with 416, and honours If-Range', async () => {
    const r = await get('/notes.txt', 'a.test', { range: 'bytes=0-4' });
    expect(r.status).toBe(206);
    expect(r.body.toString()).toBe('plain');
    expect(r.headers['content-range']).toBe('bytes 0-4/11');
    const tail = await get('/big.bin', 'a.test', { range: 'bytes=-3' });
    expect(tail.status).toBe(206);
    expect(tail.body.equals(BIG.subarray(BIG.length - 3))).toBe(true);
    const mid = await get('/big.bin', 'a.test', { range: 'bytes=1000-1999' });
    expect(mid.body.equals(BIG.subarray(1000, 2000))).toBe(true);
    const bad = await get('/notes.txt', 'a.test', { range: 'bytes=50-' });
    expect(bad.status).toBe(416);
    expect(bad.headers['content-range']).toBe('bytes */11');
    const etag = r.headers.etag!;
    expect((await get('/notes.txt', 'a.test', { range: 'bytes=0-4', 'if-range': etag })).status).toBe(206);
    const stale = await get('/notes.txt', 'a.test', { range: 'bytes=0-4', 'if-range': '"old"' });
    expect(stale.status).toBe(200);
    expect(stale.body.toString()).toBe('plain notes');
  });

  it('compresses text with br or gzip, with Vary and a distinct ETag, and leaves binaries alone', async () => {
    const br = await get('/style.css', 'a.test', { 'accept-encoding': 'gzip, br' });
    expect(br.headers['content-encoding']).toBe('br');
    expect(br.headers.vary).toBe('Accept-Encoding');
    expect(zlib.brotliDecompressSync(br.body).toString()).toBe(CSS);
    const gz = await get('/style.css', 'a.test', { 'accept-encoding': 'gzip' });
    expect(gz.headers['content-encoding']).toBe('gzip');
    expect(zlib.gunzipSync(gz.body).toString()).toBe(CSS);
    expect(gz.headers.etag).not.toBe(br.headers.etag);
    const plain = await get('/style.css');
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(plain.headers.vary).toBe('Accept-Encoding');
    expect((await get('/style.css', 'a.test', { 'accept-encoding': 'br', 'if-none-match': br.headers.etag! })).status).toBe(304);
    const bin = await get('/big.bin', 'a.test', { 'accept-encoding': 'gzip, br' });
    expect(bin.headers['content-encoding']).toBeUndefined();
    expect(bin.body.equals(BIG)).toBe(true);
    // A large text file is compressed while streaming.
    const bigText = await get('/big.txt', 'a.test', { 'accept-encoding': 'gzip' });
    expect(bigText.headers['content-encoding']).toBe('gzip');
    expect(zlib.gunzipSync(bigText.body).equals(BIG)).toBe(true);
  });

  it('shows a file replaced by rename (as an FTP upload does) on the very next request', async () => {
    const file = path.join(t.sitesDir, 'a.test', 'news.html');
    writeFileSync(file, 'version one');
    expect((await get('/news.html')).body.toString()).toBe('version one');
    expect((await get('/news.html')).body.toString()).toBe('version one'); // now from the cache
    const tmp = path.join(t.sitesDir, 'a.test', '.upload-tmp');
    writeFileSync(tmp, 'version two');
    const then = new Date(Date.now() - 60_000);
    utimesSync(tmp, then, then);
    renameSync(tmp, file);
    expect((await get('/news.html')).body.toString()).toBe('version two');
    writeFileSync(file, 'version three, edited in place');
    expect((await get('/news.html')).body.toString()).toBe('version three, edited in place');
  });
});

describe('logs and counters', () => {
  it('writes a Combined Log Format line per request to the tenant access log, and counts traffic in state', async () => {
    await get('/notes.txt', 'b.test', { referer: 'http://ref.test/', 'user-agent': 'tester/1.0' });
    await get('/', 'b.test', { 'user-agent': 'tester/1.0' });
    const file = path.join(t.dataDir, 'logs', 'b.test', 'access.log');
    const text = await waitFor(() => {
      try {
        const s = readFileSync(file, 'utf8');
        return s.includes('"GET / HTTP/1.1" 200 15 "-" "tester/1.0"') ? s : undefined;
      } catch {
        return undefined;
      }
    });
    expect(text).toMatch(/^127\.0\.0\.1 - - \[\d{2}\/\w{3}\/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "GET \/notes\.txt HTTP\/1\.1" 404 \d+ "http:\/\/ref\.test\/" "tester\/1\.0"$/m);
    expect(text).toMatch(/"GET \/ HTTP\/1\.1" 200 15 "-" "tester\/1\.0"$/m);
    t.suite.state.traffic.flush();
    const today = new Date().toISOString().slice(0, 10);
    const totals = t.suite.state.traffic.since('b.test', today);
    expect(totals.requests).toBeGreaterThanOrEqual(2);
    expect(totals.bytes).toBeGreaterThanOrEqual(15);
    // unknown hosts are logged apart
    await get('/', 'stranger.test');
    await waitFor(() => {
      try {
        return readFileSync(path.join(t.dataDir, 'logs', '_default', 'access.log'), 'utf8').includes('"GET / HTTP/1.1" 404');
      } catch {
        return false;
      }
    });
  });
});

describe('slow and oversized clients', () => {
  it('refuses oversized headers with 431', async () => {
    const r = await get('/', 'a.test', { 'x-big': 'x'.repeat(20_000) }).catch((e: Error) => e);
    if (r instanceof Error) expect(r.message).toMatch(/socket hang up|ECONNRESET/);
    else expect(r.status).toBe(431);
  });
});

