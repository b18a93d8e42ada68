import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite;
let upstream: http.Server;
const upstreamClosed: string[] = [];

beforeAll(async () => {
  upstream = http.createServer((req, res) => {
    // A slow backend: sends headers and a first chunk, then waits.
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('first chunk\n');
    res.on('close', () => upstreamClosed.push(req.url ?? ''));
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  t = await startTestSuite({
    main: { http: { headersTimeout: 1, requestTimeout: 2 } },
    tenants: { 'a.test': { domains: ['a.test'], proxy: [{ path: '/slow/', to: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` }] } },
    files: { 'a.test/index.html': 'home' },
  });
});
afterAll(async () => {
  await t?.stop();
  upstream?.closeAllConnections();
  await new Promise((r) => upstream?.close(r));
});

function connect(): Promise<net.Socket> {
  const u = new URL(t.http);
  return new Promise((resolve) => {
    const s = net.connect(Number(u.port), u.hostname, () => resolve(s));
  });
}

describe('slow clients', () => {
  it('closes a connection whose headers never finish (slow loris) with 408', async () => {
    const s = await connect();
    s.write('GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: 1\r\n');
    let data = '';
    s.on('data', (c) => (data += c));
    await new Promise((r) => s.on('close', r));
    expect(data).toMatch(/^HTTP\/1\.1 408/);
  });

  it('still serves others while a slow client waits', async () => {
    const s = await connect();
    s.write('GET / HTTP/1.1\r\nHost: a.test\r\n');
    const ok = await new Promise<string>((resolve) => {
      const u = new URL(t.http);
      http.get({ host: u.hostname, port: u.port, path: '/', headers: { host: 'a.test' } }, (res) => {
        let b = '';
        res.on('data', (c) => (b += c));
        res.on('end', () => resolve(b));
      });
    });
    expect(ok).toBe('home');
    s.destroy();
  });
});

describe('proxy and a client that goes away', () => {
  it('cancels the upstream request when the client disconnects', async () => {
    const s = await connect();
    s.write('GET /slow/abandoned HTTP/1.1\r\nHost: a.test\r\n\r\n');
    await new Promise<void>((resolve) => s.once('data', () => resolve()));
    s.destroy();
    await waitFor(() => upstreamClosed.includes('/slow/abandoned'), 5_000, 'the upstream request to be closed');
  });
});
