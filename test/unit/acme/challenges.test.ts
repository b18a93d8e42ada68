import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChallengeAnswers } from '../../../src/acme/challenges.ts';
import { createLogger } from '../../../src/core/log.ts';

const run = promisify(execFile);
const TOKEN = 'tok-A_1';
const KEY_AUTH = `${TOKEN}.thumbprint-of-the-account`;
let server: http.Server;
let port: number;

beforeAll(async () => {
  const log = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
  const answers = createChallengeAnswers(log, ['http-01']);
  answers.create({ type: 'http-01', domain: 'a.test', token: TOKEN, keyAuthorization: KEY_AUTH });
  // What the HTTP service does: the answer first, else the tenant's site (here a page naming what it was asked).
  server = http.createServer((req, res) => {
    if (answers.challenges.answer(req, res)) return;
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end(`site ${req.headers.host} ${req.url}`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

/** curl with `Host`, the path sent as written (no dot-segment folding). */
async function get(host: string, p: string, extra: string[] = []): Promise<{ status: number; body: string }> {
  const { stdout } = await run('curl', ['-s', '--path-as-is', '-H', `Host: ${host}`, '-w', '\n%{http_code}', ...extra, `http://127.0.0.1:${port}${p}`]);
  const nl = stdout.lastIndexOf('\n');
  return { status: Number(stdout.slice(nl + 1)), body: stdout.slice(0, nl) };
}

describe('HTTP-01 answers (RFC 8555 §8.3): the pending token, for its own domain only', () => {
  it('answers the token for its domain, whatever the case, port or final dot of the Host', async () => {
    for (const host of ['a.test', 'A.Test:80', 'a.test.']) expect(await get(host, `/.well-known/acme-challenge/${TOKEN}`)).toEqual({ status: 200, body: KEY_AUTH });
  });

  it.each([
    ['another tenant’s Host', 'b.test', `/.well-known/acme-challenge/${TOKEN}`, []],
    ['a Host that only ends like the domain', 'xa.test', `/.well-known/acme-challenge/${TOKEN}`, []],
    ['a query after the token', 'a.test', `/.well-known/acme-challenge/${TOKEN}?x=1`, []],
    ['dot segments before the token', 'a.test', `/.well-known/acme-challenge/../acme-challenge/${TOKEN}`, []],
    ['the token percent-encoded', 'a.test', `/.well-known/acme-challenge/%74ok-A_1`, []],
    ['another token', 'a.test', '/.well-known/acme-challenge/tok-B', []],
    ['POST', 'a.test', `/.well-known/acme-challenge/${TOKEN}`, ['-X', 'POST']],
  ])('leaves %s to the site (the key authorization is not given)', async (_what, host, p, extra) => {
    const r = await get(host, p, extra);
    expect(r.status).toBe(404);
    expect(r.body).not.toContain(KEY_AUTH);
    expect(r.body).toBe(`site ${host} ${p}`);
  });
});
