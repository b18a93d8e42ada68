import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../../helpers/http.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite;
let backend: http.Server;
/** What the backend received, newest last. */
const seen: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders }> = [];

beforeAll(async () => {
  backend = http.createServer((req, res) => {
    seen.push({ method: req.method!, url: req.url!, headers: req.headers });
    req.resume();
    req.on('end', () => res.end(`backend ${req.url}`));
  });
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
  const up = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
  t = await startTestSuite({
    tenants: {
      'shop.test': {
        domains: ['shop.test', 'www.shop.test'],
        proxy: [
          { path: '/app/', to: up },
          { path: '/v2/', to: `${up}/inner/` },
          { path: '/a%20b/', to: `${up}/spaced/` },
        ],
      },
      'other.test': { domains: ['other.test'] },
    },
    files: { 'shop.test/index.html': 'shop home', 'other.test/index.html': 'other home' },
  });
});
afterAll(async () => {
  await t?.stop();
  backend?.closeAllConnections();
  await new Promise((r) => backend?.close(r));
});

/** Sends one request byte for byte; returns the response and what the backend saw for it (if anything). */
async function send(target: string, lines: string[] = ['Host: shop.test'], method = 'GET') {
  const before = seen.length;
  const r = await rawExchange(t.http, `${method} ${target} HTTP/1.1\r\n${lines.map((l) => `${l}\r\n`).join('')}Connection: close\r\n\r\n`);
  return { r, upstream: seen.length > before ? seen[seen.length - 1] : undefined };
}

describe('the host a backend sees', () => {
  it('is the routed one for an absolute-form target, never the Host the client sent beside it', async () => {
    const { r, upstream } = await send('http://shop.test/app/x', ['Host: evil.attacker', 'X-Forwarded-Host: evil.attacker']);
    expect(r.status).toBe(200);
    expect(upstream?.headers.host).toBe('shop.test');
    expect(upstream?.headers['x-forwarded-host']).toBe('shop.test');
    expect(JSON.stringify(upstream?.headers)).not.toContain('evil.attacker');
  });

  it('keeps the port of the authority it was routed by', async () => {
    const { upstream } = await send('/app/y', ['Host: www.shop.test:8080']);
    expect(upstream?.headers.host).toBe('www.shop.test:8080');
    expect(upstream?.headers['x-forwarded-host']).toBe('www.shop.test:8080');
  });
});

describe('proxy paths: one normalised path for matching and rewriting', () => {
  /** Raw target → the path the backend must see (undefined: must not reach the backend), and the status. */
  const TABLE: Array<[string, string | undefined, number]> = [
    ['/v2/x', '/inner/x', 200],
    ['/v%32/x', '/inner/x', 200],
    ['/%76%32/x', '/inner/x', 200],
    ['/%76%32/%78', '/inner/x', 200],
    ['/v2/%7e', '/inner/~', 200],
    ['/v2/%41', '/inner/A', 200],
    ['/v2/a%20b', '/inner/a%20b', 200],
    ['/v2/a b', undefined, 400],
    ['/v2/caf%c3%a9', '/inner/caf%C3%A9', 200],
    ['/v2/a:b@c;d=e,f+g$h&i', '/inner/a:b@c;d=e,f+g$h&i', 200],
    ['/v2/%3a%40', '/inner/:@', 200],
    ['/v2/%3f', '/inner/%3F', 200],
    ['/v2/%23', '/inner/%23', 200],
    ['/v2/x?q=%2F&a=..', '/inner/x?q=%2F&a=..', 200],
    ['//v2//x', '/inner/x', 200],
    ['/v2/./x', '/inner/x', 200],
    ['/v2/%2e/x', '/inner/x', 200],
    ['/v2/y/../x', '/inner/x', 200],
    ['/v2/y/%2e%2e/x', '/inner/x', 200],
    ['/other/../v2/x', '/inner/x', 200],
    ['/v2/x/', '/inner/x/', 200],
    ['/v2/', '/inner/', 200],
    ['/v2/..', undefined, 301], // that is "/" without its slash: the static home's redirect, never the backend
    ['/v2/../../etc/passwd', undefined, 403],
    ['/v2%2Fx', undefined, 400], // an encoded "/" is never a separator: refused everywhere
    ['/v2/a%2Fb', undefined, 400],
    ['/v2/a%5cb', undefined, 400],
    ['/v2/%00', undefined, 400],
    ['/v2/%zz', undefined, 400],
    ['/V2/x', undefined, 404], // paths are case-sensitive: not the route
    ['/v%32', undefined, 301],
    ['/app/%61pp', '/app/app', 200],
    ['/%61pp/x', '/app/x', 200],
    ['/a%20b/c', '/spaced/c', 200],
    ['/a b/c', undefined, 400],
  ];
  it.each(TABLE)('%s → %s', async (target, expected, status) => {
    const { r, upstream } = await send(target);
    expect(r.status).toBe(status);
    expect(upstream?.url).toBe(expected);
  });

  it('redirects a prefix without its slash to the canonical prefix', async () => {
    const { r } = await send('/v%32?x=1');
    expect(r.header('location')).toBe('/v2/?x=1');
  });

  it('sends a path that resolves above the prefix to the static site, not the backend', async () => {
    const { r, upstream } = await send('/v2/..');
    expect(r.header('location')).toBe('/');
    expect(upstream).toBeUndefined();
  });

  it('is refused with a WebSocket handshake too', async () => {
    const { r, upstream } = await send('/app/ws', ['Host: shop.test', 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='], 'TRACE');
    expect(r.status).toBe(405);
    expect(upstream).toBeUndefined();
  });
});

describe('client address headers (the backend learns the address from the connection, never from the client)', () => {
  // Set by the suite from the connection.
  const SET = ['x-forwarded-for', 'x-real-ip', 'true-client-ip'];
  // Other names some backends trust for the client address: never passed on.
  const DROPPED = ['x-client-ip', 'x-cluster-client-ip', 'cf-connecting-ip', 'fastly-client-ip', 'x-originating-ip', 'client-ip', 'forwarded'];
  it.each([...SET, ...DROPPED])('%s sent by the client does not reach the backend', async (name) => {
    const value = name === 'forwarded' ? 'for=6.6.6.6;proto=https' : '6.6.6.6';
    const { r, upstream } = await send('/app/ip', ['Host: shop.test', `${name}: ${value}`, `${name.toUpperCase()}: 6.6.6.7`]);
    expect(r.status).toBe(200);
    for (const set of SET) expect(upstream?.headers[set]).toBe('127.0.0.1');
    for (const dropped of DROPPED) expect(upstream?.headers[dropped]).toBeUndefined();
    expect(JSON.stringify(upstream?.headers)).not.toMatch(/6\.6\.6\./);
  });
});

describe('TRACE (RFC 9110 §9.3.8: it would echo cookies and credentials back to a script)', () => {
  const TABLE: Array<[string, string]> = [
    ['/app/x', 'a proxied path'],
    ['/v2/x', 'a proxied path with a rewritten prefix'],
    ['/', 'a static page'],
    ['/missing.html', 'a missing file'],
    ['/cgi-bin/formmail', 'a handler'],
  ];
  it.each(TABLE)('%s (%s): 405 with Allow, never forwarded', async (target) => {
    const { r, upstream } = await send(target, ['Host: shop.test', 'Cookie: secret=1'], 'TRACE');
    expect(r.status).toBe(405);
    expect(r.header('allow')).toMatch(/^GET, HEAD/);
    expect(r.header('allow')).not.toMatch(/TRACE/);
    expect(r.raw).not.toContain('secret=1');
    expect(upstream).toBeUndefined();
  });

  it('is refused with a WebSocket handshake too', async () => {
    const { r, upstream } = await send('/app/ws', ['Host: shop.test', 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='], 'TRACE');
    expect(r.status).toBe(405);
    expect(upstream).toBeUndefined();
  });
});
