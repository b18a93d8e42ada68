import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite;
let https: URL;

beforeAll(async () => {
  t = await startTestSuite({
    // headersTimeout bounds the TLS handshake too: 1 s here, so the test waits that long, not Node's 120 s.
    main: { http: { listen: ['127.0.0.1:0'], headersTimeout: 1, tls: { listen: ['127.0.0.1:0'], certs: '../certs', selfSigned: true } } },
    tenants: { 'a.test': { domains: ['a.test'] } },
    files: { 'a.test/index.html': 'home' },
  });
  https = new URL(t.suite.urls.http!.find((u) => u.startsWith('https:'))!);
});
afterAll(async () => {
  await t?.stop();
});

/** A TCP connection to the HTTPS listener that sends `bytes` and then nothing: resolves with what came back once the server closes it. */
function stalled(bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve) => {
    const s = net.connect(Number(https.port), '127.0.0.1', () => s.write(bytes));
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.on('error', () => undefined);
    s.once('close', () => resolve(Buffer.concat(got)));
  });
}

describe('a TLS handshake that never finishes', () => {
  // Its timeout came to the HTTP error path, which wrote a 400 into the unfinished TLS session: never sent, the
  // connection was held open for good (a slot of the client's connection cap and a descriptor each, without end).
  it('is closed at headersTimeout, unanswered, and logged as such (no 400 in the access log)', async () => {
    const [bare, partial] = await Promise.all([stalled(Buffer.alloc(0)), stalled(Buffer.from('16030102000100', 'hex'))]);
    expect(bare.length).toBe(0);
    expect(partial.length).toBe(0);
    const lines = t.logs().filter((l) => l.svc === 'http' && l.remote === '127.0.0.1');
    expect(lines.filter((l) => l.msg === 'TLS handshake not finished in time; connection closed')).toHaveLength(2);
    expect(lines.filter((l) => l.why === 'ERR_TLS_HANDSHAKE_TIMEOUT' && l.status === 400)).toHaveLength(0);
  });
});
