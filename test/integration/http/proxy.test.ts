import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest } from '../../helpers/http.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite;
let upstream: http.Server;
let upstreamUrl: string;
let deadPort: number;
let endlessDone: () => void;
const endlessClosed = new Promise<void>((resolve) => (endlessDone = resolve));

const get = (p: string, headers: Record<string, string> = {}, method = 'GET', body?: string) => rawRequest(t.http, p, { host: 'app.test', ...headers }, method, body);

beforeAll(async () => {
  upstream = http.createServer((req, res) => {
    if (req.url?.startsWith('/app/stall')) return; // never answers
    if (req.url?.startsWith('/app/endless')) {
      // Writes until the proxy's side of the connection goes away.
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const more = () => {
        while (res.write(Buffer.alloc(64 * 1024, 97)));
      };
      res.on('drain', more);
      more();
      res.on('close', () => endlessDone());
      return;
    }
    if (req.url?.startsWith('/app/big')) {
      // 1 MiB in chunks, without a Content-Length, and two Set-Cookie fields.
      res.writeHead(200, [['set-cookie', 'a=1'], ['set-cookie', 'b=2'], ['content-type', 'application/octet-stream']].flat());
      let left = 16;
      const next = () => {
        if (left-- === 0) return void res.end();
        res.write(Buffer.alloc(64 * 1024, 98), next);
      };
      next();
      return;
    }
    if (req.url?.startsWith('/app/reset-early')) return req.socket.destroy();
    if (req.url?.startsWith('/app/reset')) {
      res.writeHead(200, { 'content-length': '100' });
      res.write('partial');
      setImmediate(() => req.socket.destroy());
      return;
    }
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'keep-alive': 'timeout=99', 'x-secret-hop': 'h', connection: 'x-secret-hop' });
      res.end(JSON.stringify({ url: req.url, method: req.method, headers: req.headers, body }));
    });
  });
  upstream.on('upgrade', (req, socket) => {
    if (req.url?.startsWith('/app/ws-refused')) return socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    socket.write(`hello ${req.url} xff=${req.headers['x-forwarded-for']}\n`);
    socket.pipe(socket);
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  deadPort = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));

  t = await startTestSuite({
    main: { http: { proxyTimeout: 0.5 } },
    tenants: {
      'app.test': {
        domains: ['app.test'],
        proxy: [
          { path: '/app/', to: upstreamUrl },
          { path: '/api/', to: `${upstreamUrl}/v2/` },
          { path: '/down/', to: `http://127.0.0.1:${deadPort}` },
        ],
      },
    },
    files: { 'app.test/index.html': 'static home' },
  });
});
afterAll(async () => {
  await t?.stop();
  upstream?.closeAllConnections();
  await new Promise((r) => upstream?.close(r));
});

describe('reverse proxy', () => {
  it('passes the path unchanged for a URL without a path, and replaces the prefix for one with a path', async () => {
    const a = JSON.parse((await get('/app/x/y?q=1')).body.toString());
    expect(a.url).toBe('/app/x/y?q=1');
    const b = JSON.parse((await get('/api/items?id=2')).body.toString());
    expect(b.url).toBe('/v2/items?id=2');
    expect((await get('/')).body.toString()).toBe('static home');
    const r = await get('/app');
    expect(r.status).toBe(301);
    expect(r.headers.location).toBe('/app/');
  });

  it('sets X-Forwarded-For/-Proto/-Host itself, replacing what the client sent', async () => {
    const { headers } = JSON.parse(
      (await get('/app/h', { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-host': 'evil.test', 'x-forwarded-proto': 'https', forwarded: 'for=6.6.6.6' })).body.toString(),
    );
    expect(headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(headers['x-forwarded-host']).toBe('app.test');
    expect(headers['x-forwarded-proto']).toBe('http');
    expect(headers.forwarded).toBeUndefined();
    expect(headers.host).toBe('app.test');
  });

  it('strips hop-by-hop headers both ways, including ones named by Connection', async () => {
    const r = await get('/app/hop', { connection: 'keep-alive, x-private', 'x-private': 'p', te: 'trailers', 'proxy-authorization': 'Basic eA==' });
    const { headers } = JSON.parse(r.body.toString());
    expect(headers['x-private']).toBeUndefined();
    expect(headers.te).toBeUndefined();
    expect(headers['proxy-authorization']).toBeUndefined();
    expect(r.headers['x-secret-hop']).toBeUndefined();
    expect(r.headers['keep-alive']).not.toBe('timeout=99');
  });

  it('streams a large answer without Content-Length whole, keeps repeated fields, and logs the bytes sent', async () => {
    const r = await get('/app/big');
    expect(r.status).toBe(200);
    expect(r.body.length).toBe(1024 * 1024);
    expect(r.body.every((b) => b === 98)).toBe(true);
    expect(r.headers['set-cookie']).toEqual(['a=1', 'b=2']);
  });

  it('stops the upstream request when the client goes away mid-answer', async () => {
    const port = Number(new URL(t.http).port);
    const socket = net.connect(port, '127.0.0.1');
    socket.write('GET /app/endless HTTP/1.1\r\nHost: app.test\r\n\r\n');
    await new Promise<void>((resolve) => socket.once('data', () => resolve()));
    socket.destroy();
    await endlessClosed; // the backend saw its connection closed: nothing left running for a client that is gone
    expect((await get('/')).body.toString()).toBe('static home');
  });

  it('forwards request bodies', async () => {
    const r = JSON.parse((await get('/app/post', { 'content-type': 'text/plain' }, 'POST', 'hello body')).body.toString());
    expect(r).toMatchObject({ method: 'POST', body: 'hello body' });
  });

  it('refuses dot-segment tricks before they reach the upstream', async () => {
    expect((await get('/app/../../etc/passwd')).status).toBe(403);
    const r = JSON.parse((await get('/app/a/./b')).body.toString());
    expect(r.url).toBe('/app/a/b');
  });

  it('answers 502 with a page when the upstream is down, 504 when it stalls, and survives resets', async () => {
    const down = await get('/down/x');
    expect(down.status).toBe(502);
    expect(down.body.toString()).toMatch(/502 Bad Gateway.*Reference: \w+/s);
    const stall = await get('/app/stall');
    expect(stall.status).toBe(504);
    const early = await get('/app/reset-early');
    expect(early.status).toBe(502);
    const mid = await get('/app/reset').catch((e: Error) => e);
    expect(mid instanceof Error || mid.status === 200).toBe(true);
    // The process is still serving.
    expect((await get('/')).body.toString()).toBe('static home');
    expect(t.logs().some((l) => l.msg === 'upstream failed' && l.upstream === `http://127.0.0.1:${deadPort}`)).toBe(true);
  });

  it('proxies WebSocket upgrades with X-Forwarded-For set', async () => {
    const u = new URL(t.http);
    const text = await new Promise<string>((resolve, reject) => {
      const req = http.request({ host: u.hostname, port: u.port, path: '/app/ws', headers: { host: 'app.test', connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'x-forwarded-for': '6.6.6.6' } });
      req.on('upgrade', (res, socket, head) => {
        expect(res.statusCode).toBe(101);
        let data = head.toString();
        socket.on('data', (c) => {
          data += c;
          if (data.includes('ping')) {
            socket.destroy();
            resolve(data);
          }
        });
        socket.write('ping\n');
      });
      req.on('error', reject);
      req.end();
    });
    expect(text).toContain('hello /app/ws xff=127.0.0.1');
    expect(text).toContain('ping');
  });

  const handshake = (path: string) => {
    const u = new URL(t.http);
    return new Promise<number>((resolve, reject) => {
      const req = http.request({ host: u.hostname, port: u.port, path, headers: { host: 'app.test', connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } });
      req.on('upgrade', () => reject(new Error('upgraded')));
      req.on('response', (res) => resolve(res.statusCode ?? 0));
      req.on('error', reject);
      req.end();
    });
  };

  it('answers a WebSocket handshake to a dead upstream with 502, and relays an upstream refusal', async () => {
    expect(await handshake('/down/ws')).toBe(502);
    expect(await handshake('/app/ws-refused')).toBe(403);
  });

  it('logs proxied requests in the tenant access log, WebSocket handshakes with the status they ended with', async () => {
    await get('/app/logged');
    await t.suite.stop(200).catch(() => undefined);
    const { readFileSync } = await import('node:fs');
    const log = readFileSync(`${t.dataDir}/logs/app.test/access.log`, 'utf8');
    expect(log).toMatch(/"GET \/app\/logged HTTP\/1\.1" 200 \d+/);
    expect(log).toMatch(/"GET \/app\/big HTTP\/1\.1" 200 1048576 /);
    expect(log).toMatch(/"GET \/down\/x HTTP\/1\.1" 502 \d+/);
    expect(log).toMatch(/"GET \/app\/ws HTTP\/1\.1" 101 -/);
    expect(log).toMatch(/"GET \/down\/ws HTTP\/1\.1" 502 -/);
    expect(log).toMatch(/"GET \/app\/ws-refused HTTP\/1\.1" 403 -/);
    expect(log).not.toMatch(/"GET \/(down\/ws|app\/ws-refused) HTTP\/1\.1" 101/);
  });
});
