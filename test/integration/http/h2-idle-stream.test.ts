import { once } from 'node:events';
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardedH2Server } from '../../helpers/h2.ts';
import { tempDirs } from '../../helpers/tmp.ts';

// An HTTP/2 session idle past its limit is told to go away (GOAWAY), and streams under way finish on their own: a
// request whose answer is slow in coming (a proxied upstream may stay silent up to http.proxyTimeout, an hour) sends
// no frame meanwhile. Its connection must not be ended after the grace that is meant for connections left with none.

const IDLE_MS = 300;
const GRACE_MS = 200;
const tmp = tempDirs('makewaves-h2idle-');
let server: http2.Http2SecureServer;
let port: number;
/** Resolves the answer of the request under way. */
let answer: (() => void) | undefined;

beforeAll(async () => {
  ({ server, port } = await guardedH2Server(tmp(), IDLE_MS, GRACE_MS, (srv) =>
    srv.on('request', (_req, res) => {
      answer = () => res.end('late but whole');
    }),
  ));
});
afterAll(() => {
  server?.close();
});

describe('an idle HTTP/2 session with a stream under way', () => {
  it('is told to go away, and the stream still gets its whole answer', async () => {
    const client = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
    client.on('error', () => {
      // The stream's own error says what failed; the session's is the same.
    });
    const req = client.request({ ':path': '/' });
    req.setEncoding('utf8');
    let body = '';
    req.on('data', (chunk: string) => (body += chunk));
    const done = new Promise<string>((resolve, reject) => {
      req.on('end', () => resolve(body));
      req.on('error', reject);
      req.on('close', () => (req.rstCode ? reject(new Error(`stream closed, code ${req.rstCode}`)) : undefined));
    });
    await once(client, 'goaway');
    // The answer comes well after the grace for a connection left without streams (the scenario, not an assertion).
    setTimeout(() => answer!(), GRACE_MS * 5);
    await expect(done).resolves.toBe('late but whole');
    client.close();
  }, 20_000);
});
