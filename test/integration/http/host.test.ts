import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../../helpers/http.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite;

beforeAll(async () => {
  t = await startTestSuite({
    tenants: { 'a.test': { domains: ['a.test', 'www.a.test'] }, 'b.test': { domains: ['b.test'] } },
    files: { 'a.test/index.html': 'A home', 'b.test/index.html': 'B home' },
  });
});
afterAll(async () => t?.stop());

/** The header lines (each without CRLF) sent with `GET <target>`. */
const send = (target: string, lines: string[]) => rawExchange(t.http, `GET ${target} HTTP/1.1\r\n${lines.map((l) => `${l}\r\n`).join('')}Connection: close\r\n\r\n`);

describe('Host header (RFC 9112 §3.2, RFC 3986 §3.2.2)', () => {
  // RFC 9112 §3.2: more than one Host line, or an invalid value, is a 400.
  const REFUSED: Array<[string, string[]]> = [
    ['two Host lines, same value', ['Host: a.test', 'Host: a.test']],
    ['two Host lines, different tenants', ['Host: a.test', 'Host: b.test']],
    ['two Host lines, the second one known', ['Host: unknown.test', 'Host: a.test']],
    ['two Host lines, different case', ['Host: a.test', 'host: A.TEST']],
    ['port above 65535', ['Host: a.test:99999']],
    ['two ports', ['Host: a.test:80:b.test']],
    ['port 0x50', ['Host: a.test:0x50']],
    ['port 0', ['Host: a.test:0']],
    ['six-digit port', ['Host: a.test:000080']],
    ['negative port', ['Host: a.test:-80']],
    ['empty port', ['Host: a.test:']],
    ['unclosed IPv6 literal', ['Host: [::1']],
    ['IPv6 literal with junk after', ['Host: [::1]x']],
    ['not an IPv6 address in brackets', ['Host: [a.test]']],
    ['space inside', ['Host: a .test']],
    ['space before the port', ['Host: a.test :80']],
    ['a second word', ['Host: a.test:80 b.test']],
    ['userinfo', ['Host: user@a.test']],
    ['a path', ['Host: a.test/x']],
    ['a backslash', ['Host: a.test\\b.test']],
    ['a percent escape', ['Host: a%2etest']],
    ['a comma list', ['Host: a.test,b.test']],
    ['only a port', ['Host: :80']],
    ['userinfo after a port', ['Host: a.test:80@b.test']],
    ['a fragment', ['Host: a.test#b.test']],
    ['a query', ['Host: a.test?b.test']],
    ['a port of spaces', ['Host: a.test: 80']],
    ['a non-ASCII name', ['Host: a.tést']],
    ['a bracketed IPv6 literal with an empty port', ['Host: [::1]:']],
    ['an empty Host beside a real one', ['Host:', 'Host: a.test']],
  ];
  it.each(REFUSED)('400 for %s', async (_what, lines) => {
    const r = await send('/', lines);
    expect(r.status).toBe(400);
    expect(r.raw).not.toContain('A home');
    expect(r.raw).not.toContain('B home');
  });

  const REFUSED_ABSOLUTE: Array<[string, string]> = [
    ['http://a.test:99999/', 'a.test'],
    ['http://a.test:80:b.test/', 'a.test'],
    ['http://user@a.test/', 'a.test'],
    ['http:///', 'a.test'],
    ['http://a.test:/', 'a.test'],
    ['http://[::1/', 'a.test'],
  ];
  it.each(REFUSED_ABSOLUTE)('400 for the absolute-form target %s', async (target, host) => {
    expect((await send(target, [`Host: ${host}`])).status).toBe(400);
  });

  it('400 for two Host lines even with an absolute-form target', async () => {
    expect((await send('http://a.test/', ['Host: a.test', 'Host: b.test'])).status).toBe(400);
  });

  const SERVED: Array<[string, string, string]> = [
    ['a.test', '/', 'A home'],
    ['A.Test', '/', 'A home'],
    ['a.test.', '/', 'A home'],
    ['www.a.test:8080', '/', 'A home'],
    ['a.test:65535', '/', 'A home'],
    ['a.test:080', '/', 'A home'],
    // RFC 9112 §5: whitespace around a field value is not part of it.
    ['  b.test:80 ', '/', 'B home'],
    ['a.test', 'http://b.test:8080/', 'B home'],
  ];
  it.each(SERVED)('serves Host %j, target %s', async (host, target, body) => {
    const r = await send(target, [`Host: ${host}`]);
    expect(r.status).toBe(200);
    expect(r.raw.endsWith(body)).toBe(true);
  });

  it('answers an IP literal or an unknown name with the suite 404, not a 400', async () => {
    for (const host of ['127.0.0.1', '127.0.0.1:8080', '[::1]', '[::1]:8080', 'unknown.test']) {
      expect((await send('/', [`Host: ${host}`])).status).toBe(404);
    }
  });

  it('logs who sent a bad Host and why', async () => {
    await send('/', ['Host: a.test', 'Host: b.test']);
    expect(t.logs().some((l) => l.msg === 'request refused' && l.why === 'more than one Host header')).toBe(true);
    await send('/', ['Host: a.test:99999']);
    expect(t.logs().some((l) => l.msg === 'request refused' && l.why === 'invalid Host header')).toBe(true);
  });
});

describe('OPTIONS * (RFC 9110 §9.3.7: about the server, not a resource)', () => {
  it.each(['a.test', 'unknown.test', ''])('answers 200 with Allow and no body (Host %j)', async (host) => {
    const r = await rawExchange(t.http, `OPTIONS * HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    expect(r.status).toBe(200);
    expect(r.header('allow')).toMatch(/^GET, HEAD, POST, .*OPTIONS$/);
    expect(r.header('allow')).not.toMatch(/TRACE|CONNECT/);
    expect(r.header('content-length')).toBe('0');
    expect(r.raw.endsWith('\r\n\r\n')).toBe(true);
  });

  it.each(['GET', 'HEAD', 'POST', 'TRACE'])('refuses %s * with 400', async (method) => {
    const r = await rawExchange(t.http, `${method} * HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`);
    expect(r.status).toBe(400);
  });

  it('still refuses OPTIONS * with two Host lines', async () => {
    expect((await rawExchange(t.http, 'OPTIONS * HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n')).status).toBe(400);
  });
});
