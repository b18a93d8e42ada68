import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../../helpers/http.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite;

beforeAll(async () => {
  t = await startTestSuite({
    main: { http: { headersTimeout: 1 } },
    tenants: { 'a.test': { domains: ['a.test'] } },
    files: { 'a.test/index.html': 'A home', 'a.test/big.bin': Buffer.alloc(4 * 1024 * 1024, 0x61) },
  });
});
afterAll(async () => t?.stop());

const defaultLog = () => {
  try {
    return readFileSync(path.join(t.dataDir, 'logs', '_default', 'access.log'), 'utf8');
  } catch {
    return '';
  }
};
/** Requests answered for unknown hosts so far, by status class, as /metrics shows them. */
async function defaultCount(cls: string): Promise<number> {
  const text = await t.suite.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`makewaves_http_requests_total{tenant="_default",class="${cls}"}`));
  return line ? Number(line.split(' ')[1]) : 0;
}

/** Every answer the suite gives reaches the `_default` access log and the metrics, even when no request was ever parsed. */
describe('answers given before (or instead of) a request', () => {
  const CASES: Array<[string, string | Buffer, number, RegExp]> = [
    ['a malformed request line', 'GET / HTTP/1.1 extra\r\nHost: a.test\r\n\r\n', 400, / "-" 400 \d+ "-" "-"$/m],
    ['a header name with a space', 'GET /space HTTP/1.1\r\nHost: a.test\r\nBad Header: x\r\n\r\n', 400, /"GET \/space HTTP\/1\.1" 400 \d+ "-" "-"$/m],
    ['a 20 KB header', `GET /big HTTP/1.1\r\nHost: a.test\r\nX-Big: ${'x'.repeat(20_000)}\r\n\r\n`, 431, /"GET \/big HTTP\/1\.1" 431 \d+ "-" "-"$/m],
    ['Content-Length and Transfer-Encoding together', 'POST /smuggle HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400, /"POST \/smuggle HTTP\/1\.1" 400 /m],
    ['a NUL in the target', Buffer.from('GET /nul\0x HTTP/1.1\r\nHost: a.test\r\n\r\n', 'latin1'), 400, / "-" 400 /m],
    ['CONNECT (not a proxy)', 'CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n', 501, /"CONNECT a\.test:443 HTTP\/1\.1" 501 /m],
    ['HTTP/2.0 in an HTTP/1.1 request line', 'GET /v2 HTTP/2.0\r\nHost: a.test\r\n\r\n', 505, /"GET \/v2 HTTP\/2\.0" 505 /m],
    ['CONNECT as HTTP/2.0 in an HTTP/1.1 request line', 'CONNECT a.test:443 HTTP/2.0\r\nHost: a.test:443\r\n\r\n', 505, /"CONNECT a\.test:443 HTTP\/2\.0" 505 /m],
    ['an h2c offer to an unknown host', 'GET /h2c HTTP/1.1\r\nHost: nobody.test\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMA\r\n\r\n', 404, /"GET \/h2c HTTP\/1\.1" 404 /m],
  ];
  it.each(CASES)('%s: answered, logged under _default, counted', async (_what, request, status, line) => {
    const cls = `${String(status)[0]}xx`;
    const before = await defaultCount(cls);
    const logBefore = defaultLog().length;
    const r = await rawExchange(t.http, request);
    expect(r.status).toBe(status);
    expect(r.header('content-length')).toBeDefined();
    const logged = await waitFor(() => defaultLog().slice(logBefore) || undefined, 5_000, 'the access log line');
    expect(logged).toMatch(line);
    expect(logged.split('\n').filter(Boolean)).toHaveLength(1);
    expect(await defaultCount(cls)).toBe(before + 1);
  });

  it('logs a request that never finished its headers as 408', async () => {
    const before = await defaultCount('4xx');
    const logBefore = defaultLog().length;
    const r = await rawExchange(t.http, 'GET /slow HTTP/1.1\r\nHost: a.test\r\n');
    expect(r.status).toBe(408);
    const logged = await waitFor(() => defaultLog().slice(logBefore) || undefined, 5_000, 'the access log line');
    expect(logged).toMatch(/ "-" 408 /); // the parser hands over no bytes with a timeout
    expect(await defaultCount('4xx')).toBe(before + 1);
  });

  it('never writes a refusal into the body of a response under way', async () => {
    const r = await rawExchange(t.http, 'GET /big.bin HTTP/1.1\r\nHost: a.test\r\n\r\nGET / HTTP/1.1 extra\r\n\r\n');
    expect(r.status).toBe(200);
    const body = r.raw.slice(r.raw.indexOf('\r\n\r\n') + 4);
    // The whole file first, then the refusal of the pipelined request after it.
    expect(body.slice(0, 4 * 1024 * 1024)).toBe('a'.repeat(4 * 1024 * 1024));
    expect(body.slice(4 * 1024 * 1024)).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[^]*<title>400 Bad Request<\/title>[^]*<\/html>\n$/);
  });

  it('keeps serving after a request line that claims HTTP/2.0 (plain and as an Upgrade offer)', async () => {
    const cases: Array<[string, number]> = [
      ['GET / HTTP/2.0\r\nHost: a.test\r\n\r\n', 505],
      ['CONNECT a.test:443 HTTP/2.0\r\nHost: a.test:443\r\n\r\n', 505],
      ['GET / HTTP/2.0\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n', 505],
      // Versions node's parser does not know at all it refuses itself (400); 2.0 it reads, and the suite answers 505.
      ['GET / HTTP/3.0\r\nHost: a.test\r\n\r\n', 400],
      ['GET / HTTP/9.9\r\nHost: a.test\r\n\r\n', 400],
      ['POST / HTTP/2.0\r\nHost: a.test\r\nContent-Length: 2\r\n\r\nab', 505],
    ];
    for (const [request, status] of cases) {
      expect([request, (await rawExchange(t.http, request)).status]).toEqual([request, status]);
    }
    const r = await rawExchange(t.http, 'GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n');
    expect(r.status).toBe(200);
    expect(t.logs().some((l) => l.msg === 'request refused' && l.remote === '127.0.0.1' && /HTTP\/2\.0/.test(String(l.why)))).toBe(true);
  });

  it('says in the service log who was refused and why', async () => {
    await rawExchange(t.http, 'GET / HTTP/1.1 extra\r\n\r\n');
    expect(t.logs().some((l) => l.msg === 'request refused by the HTTP parser' && l.remote === '127.0.0.1' && l.status === 400 && typeof l.why === 'string')).toBe(true);
  });

});
