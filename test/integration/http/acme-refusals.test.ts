import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
let directory: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-badca-'));
  caFile = path.join(dir, 'ca.crt');
  const key = path.join(dir, 'ca.key');
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
