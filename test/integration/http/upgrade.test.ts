import { execFile } from 'node:child_process';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../../helpers/http.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const run = promisify(execFile);
let t: TestSuite;
let backend: http.Server;
let port: string;
/** What the backend received, newest last. */
const seen: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; body: string }> = [];

beforeAll(async () => {
  backend = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      res.end(`backend ${req.method} ${req.url} ${body}`);
    });
  });
  // A backend that would switch protocols if asked: it must never be asked for h2c.
  backend.on('upgrade', (req, socket) => {
    seen.push({ method: req.method!, url: req.url!, headers: req.headers, body: '' });
    socket.end('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n');
  });
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
  t = await startTestSuite({
    tenants: {
      'shop.test': { domains: ['shop.test'], proxy: [{ path: '/app/', to: `http://127.0.0.1:${(backend.address() as AddressInfo).port}` }] },
      'gone.test': { domains: ['gone.test'], suspended: true, proxy: [{ path: '/app/', to: `http://127.0.0.1:${(backend.address() as AddressInfo).port}` }] },
    },
    main: { admin: { listen: '127.0.0.1:0' } },
    files: { 'shop.test/index.html': 'shop home' },
  });
  port = new URL(t.http).port;
});
afterAll(async () => {
  await t?.stop();
  backend?.closeAllConnections();
  await new Promise((r) => backend?.close(r));
});

/** curl with shop.test resolved to the suite; resolves with the body and the status line. */
async function curl(args: string[], p: string) {
  const { stdout } = await run('curl', ['-sS', '--max-time', '10', '--resolve', `shop.test:${port}:127.0.0.1`, '-w', '\n%{http_code} %{http_version}', ...args, `http://shop.test:${port}${p}`]);
  const nl = stdout.lastIndexOf('\n');
  const [code, version] = stdout.slice(nl + 1).split(' ');
  return { body: stdout.slice(0, nl), status: Number(code), version };
}

const H2C_OFFER = ['Connection: Upgrade, HTTP2-Settings', 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA'];

describe('an Upgrade offer that is not taken (RFC 9110 §7.8: the server may ignore it)', () => {
  it('serves a static page to `curl --http2` (h2c offered) over HTTP/1.1', async () => {
    expect(await curl(['--http2'], '/')).toEqual({ body: 'shop home', status: 200, version: '1.1' });
  });

  it('passes a POST body offered with h2c to the backend, without the offer', async () => {
    const r = await curl(['--http2', '-d', 'a=b&c=d'], '/app/form');
    expect(r).toEqual({ body: 'backend POST /app/form a=b&c=d', status: 200, version: '1.1' });
    const up = seen[seen.length - 1]!;
    expect(up.headers.upgrade).toBeUndefined();
    expect(up.headers['http2-settings']).toBeUndefined();
    expect(up.headers.connection).not.toMatch(/upgrade/i);
  });

  it('keeps the connection for the next request', async () => {
    const first = ['GET / HTTP/1.1', 'Host: shop.test', ...H2C_OFFER, '', ''].join('\r\n');
    const second = ['GET /app/next HTTP/1.1', 'Host: shop.test', 'Connection: close', '', ''].join('\r\n');
    const r = await rawExchange(t.http, first + second);
    expect(r.status).toBe(200);
    expect(r.raw).toContain('shop home');
    expect(r.raw).toContain('backend GET /app/next');
  });

  it('reads the next request when it comes later, and a chunked body', async () => {
    const u = new URL(t.http);
    const sock = net.connect(Number(u.port), u.hostname);
    let got = '';
    const next = (marker: string) =>
      new Promise<void>((resolve, reject) => {
        const onData = (c: Buffer) => {
          got += c.toString('latin1');
          if (got.includes(marker)) {
            sock.off('data', onData);
            resolve();
          }
        };
        sock.on('data', onData);
        sock.once('error', reject);
      });
    const chunked = ['POST /app/chunked HTTP/1.1', 'Host: shop.test', ...H2C_OFFER, 'Transfer-Encoding: chunked', '', '3', 'x=1', '0', '', ''].join('\r\n');
    let answered = next('backend POST /app/chunked x=1');
    sock.write(chunked);
    await answered;
    answered = next('shop home');
    sock.write(['GET / HTTP/1.1', 'Host: shop.test', ...H2C_OFFER, '', ''].join('\r\n'));
    await answered;
    answered = next('backend GET /app/third');
    sock.write(['GET /app/third HTTP/1.1', 'Host: shop.test', '', ''].join('\r\n'));
    await answered;
    sock.destroy();
    expect(got.match(/HTTP\/1\.1 200 OK/g)).toHaveLength(3);
    expect(got).not.toContain('101');
  });

  it('answers a WebSocket handshake to a suspended tenant with the 503 page', async () => {
    const before = seen.length;
    const r = await rawExchange(t.http, ['GET /app/ws HTTP/1.1', 'Host: gone.test', 'Connection: Upgrade, close', 'Upgrade: websocket', '', ''].join('\r\n'));
    expect(r.status).toBe(503);
    expect(r.raw).toContain('This site is suspended');
    expect(seen.length).toBe(before);
  });

  const OFFERS: Array<[string, string[], string]> = [
    ['h2c on a static page', H2C_OFFER, 'shop home'],
    ['websocket on a static page', ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='], 'shop home'],
    ['an unknown protocol', ['Connection: Upgrade', 'Upgrade: foo/2'], 'shop home'],
    ['h2c to a proxied path', H2C_OFFER, 'backend GET /app/h2c'],
    ['TLS/1.0 (RFC 2817) to a proxied path', ['Connection: Upgrade', 'Upgrade: TLS/1.0'], 'backend GET /app/h2c'],
  ];
  it.each(OFFERS)('answers %s with the page itself', async (_what, lines, body) => {
    const target = body.startsWith('backend') ? '/app/h2c' : '/';
    const before = seen.length;
    const r = await rawExchange(t.http, [`GET ${target} HTTP/1.1`, 'Host: shop.test', ...lines, '', ''].join('\r\n').replace(/Connection: Upgrade/, 'Connection: Upgrade, close'));
    expect(r.status).toBe(200);
    expect(r.raw.startsWith('HTTP/1.1 200')).toBe(true);
    expect(r.raw).toContain(body);
    for (const s of seen.slice(before)) expect(s.headers.upgrade).toBeUndefined();
  });
});

describe('a declined Upgrade offer is logged and counted like any answer', () => {
  const accessLog = () => {
    try {
      return readFileSync(path.join(t.dataDir, 'logs', 'shop.test', 'access.log'), 'utf8');
    } catch {
      return ''; // not written yet: the log is flushed in batches
    }
  };
  const requests = async () => {
    const text = await (await fetch(`${t.suite.urls.admin![0]!}/metrics`)).text();
    return Number(/^makewaves_http_requests_total\{tenant="shop\.test",class="2xx"\} (\S+)$/m.exec(text)?.[1] ?? 0);
  };

  it('writes `curl --http2` (h2c) and a WebSocket offer on a static path to the tenant\'s access log and its metrics', async () => {
    const before = await requests();
    expect(await curl(['--http2', '-A', 'declined-h2c-agent'], '/?offer=h2c')).toEqual({ body: 'shop home', status: 200, version: '1.1' });
    const ws = await rawExchange(
      t.http,
      ['GET /?offer=websocket HTTP/1.1', 'Host: shop.test', 'User-Agent: declined-ws-agent', 'Connection: Upgrade, close', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', '', ''].join('\r\n'),
    );
    expect(ws.status).toBe(200);
    const log = await waitFor(() => /declined-ws-agent/.test(accessLog()) && /declined-h2c-agent/.test(accessLog()) && accessLog(), 10_000, 'both answers in the access log');
    expect(log).toMatch(/"GET \/\?offer=h2c HTTP\/1\.1" 200 [^\n]*declined-h2c-agent/);
    expect(log).toMatch(/"GET \/\?offer=websocket HTTP\/1\.1" 200 [^\n]*declined-ws-agent/);
    await waitFor(async () => (await requests()) >= before + 2, 10_000, 'both answers counted under shop.test');
  });
});
