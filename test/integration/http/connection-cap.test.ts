import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { OVER_CAP_WAITING, RETRY_AFTER_S } from '../../../src/http/admission.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';

const execFileP = promisify(execFile);
const CAP = 3;
let t: TestSuite;
let plain: URL;
let mapped: URL;
let https: URL;
const held: net.Socket[] = [];

beforeAll(async () => {
  t = await startTestSuite({
    // [::ffff:127.0.0.1]: an IPv6 socket that sees this client as ::ffff:127.0.0.1, as a dual-stack [::] listener does.
    main: { http: { listen: ['127.0.0.1:0', '[::ffff:127.0.0.1]:0'], maxConnectionsPerIp: CAP, tls: { listen: ['127.0.0.1:0'], certs: '../certs', selfSigned: true } } },
    tenants: { 'a.test': { domains: ['a.test'] } },
    files: { 'a.test/index.html': 'home' },
  });
  plain = new URL(t.http);
  mapped = new URL(t.suite.urls.http!.find((u) => u.includes('[::ffff:'))!);
  https = new URL(t.suite.urls.http!.find((u) => u.startsWith('https:'))!);
});
afterEach(async () => {
  await Promise.all(held.splice(0).map(closed));
});
afterAll(async () => {
  await t?.stop();
});

/** Ends `s` and resolves once the server has closed its side too. */
function closed(s: net.Socket): Promise<void> {
  if (s.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    s.once('close', () => resolve());
    s.end();
  });
}

/** A keep-alive connection from 127.0.0.1 that has been answered once (so the server has counted it), held open; `via` the mapped listener, it is seen as ::ffff:127.0.0.1. */
async function hold(via = plain): Promise<net.Socket> {
  const s = net.connect(Number(via.port), via === plain ? '127.0.0.1' : '::ffff:127.0.0.1');
  s.on('error', () => undefined);
  s.setEncoding('latin1');
  let got = '';
  await new Promise<void>((resolve, reject) => {
    s.on('data', (d: string) => {
      got += d;
      if (got.endsWith('home')) resolve();
    });
    s.once('close', () => reject(new Error(`closed before the answer: ${got}`)));
    s.write('GET / HTTP/1.1\r\nHost: a.test\r\n\r\n');
  });
  expect(got).toMatch(/^HTTP\/1\.1 200 /);
  held.push(s);
  return s;
}

/** curl's status line, headers and body (`-i`), with any extra arguments. */
async function curl(url: string, extra: string[] = []): Promise<{ status: number; head: string; body: string }> {
  const { stdout } = await execFileP('curl', ['-sSik', '--max-time', '10', ...extra, url], { encoding: 'latin1' });
  const end = stdout.indexOf('\r\n\r\n');
  return { status: Number(/^HTTP\/[\d.]+ (\d{3})/.exec(stdout)![1]), head: stdout.slice(0, end), body: stdout.slice(end + 4) };
}

/** A raw exchange on a fresh connection: what came back before the server closed it. */
function exchange(request: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(Number(plain.port), '127.0.0.1', () => s.write(request));
    let got = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (got += d));
    s.on('error', () => undefined);
    s.once('close', () => resolve(got));
  });
}

/** One request on an open keep-alive connection: its answer's status line. */
function ask(s: net.Socket | tls.TLSSocket): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const onData = (d: Buffer) => {
      got += d.toString('latin1');
      if (/\r\n\r\n/.test(got)) done();
    };
    const done = () => {
      s.off('data', onData);
      s.off('close', done);
      resolve(got.split('\r\n')[0]!);
    };
    s.on('data', onData);
    s.once('close', done);
    s.write('GET / HTTP/1.1\r\nHost: a.test\r\n\r\n');
  });
}

async function refusedCount(): Promise<number> {
  const m = await t.suite.metrics.httpRefused.get();
  return m.values.find((v) => v.labels.reason === 'too-many-connections')?.value ?? 0;
}

describe('per-client HTTP connection cap (http.maxConnectionsPerIp)', () => {
  it('answers the connection over the cap 503 with Retry-After and Connection: close; closing one frees a slot', async () => {
    const before = await refusedCount();
    // One of them through the listener that sees it as ::ffff:127.0.0.1: the same client, the same count.
    const open = [await hold(mapped), await hold(), await hold()];
    const over = await curl(`http://127.0.0.1:${plain.port}/`, ['-H', 'Host: a.test']);
    expect(over.status).toBe(503);
    expect(over.head).toMatch(new RegExp(`^Retry-After: ${RETRY_AFTER_S}$`, 'mi'));
    expect(over.head).toMatch(/^Connection: close$/im);
    expect(over.body).toContain('Too many connections from your address');
    expect(await refusedCount()).toBe(before + 1);
    // The held ones are still served on their keep-alive connections.
    // One closes (the server has closed its side when 'close' comes): the next connection is served.
    await closed(open[0]!);
    const next = await curl(`http://127.0.0.1:${plain.port}/`, ['-H', 'Host: a.test']);
    expect(next.status).toBe(200);
    expect(next.body).toBe('home');
  });

  it('counts the HTTPS listener with the plain one: HTTP/1.1 over TLS gets 503 and is closed, HTTP/2 gets :status 503 and a GOAWAY', async () => {
    for (let i = 0; i < CAP; i++) await hold();
    const h1 = await curl(`https://a.test:${https.port}/`, ['--http1.1', '--resolve', `a.test:${https.port}:127.0.0.1`]);
    expect(h1.status).toBe(503);
    expect(h1.head).toMatch(/^Connection: close$/im);
    expect(h1.head).toMatch(/^Retry-After: \d+$/im);
    const h2 = await curl(`https://a.test:${https.port}/`, ['--http2', '--resolve', `a.test:${https.port}:127.0.0.1`]);
    expect(h2.head).toMatch(/^HTTP\/2 503/);
    expect(h2.head).toMatch(/^retry-after: \d+$/im);
    // The session is told to go away (GOAWAY) and closed after that answer.
    const session = http2.connect(`https://127.0.0.1:${https.port}`, { servername: 'a.test', rejectUnauthorized: false });
    session.on('error', () => undefined);
    const away = new Promise<void>((resolve) => session.once('goaway', () => resolve()));
    const gone = new Promise<void>((resolve) => session.once('close', () => resolve()));
    const status = await new Promise<number>((resolve, reject) => {
      const req = session.request({ ':path': '/', ':authority': 'a.test' });
      req.on('response', (h) => resolve(Number(h[':status'])));
      req.on('error', reject);
      req.resume();
      req.end();
    });
    expect(status).toBe(503);
    await away;
    await gone;
  });

  it('refuses a WebSocket handshake over the cap the same way', async () => {
    for (let i = 0; i < CAP; i++) await hold();
    const got = await exchange('GET / HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    expect(got).toMatch(/^HTTP\/1\.1 503 /);
    expect(got).toMatch(/\r\nRetry-After: \d+\r\n/);
  });

  it(`closes at once, unanswered, a connection over the cap past the ${OVER_CAP_WAITING} already waiting for their first request`, async () => {
    for (let i = 0; i < CAP; i++) await hold();
    const waiting: net.Socket[] = [];
    for (let i = 0; i < OVER_CAP_WAITING; i++) {
      const s = net.connect(Number(plain.port), '127.0.0.1');
      s.on('error', () => undefined);
      await new Promise((r) => s.once('connect', r));
      waiting.push(s);
      held.push(s);
    }
    // Still waiting: answered 503 when its request comes.
    expect(await exchange('GET / HTTP/1.1\r\nHost: a.test\r\n\r\n')).toBe('');
    const first = waiting[0]!;
    const answer = new Promise<string>((resolve) => {
      let got = '';
      first.setEncoding('latin1');
      first.on('data', (d: string) => (got += d));
      first.once('close', () => resolve(got));
    });
    first.write('GET / HTTP/1.1\r\nHost: a.test\r\n\r\n');
    expect(await answer).toMatch(/^HTTP\/1\.1 503 /);
  });

  it('logs who and why at most once per client and minute, and counts every refusal', async () => {
    const lines = t.logs().filter((l) => l.svc === 'http' && l.why === 'per-client connection limit');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ remote: '127.0.0.1', clientKey: '127.0.0.1', limit: CAP, open: CAP, level: 30 });
    // The 503s of the tests above (plain, TLS HTTP/1.1, HTTP/2 twice, WebSocket, the waiting one) and the one closed unanswered.
    expect(await refusedCount()).toBe(7);
  });

  it('tells a connection over the cap from one with the same client address and port on another listener', async () => {
    // Two connections may share the client's address and port when they go to different listeners (another 4-tuple):
    // over-cap connections were known by the client's address and port alone, so one over the cap on the plain listener
    // had the other's requests refused, and its close let an over-cap one of the same port be served uncounted.
    for (let i = 0; i < CAP - 1; i++) await hold();
    // Bound by address first: a bound socket's port may be bound again (SO_REUSEADDR) by the second connection.
    const raw = net.connect({ host: '127.0.0.1', port: Number(https.port), localAddress: '127.0.0.1' });
    raw.on('error', () => undefined);
    const tlsSide = tls.connect({ socket: raw, servername: 'a.test', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
    tlsSide.on('error', () => undefined);
    await new Promise((r) => tlsSide.once('secureConnect', r));
    held.push(tlsSide as unknown as net.Socket);
    expect(await ask(tlsSide)).toMatch(/^HTTP\/1\.1 200 /); // the last slot
    const over = net.connect({ host: '127.0.0.1', port: Number(plain.port), localAddress: '127.0.0.1', localPort: tlsSide.localPort });
    over.on('error', () => undefined);
    await new Promise((r) => over.once('connect', r));
    held.push(over);
    // Accepted after `over`: once it is answered, the server has taken `over` in.
    expect(await exchange('GET / HTTP/1.1\r\nHost: a.test\r\n\r\n')).toMatch(/^HTTP\/1\.1 503 /);
    expect(await ask(tlsSide)).toMatch(/^HTTP\/1\.1 200 /);
    expect(await ask(over)).toMatch(/^HTTP\/1\.1 503 /);
  });

  it('takes a new cap at a reload, without a restart (0: no cap)', async () => {
    const file = path.join(t.configDir, 'makewaves.yaml');
    const main = parse(readFileSync(file, 'utf8')) as { http: Record<string, unknown> };
    main.http.maxConnectionsPerIp = 0;
    writeFileSync(file, stringify(main));
    expect(t.suite.reload()).toBe(true);
    for (let i = 0; i < CAP + 2; i++) await hold();
    expect((await curl(`http://127.0.0.1:${plain.port}/`, ['-H', 'Host: a.test'])).status).toBe(200);
    main.http.maxConnectionsPerIp = CAP + 3;
    writeFileSync(file, stringify(main));
    expect(t.suite.reload()).toBe(true);
    expect((await curl(`http://127.0.0.1:${plain.port}/`, ['-H', 'Host: a.test'])).status).toBe(200);
    await hold();
    expect((await curl(`http://127.0.0.1:${plain.port}/`, ['-H', 'Host: a.test'])).status).toBe(503);
  });
});
