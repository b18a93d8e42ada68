import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RESET_BURST } from '../../../src/http/h2.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

const execFileP = promisify(execFile);
let t: TestSuite;
let httpsUrl: URL;
let upstream: http.Server;
const seen: Array<{ httpVersion: string; url?: string; headers: http.IncomingHttpHeaders; body: string }> = [];
const held: Array<() => void> = [];
const BIG = `${'makewaves serves many small sites. '.repeat(200)}\n`;

beforeAll(async () => {
  upstream = http.createServer((req, res) => {
    if (req.url === '/app/hold') {
      held.push(() => res.end('held answer'));
      return;
    }
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      seen.push({ httpVersion: req.httpVersion, url: req.url, headers: req.headers, body });
      res.writeHead(200, { 'content-type': 'text/plain', 'x-backend': 'yes' });
      res.end(`backend saw ${req.method} ${req.url} HTTP/${req.httpVersion} ${body.length} bytes`);
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  t = await startTestSuite({
    main: { http: { tls: { listen: ['127.0.0.1:0'], certs: '../certs', selfSigned: true } } },
    tenants: {
      'a.test': {
        domains: ['a.test'],
        cgi: true,
        proxy: [{ path: '/app/', to: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` }],
        headers: [{ match: '/*', set: { 'X-Frame-Options': 'DENY' } }],
      },
      'b.test': { domains: ['b.test'] },
    },
    files: {
      'a.test/index.html': 'site A',
      'a.test/big.txt': BIG,
      'a.test/digits.txt': '0123456789',
      'a.test/cgi-bin/echo.js': readFileSync(path.join(import.meta.dirname, '../../fixtures/cgi/echo.js')),
      'b.test/index.html': 'site B',
    },
  });
  httpsUrl = new URL(t.suite.urls.http!.find((u) => u.startsWith('https:'))!);
});
afterAll(async () => {
  await t?.stop();
  upstream?.closeAllConnections();
  await new Promise((r) => upstream?.close(r));
});

interface Answer {
  status: number;
  version: string;
  headers: Map<string, string>;
  body: string;
}

/** curl over real TLS to the suite's HTTPS listener; the TLS name (SNI) is `sni`. */
async function curl(sni: string, p: string, extra: string[] = [], stdin?: string): Promise<Answer> {
  const args = ['-sk', '--max-time', '10', '--resolve', `${sni}:${httpsUrl.port}:127.0.0.1`, '-D', '-', '-w', '\n%{http_version}', ...extra, `https://${sni}:${httpsUrl.port}${p}`];
  let stdout: string;
  if (stdin === undefined) {
    ({ stdout } = await execFileP('curl', args, { encoding: 'latin1' }));
  } else {
    stdout = await new Promise<string>((resolve, reject) => {
      const c = spawn('curl', args);
      let out = '';
      c.stdout.setEncoding('latin1');
      c.stdout.on('data', (d: string) => (out += d));
      c.on('error', reject);
      c.on('close', () => resolve(out));
      c.stdin.end(stdin);
    });
  }
  const headEnd = stdout.indexOf('\r\n\r\n');
  const head = stdout.slice(0, headEnd).split('\r\n');
  const rest = stdout.slice(headEnd + 4);
  const nl = rest.lastIndexOf('\n');
  const headers = new Map<string, string>();
  for (const line of head.slice(1)) {
    const i = line.indexOf(':');
    headers.set(line.slice(0, i).toLowerCase(), line.slice(i + 1).trim());
  }
  return { status: Number(head[0]!.split(' ')[1]), version: rest.slice(nl + 1), headers, body: rest.slice(0, nl) };
}
const h2 = (sni: string, p: string, extra: string[] = [], stdin?: string) => curl(sni, p, ['--http2', ...extra], stdin);

describe('HTTP/2 over TLS (ALPN h2), through the same request path', () => {
  it('serves a static file over h2, and HTTP/1.1 still over the same listener', async () => {
    const r = await h2('a.test', '/');
    expect(r).toMatchObject({ status: 200, version: '2', body: 'site A' });
    expect(r.headers.get('x-frame-options')).toBe('DENY');
    expect(r.headers.get('referrer-policy')).toBe('strict-origin-when-cross-origin');
    const old = await curl('a.test', '/', ['--http1.1']);
    expect(old).toMatchObject({ status: 200, version: '1.1', body: 'site A' });
    // Prior knowledge over TLS: curl still negotiates h2 by ALPN.
    const prior = await curl('a.test', '/', ['--http2-prior-knowledge']);
    expect(prior).toMatchObject({ status: 200, version: '2', body: 'site A' });
    const head = await h2('a.test', '/', ['-I', '-o', '/dev/null']);
    expect(head).toMatchObject({ status: 200, version: '2', body: '' });
    expect(head.headers.get('content-length')).toBe('6');
  });

  it('answers conditional requests (304) and byte ranges (206, 416)', async () => {
    const first = await h2('a.test', '/digits.txt');
    const etag = first.headers.get('etag')!;
    expect(etag).toMatch(/^"/);
    expect((await h2('a.test', '/digits.txt', ['-H', `If-None-Match: ${etag}`])).status).toBe(304);
    expect((await h2('a.test', '/digits.txt', ['-H', `If-Modified-Since: ${first.headers.get('last-modified')}`])).status).toBe(304);
    const range = await h2('a.test', '/digits.txt', ['-r', '2-5']);
    expect(range).toMatchObject({ status: 206, version: '2', body: '2345' });
    expect(range.headers.get('content-range')).toBe('bytes 2-5/10');
    expect((await h2('a.test', '/digits.txt', ['-r', '50-60'])).status).toBe(416);
  });

  it('compresses with gzip when asked, identical bytes after decoding', async () => {
    const r = await h2('a.test', '/big.txt', ['-H', 'Accept-Encoding: gzip']);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-encoding')).toBe('gzip');
    expect(r.headers.get('vary')).toBe('Accept-Encoding');
    const decoded = await h2('a.test', '/big.txt', ['--compressed']);
    expect(decoded.body).toBe(BIG);
  });

  it('proxies h2 requests to the backend over HTTP/1.1, bodies without Content-Length included', async () => {
    const r = await h2('a.test', '/app/x?q=1');
    expect(r).toMatchObject({ status: 200, version: '2', body: 'backend saw GET /app/x?q=1 HTTP/1.1 0 bytes' });
    expect(r.headers.get('x-backend')).toBe('yes');
    const got = seen.at(-1)!;
    expect(got.headers.host).toBe(`a.test:${httpsUrl.port}`);
    expect(got.headers['x-forwarded-proto']).toBe('https');
    expect(Object.keys(got.headers).some((k) => k.startsWith(':'))).toBe(false);
    // curl -T - over h2: DATA frames, no Content-Length.
    const put = await h2('a.test', '/app/upload', ['-T', '-'], 'twelve bytes');
    expect(put.body).toBe('backend saw PUT /app/upload HTTP/1.1 12 bytes');
    expect(seen.at(-1)!.body).toBe('twelve bytes');
    const post = await h2('a.test', '/app/form', ['-d', 'a=1&b=2']);
    expect(post.body).toBe('backend saw POST /app/form HTTP/1.1 7 bytes');
  });

  it('runs handlers for h2 requests, with the Host and protocol they came with', async () => {
    const r = await h2('a.test', '/cgi-bin/echo/p?x=1', ['-d', 'hello=h2']);
    expect(r).toMatchObject({ status: 200, version: '2' });
    const { env, body } = JSON.parse(r.body) as { env: Record<string, string>; body: string };
    expect(body).toBe('hello=h2');
    expect(env.SERVER_PROTOCOL).toBe('HTTP/2.0');
    expect(env.SERVER_NAME).toBe('a.test');
    expect(env.HTTP_HOST).toBe(`a.test:${httpsUrl.port}`);
    expect(env.HTTPS).toBe('on');
    expect(Object.keys(env).some((k) => k.includes(':'))).toBe(false);
  });

  it('answers 421 when the TLS name is one tenant and :authority another', async () => {
    const r = await h2('b.test', '/', ['-H', 'Host: a.test']);
    expect(r).toMatchObject({ status: 421, version: '2' });
    expect((await h2('a.test', '/', ['-H', 'Host: b.test'])).status).toBe(421);
    expect((await h2('b.test', '/')).body).toBe('site B');
  });

  it('refuses a Host that differs from :authority (RFC 9113 §8.3.1) with 400', async () => {
    const session = http2.connect(httpsUrl.origin, { rejectUnauthorized: false, servername: 'a.test' });
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const s = session.request({ ':path': '/', ':authority': 'a.test', host: 'b.test' });
        s.on('response', (h) => resolve(Number(h[':status'])));
        s.on('error', reject);
        s.resume();
      });
      expect(status).toBe(400);
    } finally {
      session.close();
    }
  });

  it('logs h2 requests in the tenant access log as HTTP/2.0', async () => {
    await h2('a.test', '/digits.txt?logged');
    const log = await waitFor(() => {
      try {
        const text = readFileSync(path.join(t.dataDir, 'logs/a.test/access.log'), 'utf8');
        return text.includes('logged') ? text : undefined;
      } catch {
        return undefined; // not written yet
      }
    });
    expect(log).toMatch(/"GET \/digits\.txt\?logged HTTP\/2\.0" 200 10/);
  });
});

describe('HTTP/2 limits', () => {
  it('announces its limits in SETTINGS', async () => {
    const session = http2.connect(httpsUrl.origin, { rejectUnauthorized: false, servername: 'a.test' });
    try {
      const settings = await new Promise<http2.Settings>((resolve) => session.once('remoteSettings', resolve));
      expect(settings.maxConcurrentStreams).toBe(100);
      expect(settings.maxHeaderListSize).toBe(16 * 1024);
      expect(settings.enablePush).toBe(false);
    } finally {
      session.close();
    }
  });

  it('closes a session that resets streams in a flood (rapid reset), and serves the next client', async () => {
    const session = http2.connect(httpsUrl.origin, { rejectUnauthorized: false, servername: 'a.test' });
    session.on('error', () => undefined); // the server ends this session; that is the point
    const goaway = new Promise<number>((resolve) => session.once('goaway', (code: number) => resolve(code)));
    const closed = new Promise<void>((resolve) => session.once('close', () => resolve()));
    await new Promise<void>((resolve) => session.once('remoteSettings', () => resolve()));
    let sent = 0;
    // HEADERS then RST_STREAM(CANCEL) at once, more than the allowance.
    for (; sent < RESET_BURST * 3 && !session.closed && !session.destroyed; sent++) {
      const s = session.request({ ':path': `/app/slow${sent}`, ':authority': 'a.test' });
      s.on('error', () => undefined); // streams of a session the server ended
      s.close(http2.constants.NGHTTP2_CANCEL);
      if (sent % 50 === 49) await new Promise((r) => setImmediate(r));
    }
    expect(await goaway).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    await closed;
    expect(t.logs().some((l) => String(l.msg).includes('rapid reset'))).toBe(true);
    expect((await h2('a.test', '/')).body).toBe('site A');
  });

  /** A frame header (RFC 9113 §4.1) and its payload. */
  const frame = (type: number, flags: number, stream: number, payload: Buffer) => {
    const head = Buffer.alloc(9);
    head.writeUIntBE(payload.length, 0, 3);
    head.writeUInt8(type, 3);
    head.writeUInt8(flags, 4);
    head.writeUInt32BE(stream, 5);
    return Buffer.concat([head, payload]);
  };
  const FLOODS: Array<[string, Buffer]> = [
    ['PING', frame(6, 0, 0, Buffer.alloc(8))],
    ['SETTINGS', frame(4, 0, 0, Buffer.from([0, 3, 0, 0, 0, 100]))],
  ];
  it.each(FLOODS)('drops a connection that floods %s frames without reading the answers, and serves the next client', async (_what, one) => {
    const socket = tls.connect({ host: '127.0.0.1', port: Number(httpsUrl.port), servername: 'a.test', ALPNProtocols: ['h2'], rejectUnauthorized: false });
    socket.on('error', () => undefined); // the server drops us; that is the point
    await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
    expect(socket.alpnProtocol).toBe('h2');
    socket.pause(); // never read: every PING or SETTINGS ACK the server owes piles up on its side
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(4, 0, 0, Buffer.alloc(0))]));
    const batch = Buffer.concat(Array.from({ length: 1000 }, () => one));
    let gone = false;
    void closed.then(() => (gone = true));
    for (let i = 0; i < 200 && !gone; i++) {
      if (!socket.write(batch)) await Promise.race([new Promise((r) => socket.once('drain', r)), closed]);
    }
    // The server dropped the connection long before 200,000 frames were written.
    expect(gone).toBe(true);
    expect(await waitFor(() => t.logs().find((l) => l.msg === 'http2 session dropped' && l.remote === '127.0.0.1' && /flood/i.test(String(l.err))))).toBeTruthy();
    expect((await h2('a.test', '/')).body).toBe('site A');
  });

  /** A TLS connection speaking h2 by hand: the preface and an empty SETTINGS sent, the server's SETTINGS never acknowledged. */
  async function rawH2(): Promise<{ socket: tls.TLSSocket; closed: Promise<void>; frames: () => Buffer }> {
    const socket = tls.connect({ host: '127.0.0.1', port: Number(httpsUrl.port), servername: 'a.test', ALPNProtocols: ['h2'], rejectUnauthorized: false });
    socket.on('error', () => undefined); // the server may drop us; that is what is tested
    const got: Buffer[] = [];
    socket.on('data', (d: Buffer) => got.push(d));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
    socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(4, 0, 0, Buffer.alloc(0))]));
    return { socket, closed, frames: () => Buffer.concat(got) };
  }
  /** The first frame of `type` on `stream` in what the server sent: its payload. */
  const firstFrame = (f: Buffer, type: number, stream: number): Buffer | undefined => {
    for (let i = 0; i + 9 <= f.length; i += 9 + f.readUIntBE(i, 3)) if (f[i + 3] === type && f.readUInt32BE(i + 5) === stream) return f.subarray(i + 9, i + 9 + f.readUIntBE(i, 3));
    return undefined;
  };
  /** HPACK for GET https://a.test/ (static table entries, :authority as a literal). */
  const GET_A = Buffer.concat([Buffer.from([0x82, 0x87, 0x84, 0x01, 6]), Buffer.from('a.test')]);

  it('drops a connection that sends endless CONTINUATION frames (CVE-2024-27316 class), and logs it', async () => {
    const { socket, closed } = await rawH2();
    let gone = false;
    void closed.then(() => (gone = true));
    // HEADERS without END_HEADERS, then CONTINUATIONs each adding a small header: a header block that never ends.
    socket.write(frame(1, 0x1, 1, GET_A));
    const more = Buffer.concat(Array.from({ length: 1000 }, () => frame(9, 0, 1, Buffer.from([0x00, 1, 0x78, 1, 0x79]))));
    for (let i = 0; i < 100 && !gone; i++) {
      if (!socket.write(more)) await Promise.race([new Promise((r) => socket.once('drain', r)), closed]);
    }
    await closed;
    expect(await waitFor(() => t.logs().find((l) => l.msg === 'http2 session dropped' && l.remote === '127.0.0.1' && /CONTINUATION/.test(String(l.err))))).toBeTruthy();
    expect((await h2('a.test', '/')).body).toBe('site A');
  });

  it('refuses a header list over 16 KiB from a client that never acknowledges its SETTINGS (HPACK: 4 KB sent, 400 KB read)', async () => {
    const { socket, frames } = await rawH2();
    try {
      // Literal with incremental indexing, new name: x-bomb with 4,000 bytes becomes dynamic entry 62; then 0xbe (entry 62) 100 times.
      // Until the client acknowledges the server's SETTINGS, nghttp2 holds it to the protocol's defaults (no header list limit).
      const value = Buffer.concat([Buffer.from([0x7f, 0x80 | 33, 30]) /* 4,000 = 127 + 33 + 30 × 128 */, Buffer.alloc(4000, 0x79)]);
      socket.write(frame(1, 0x5, 1, Buffer.concat([GET_A, Buffer.from([0x40, 6]), Buffer.from('x-bomb'), value, Buffer.alloc(100, 0xbe)])));
      const rst = await waitFor(() => firstFrame(frames(), 3, 1) ?? firstFrame(frames(), 1, 1)?.subarray(0, 0));
      // RST_STREAM (not a HEADERS answer) with ENHANCE_YOUR_CALM, as for a client that did acknowledge them.
      expect(rst.length).toBe(4);
      expect(rst.readUInt32BE(0)).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      expect(await waitFor(() => t.logs().find((l) => l.msg === 'http2 request refused' && l.remote === '127.0.0.1' && /header list/.test(String(l.why))))).toBeTruthy();
    } finally {
      socket.destroy();
    }
  });

  it('refuses CONNECT over h2 with :status 501, not a 200 that opens a tunnel (RFC 9113 §8.5), and logs who', async () => {
    const session = http2.connect(httpsUrl.origin, { rejectUnauthorized: false, servername: 'a.test' });
    session.on('error', () => undefined);
    try {
      const answer = await new Promise<{ status?: number; body: string }>((resolve) => {
        const s = session.request({ ':method': 'CONNECT', ':authority': '127.0.0.1:22' });
        let status: number | undefined;
        let body = '';
        s.on('response', (h) => (status = Number(h[':status'])));
        s.on('data', (c: Buffer) => (body += c));
        s.on('error', () => undefined); // a reset after the answer changes nothing here
        s.on('close', () => resolve({ status, body }));
        s.end();
      });
      expect(answer.status).toBe(501);
      expect(answer.body).not.toMatch(/^HTTP\/1\.1/);
      expect(t.logs().some((l) => l.msg === 'CONNECT refused: not a proxy' && l.remote === '127.0.0.1' && l.url === '127.0.0.1:22')).toBe(true);
    } finally {
      session.close();
    }
  });

  it('refuses a header list over 16 KiB (RST_STREAM ENHANCE_YOUR_CALM), and the session goes on', async () => {
    const session = http2.connect(httpsUrl.origin, { rejectUnauthorized: false, servername: 'a.test', settings: { maxHeaderListSize: 1 << 20 } });
    try {
      // Our SETTINGS are acknowledged before the next frame the client sends (frames keep their order).
      await new Promise<void>((resolve) => session.once('remoteSettings', () => resolve()));
      const ask = (headers: http2.OutgoingHttpHeaders) =>
        new Promise<{ status?: number; rst: number; body: string }>((resolve) => {
          const s = session.request({ ':path': '/', ':authority': 'a.test', ...headers });
          let status: number | undefined;
          let body = '';
          s.on('response', (h) => (status = Number(h[':status'])));
          s.on('data', (c: Buffer) => (body += c));
          s.on('error', () => undefined); // the reset is what is tested
          s.on('close', () => resolve({ status, rst: s.rstCode ?? 0, body }));
        });
      const big = await ask({ 'x-big': 'x'.repeat(20_000) });
      expect(big.status).toBeUndefined();
      expect(big.rst).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      const fine = await ask({ 'x-small': 'x'.repeat(1_000) });
      expect(fine).toMatchObject({ status: 200, body: 'site A' });
    } finally {
      session.close();
    }
  });
});

describe('stopping with HTTP/2 sessions open', () => {
  it('sends GOAWAY, lets the stream under way finish, then stops', async () => {
    const session = http2.connect(httpsUrl.origin, { rejectUnauthorized: false, servername: 'a.test' });
    session.on('error', () => undefined); // the session ends with the suite
    const goaway = new Promise<number>((resolve) => session.once('goaway', (code: number) => resolve(code)));
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const s = session.request({ ':path': '/app/hold', ':authority': 'a.test' });
      let status = 0;
      let body = '';
      s.on('response', (h) => (status = Number(h[':status'])));
      s.on('data', (c: Buffer) => (body += c));
      s.on('end', () => resolve({ status, body }));
      s.on('error', reject);
    });
    await waitFor(() => held.length > 0);
    const stopped = t.suite.stop(5_000);
    expect(await goaway).toBe(http2.constants.NGHTTP2_NO_ERROR);
    held.shift()!();
    expect(await answer).toEqual({ status: 200, body: 'held answer' });
    await stopped;
  });
});
