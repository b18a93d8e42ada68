import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest } from '../../helpers/http.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

/** An ACME "CA" that answers every request with a 500 and a page that is not JSON. */
let dir: string;
let ca: https.Server;
let caFile: string;
let keyFile: string;
let directory: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-badca-'));
  caFile = path.join(dir, 'ca.crt');
  const key = (keyFile = path.join(dir, 'ca.key'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', caFile, '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  ca = https.createServer({ cert: readFileSync(caFile), key: readFileSync(key) }, (_req, res) => {
    res.writeHead(500, { 'Content-Type': 'text/html' });
    res.end('<html>oops</html>');
  });
  await new Promise<void>((resolve) => ca.listen(0, '127.0.0.1', resolve));
  directory = `https://127.0.0.1:${(ca.address() as AddressInfo).port}/directory`;
});
afterAll(async () => {
  await new Promise((resolve) => ca.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

const suiteWith = (extra: Partial<Parameters<typeof startTestSuite>[0]> = {}) =>
  startTestSuite({
    main: {
      http: { tls: { listen: ['127.0.0.1:0'], certs: '../data/certs', selfSigned: true } },
      admin: { listen: '127.0.0.1:0' },
      acme: { directory, email: 'hostmaster@makewaves.test', ca: caFile, retrySeconds: 1, maxRetrySeconds: 2 },
    },
    tenants: { 'x.test': { domains: ['x.test'] } },
    files: { 'x.test/index.html': 'X\n' },
    ...extra,
  });

async function healthOf(t: TestSuite): Promise<{ status: string; problems: Array<{ key: string; message: string }> }> {
  return (await (await fetch(`${t.suite.urls.admin![0]}/healthz`)).json()) as never;
}

describe('ACME bad input', () => {
  it('a CA that answers 500s with garbage: the order fails, is logged and in /healthz, and the self-signed certificate keeps serving', async () => {
    const t = await suiteWith();
    try {
      await waitFor(() => t.logs().find((l) => l.msg === 'ACME order failed; retrying later' && l.domain === 'x.test'), 60_000, 'the failed order');
      const h = await healthOf(t);
      expect(h.status).toBe('degraded');
      expect(h.problems.find((p) => p.key === 'acme:x.test')?.message).toMatch(/x\.test: no ACME certificate \(.+\); serving the self-signed certificate x\.test\.crt; next try at/);
      const page = await rawRequest(t.http, '/', { host: 'x.test' });
      expect(page.body.toString()).toBe('X\n');
    } finally {
      await t.stop();
    }
  }, 90_000);

  it('a corrupt account key: ACME is disabled with a clear error naming the file, and the key is left as it was', async () => {
    // The suite's data folder is made at start; the corrupt key is put where a previous run kept it.
    const t = await suiteWith({ tenants: { 'x.test': { domains: ['x.test'] } } });
    const keyFile = path.join(t.dataDir, 'acme', 'account.key');
    await t.suite.stop(500);
    mkdirSync(path.dirname(keyFile), { recursive: true });
    writeFileSync(keyFile, 'garbage\n', { mode: 0o600 });
    const { startSuite } = await import('../../../src/main.ts');
    const { createLogger } = await import('../../../src/core/log.ts');
    const { Writable } = await import('node:stream');
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const again = await startSuite({ configDir: t.configDir, log: createLogger({ level: 'info', destination }), watch: false });
    try {
      const h = (await (await fetch(`${again.urls.admin![0]}/healthz`)).json()) as { problems: Array<{ key: string; message: string }> };
      expect(h.problems.find((p) => p.key === 'acme')?.message).toContain(`ACME disabled: ${keyFile}: not a readable private key`);
      expect(lines.join('')).toContain('ACME disabled: no certificates are ordered or renewed');
      expect(readFileSync(keyFile, 'utf8')).toBe('garbage\n');
    } finally {
      await again.stop(500);
      await t.stop();
    }
  }, 90_000);
});

/**
 * A stand-in for a third-party ACME CA on loopback: a real HTTPS server that
 * speaks just enough RFC 8555 (directory, nonces, accounts) for a client to
 * reach newOrder, where `order` decides the answer. Every request it gets is
 * recorded with its arrival time.
 */
async function fakeCa(order: (n: number) => { status: number; headers?: Record<string, string>; body: string }) {
  const requests: Array<{ at: number; method: string; path: string }> = [];
  let orders = 0;
  const server = https.createServer({ cert: readFileSync(caFile), key: readFileSync(keyFile) }, (req, res) => {
    requests.push({ at: Date.now(), method: req.method ?? '', path: req.url ?? '' });
    req.resume();
    req.on('end', () => {
      const base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const nonce = { 'Replay-Nonce': randomBytes(12).toString('base64url') };
      const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'Content-Type': 'application/json', ...nonce, ...headers });
        res.end(JSON.stringify(body));
      };
      if (req.url === '/directory') return json(200, { newNonce: `${base}/nonce`, newAccount: `${base}/account`, newOrder: `${base}/order`, revokeCert: `${base}/revoke`, keyChange: `${base}/key` });
      if (req.url === '/nonce') {
        res.writeHead(200, { ...nonce, 'Cache-Control': 'no-store' });
        return res.end();
      }
      if (req.url === '/account') return json(201, { status: 'valid' }, { Location: `${base}/acct/1` });
      if (req.url === '/order') {
        const a = order(++orders);
        res.writeHead(a.status, { ...nonce, ...(a.headers ?? {}) });
        return res.end(a.body);
      }
      json(404, { type: 'urn:ietf:params:acme:error:malformed', detail: 'no such resource' });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    directory: `https://127.0.0.1:${(server.address() as AddressInfo).port}/directory`,
    requests,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

const rateLimited = (retryAfter?: string) => ({
  status: 429,
  headers: { 'Content-Type': 'application/problem+json', ...(retryAfter ? { 'Retry-After': retryAfter } : {}) },
  body: JSON.stringify({ type: 'urn:ietf:params:acme:error:rateLimited', detail: 'too many new orders recently' }),
});

describe('ACME rate limits and a CA in trouble (a stand-in CA on loopback)', () => {
  it('rateLimited with Retry-After: nothing is sent to the CA before it, for any domain; the refused domain waits at least that long', async () => {
    const ca = await fakeCa(() => rateLimited('4'));
    const t = await startTestSuite({
      main: {
        http: { tls: { listen: ['127.0.0.1:0'], certs: '../data/certs', selfSigned: true } },
        admin: { listen: '127.0.0.1:0' },
        // One order at a time: without the hold, y.test's and z.test's orders would follow x.test's refusal at once.
        acme: { directory: ca.directory, email: 'hostmaster@makewaves.test', ca: caFile, retrySeconds: 1, maxRetrySeconds: 2, rateLimitFloorSeconds: 2, concurrency: 1 },
      },
      tenants: { 'x.test': { domains: ['x.test'] }, 'y.test': { domains: ['y.test'] }, 'z.test': { domains: ['z.test'] } },
    });
    try {
      const ordersAt = () => ca.requests.filter((r) => r.path === '/order').map((r) => r.at);
      await waitFor(() => ordersAt().length >= 2, 60_000, 'a second order, after the first hold');
      const held = t.logs().filter((l) => l.msg === 'ACME CA held: no request to it until then');
      expect(held.length).toBeGreaterThanOrEqual(1);
      expect(held[0]!.kind).toBe('rateLimited');
      expect(String(held[0]!.err)).toMatch(/rate limited by the CA \(too many new orders recently\).*Retry-After 4 s/);
      // Between the first refusal and the end of the hold it set, the CA got nothing at all (x.test's and y.test's orders alike).
      const first = ordersAt()[0]!;
      const heldUntil = Date.parse(held[0]!.heldUntil as string);
      expect(heldUntil - first).toBeGreaterThanOrEqual(4_000);
      const during = ca.requests.filter((r) => r.at > first && r.at < heldUntil);
      expect(during).toEqual([]);
      // The refused domain's own next try is no sooner than Retry-After (4 s; more than the 2 s floor and the 1 s backoff).
      const failedLines = t.logs().filter((l) => l.msg === 'ACME order failed; retrying later');
      // The log line is stamped a moment after retryAt was set from the same clock: up to 50 ms of that moment is allowed.
      for (const l of failedLines.filter((f) => /rate limited/.test(String(f.err)))) expect(Date.parse(l.retryAt as string) - (l.time as number)).toBeGreaterThanOrEqual(4_000 - 50);
      const h = (await (await fetch(`${t.suite.urls.admin![0]}/healthz`)).json()) as { problems: Array<{ key: string; message: string }> };
      expect(h.problems.find((p) => p.key === 'acme:ca')?.message).toMatch(/ACME CA: rate limited by the CA .* nothing is sent to it before/);
      const metrics = await (await fetch(`${t.suite.urls.admin![0]}/metrics`)).text();
      expect(Number(/^makewaves_acme_orders_total\{result="failed"\} (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);
      expect(Number(/^makewaves_acme_ca_trouble_total\{kind="rateLimited"\} (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);
    } finally {
      await t.stop();
      await ca.close();
    }
  }, 90_000);

  it('rateLimited without Retry-After: the floor (rateLimitFloorSeconds) is waited', async () => {
    const ca = await fakeCa(() => rateLimited());
    const t = await startTestSuite({
      main: {
        http: { tls: { listen: ['127.0.0.1:0'], certs: '../data/certs', selfSigned: true } },
        acme: { directory: ca.directory, email: 'hostmaster@makewaves.test', ca: caFile, retrySeconds: 1, maxRetrySeconds: 1, rateLimitFloorSeconds: 3 },
      },
      tenants: { 'x.test': { domains: ['x.test'] } },
    });
    try {
      const ordersAt = () => ca.requests.filter((r) => r.path === '/order').map((r) => r.at);
      await waitFor(() => ordersAt().length >= 2, 60_000, 'a second order');
      expect(ordersAt()[1]! - ordersAt()[0]!).toBeGreaterThanOrEqual(3_000);
    } finally {
      await t.stop();
      await ca.close();
    }
  }, 90_000);

  it('a CA answering 500s: every request to it waits out a doubling backoff, for all domains at once', async () => {
    const ca = await fakeCa(() => ({ status: 500, headers: { 'Content-Type': 'text/html' }, body: '<html>oops</html>' }));
    const t = await startTestSuite({
      main: {
        http: { tls: { listen: ['127.0.0.1:0'], certs: '../data/certs', selfSigned: true } },
        acme: { directory: ca.directory, email: 'hostmaster@makewaves.test', ca: caFile, retrySeconds: 1, maxRetrySeconds: 2, concurrency: 1 },
      },
      tenants: { 'x.test': { domains: ['x.test'] }, 'y.test': { domains: ['y.test'] }, 'z.test': { domains: ['z.test'] } },
    });
    try {
      await waitFor(() => t.logs().filter((l) => l.msg === 'ACME CA held: no request to it until then').length >= 3, 60_000, 'three holds');
      const held = t.logs().filter((l) => l.msg === 'ACME CA held: no request to it until then');
      expect(held.every((l) => l.kind === 'unavailable')).toBe(true);
      expect(held.map((l) => l.failures)).toEqual(expect.arrayContaining([1, 2, 3]));
      // Each hold reaches further than the one before (1 s, 2 s, 2 s: the backoff doubles up to maxRetrySeconds).
      const until = held.map((l) => Date.parse(l.heldUntil as string) - (l.time as number));
      expect(until[1]!).toBeGreaterThan(until[0]! * 1.5);
      expect(String(held[0]!.err)).toMatch(/the CA answered HTTP 500/);
      // Nothing reached the CA while a hold was on (the request that caused a hold came before its log line).
      for (const l of held) {
        const during = ca.requests.filter((r) => r.at > (l.time as number) && r.at < Date.parse(l.heldUntil as string));
        expect(during, `requests during the hold until ${l.heldUntil}`).toEqual([]);
      }
    } finally {
      await t.stop();
      await ca.close();
    }
  }, 90_000);
});
