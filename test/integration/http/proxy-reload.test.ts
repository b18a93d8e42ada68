import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest } from '../../helpers/http.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';

/**
 * The proxy's libraries (undici, http-proxy-3) are loaded only for a suite
 * with proxy routes. Started without one, a reload that adds the first route
 * loads them at its first request: a WebSocket handshake first (the path
 * that needs http-proxy-3), then a plain request (undici). A file of its own:
 * the libraries, once loaded, stay loaded for the test file.
 */
let t: TestSuite;
let upstream: http.Server;

beforeAll(async () => {
  upstream = http.createServer((req, res) => res.end(`upstream saw ${req.url} for ${req.headers.host}`));
  upstream.on('upgrade', (req, socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    socket.end(`hello ${req.url}\n`);
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  t = await startTestSuite({ tenants: { 'app.test': { domains: ['app.test'] } }, files: { 'app.test/index.html': 'static home' } });
});
afterAll(async () => {
  await t?.stop();
  upstream?.closeAllConnections();
  await new Promise((r) => upstream?.close(r));
});

describe('a proxy route added by a reload to a suite started without any', () => {
  it('proxies WebSocket handshakes and requests from the first one on', async () => {
    const get = (p: string) => rawRequest(t.http, p, { host: 'app.test' });
    expect((await get('/app/x')).status).toBe(404);
    t.writeTenant('app.test', { domains: ['app.test'], proxy: [{ path: '/app/', to: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` }] });
    expect(t.suite.reload()).toBe(true);
    const u = new URL(t.http);
    const text = await new Promise<string>((resolve, reject) => {
      const req = http.request({ host: u.hostname, port: u.port, path: '/app/ws', headers: { host: 'app.test', connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } });
      req.on('upgrade', (res, socket, head) => {
        let data = `${res.statusCode} ${head.toString()}`;
        socket.on('data', (c) => (data += c));
        socket.on('end', () => resolve(data));
      });
      req.on('response', (res) => reject(new Error(`answered ${res.statusCode} instead of 101`)));
      req.on('error', reject);
      req.end();
    });
    expect(text).toBe('101 hello /app/ws\n');
    const r = await get('/app/y?q=1');
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('upstream saw /app/y?q=1 for app.test');
    expect((await get('/')).body.toString()).toBe('static home');
  });
});
