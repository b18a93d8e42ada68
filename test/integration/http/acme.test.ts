import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/core/log.ts';
import { freePort } from '../../../src/lib/listen.ts';
import { startSuite, type Suite } from '../../../src/main.ts';
import { runCommand } from '../../helpers/cli.ts';
import { havePebble, PEBBLE_MISSING, startPebble, type Pebble } from '../../helpers/pebble.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

const REPO = path.resolve(import.meta.dirname, '../../..');

const run = (cmd: string, args: string[], cwd = REPO) => runCommand(cmd, args, { cwd, timeout: 60_000 });

/** The page at https://<host>:<port>/, verified against `caFile` (curl, as a visitor would). */
const curlHttps = (host: string, port: number, caFile: string) =>
  run('curl', ['-sS', '--max-time', '20', '--cacert', caFile, '--resolve', `${host}:${port}:127.0.0.1`, `https://${host}:${port}/`]);

/** The certificate the HTTPS listener presents for `host` (openssl s_client, verified against `caFile`). */
async function presented(host: string, port: number, caFile: string): Promise<{ verified: boolean; cert: X509Certificate }> {
  const r = await run('sh', ['-c', `openssl s_client -connect 127.0.0.1:${port} -servername ${host} -CAfile ${caFile} -verify_hostname ${host} </dev/null 2>&1`]);
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.out)?.[0];
  if (!pem) throw new Error(`no certificate from s_client:\n${r.out}`);
  return { verified: /Verify return code: 0 \(ok\)/.test(r.out), cert: new X509Certificate(pem) };
}

/** Whether Pebble's directory names renewalInfo (Pebble 2.6 and later). */
async function pebbleHasAri(p: Pebble): Promise<boolean> {
  const r = await run('curl', ['-sS', '--cacert', p.tlsCa, p.directory]);
  return r.out.includes('renewalInfo');
}

const status = (dataDir: string) => JSON.parse(readFileSync(path.join(dataDir, 'acme', 'status.json'), 'utf8')) as { domains: Record<string, { fingerprint?: string; renewFrom?: string; failures: number; lastError?: string; retryAt?: string; renewAt?: string; lastAttempt?: string }> };
const statusOr = (dataDir: string) => {
  try {
    return status(dataDir);
  } catch {
    return { domains: {} } as ReturnType<typeof status>;
  }
};

describe.skipIf(!havePebble)(`ACME against a real Pebble (${havePebble ? 'installed' : PEBBLE_MISSING})`, () => {
  let pebble: Pebble;
  let t: TestSuite;
  let httpPort: number;
  let rootFile: string;
  let httpsPort: number;
  let admin: string;

  beforeAll(async () => {
    // Fixed before Pebble starts: its validation authority connects to this port.
    httpPort = await freePort();
    pebble = await startPebble({ httpPort });
    // bad.test does not point at this host: its HTTP-01 challenge cannot succeed.
    await pebble.pointAt('bad.test', '127.0.0.2');
    t = await startTestSuite({
      main: {
        http: { listen: [`127.0.0.1:${httpPort}`], tls: { listen: ['127.0.0.1:0'], certs: '../data/certs', selfSigned: true } },
        // Port 0: a port picked before Pebble's start could be taken by then (seen in CI: EADDRINUSE).
        admin: { listen: '127.0.0.1:0' },
        acme: { directory: pebble.directory, email: 'hostmaster@makewaves.test', ca: pebble.tlsCa, retrySeconds: 1, maxRetrySeconds: 8 },
      },
      tenants: {
        'a.test': { domains: ['a.test'] },
        'b.test': { domains: ['b.test'] },
        'bad.test': { domains: ['bad.test'] },
        // Suspended, and everything proxied to a backend that is not there: challenges are answered before either.
        'held.test': { domains: ['held.test'], suspended: true, proxy: [{ path: '/', to: 'http://127.0.0.1:9' }] },
      },
      files: { 'a.test/index.html': 'Tenant A\n', 'b.test/index.html': 'Tenant B\n', 'bad.test/index.html': 'Tenant Bad\n' },
    });
    httpsPort = Number(new URL(t.suite.urls.http!.find((u) => u.startsWith('https:'))!).port);
    admin = t.suite.urls.admin![0]!;
    rootFile = await pebble.writeRoot(t.dir);
  }, 60_000);

  afterAll(async () => {
    await t?.stop();
    await pebble?.stop();
  });

  it('issues certificates for two tenants over HTTP-01 and serves them over HTTPS', async () => {
    await waitFor(() => ['a.test', 'b.test', 'held.test'].every((d) => statusOr(t.dataDir).domains[d]?.fingerprint), 60_000, 'ACME certificates for a.test, b.test and held.test');
    expect((await presented('held.test', httpsPort, rootFile)).verified).toBe(true);
    for (const [host, page] of [['a.test', 'Tenant A'], ['b.test', 'Tenant B']] as const) {
      const { verified, cert } = await presented(host, httpsPort, rootFile);
      expect(verified).toBe(true);
      expect(cert.issuer).toMatch(/Pebble/);
      expect(cert.checkHost(host)).toBe(host);
      const r = await curlHttps(host, httpsPort, rootFile);
      expect(r.code, r.out).toBe(0);
      expect(r.out).toContain(page);
    }
    // This Pebble offers no renewalInfo (ARI): the renewal stays at two thirds of the lifetime.
    if (!(await pebbleHasAri(pebble))) expect(statusOr(t.dataDir).domains['a.test']).toMatchObject({ renewFrom: 'lifetime' });
    // Pebble's validation reached the HTTP listener: the challenge answers are in the log.
    expect(t.logs().filter((l) => l.msg === 'ACME challenge answered').map((l) => l.domain)).toEqual(expect.arrayContaining(['a.test', 'b.test']));

    const cli = await run('node', ['bin/makewaves.js', 'certs', '--config', t.configDir]);
    expect(cli.code, cli.out).toBe(0);
    expect(cli.out).toMatch(/^a\.test\s+a\.test\s+acme\s+Pebble/m);
    expect(cli.out).toMatch(/^b\.test\s+b\.test\s+acme\s+Pebble/m);
    expect(cli.out).toMatch(/^bad\.test\s+bad\.test\s+self-signed\s/m);

    const metrics = await (await fetch(`${admin}/metrics`)).text();
    expect(Number(/^makewaves_acme_orders_total\{result="issued"\} (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(2);
    expect(Number(/^makewaves_acme_certificate_expiry_days\{domain="a\.test"\} (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThan(0);
  }, 90_000);

  it('a failed challenge is logged and retried with growing delays; the self-signed certificate keeps serving; others undisturbed', async () => {
    await waitFor(() => (statusOr(t.dataDir).domains['bad.test']?.failures ?? 0) >= 3, 60_000, 'three failed orders for bad.test');
    const failures = t.logs().filter((l) => l.msg === 'ACME order failed; retrying later' && l.domain === 'bad.test');
    expect(failures.length).toBeGreaterThanOrEqual(3);
    // Each retry is planned further out than the one before (1 s, 2 s, 4 s, plus up to a tenth).
    const waits = failures.slice(0, 3).map((l) => Date.parse(l.retryAt as string) - (l.time as number));
    expect(waits[1]!).toBeGreaterThan(waits[0]!);
    expect(waits[2]!).toBeGreaterThan(waits[1]!);
    expect(String(failures[0]!.err)).toMatch(/127\.0\.0\.2|connection refused|invalid|Authorization/i);
    const health = (await (await fetch(`${admin}/healthz`)).json()) as { status: string; problems: Array<{ key: string; message: string }> };
    expect(health.status).toBe('degraded');
    expect(health.problems.find((p) => p.key === 'acme:bad.test')?.message).toMatch(/bad\.test: no ACME certificate .*serving the self-signed certificate/);
    const { cert } = await presented('bad.test', httpsPort, rootFile);
    expect(cert.issuer).toBe(cert.subject);
    expect(statusOr(t.dataDir).domains['a.test']!.failures).toBe(0);
  }, 90_000);

  it('a tenant added while running gets its certificate without a restart', async () => {
    mkdirSync(path.join(t.sitesDir, 'c.test'), { recursive: true });
    writeFileSync(path.join(t.sitesDir, 'c.test', 'index.html'), 'Tenant C\n');
    t.writeTenant('c.test', { domains: ['c.test'] });
    await waitFor(() => statusOr(t.dataDir).domains['c.test']?.fingerprint, 60_000, 'an ACME certificate for c.test');
    await waitFor(async () => (await presented('c.test', httpsPort, rootFile)).verified, 10_000, 'c.test served with its ACME certificate');
    const r = await curlHttps('c.test', httpsPort, rootFile);
    expect(r.out).toContain('Tenant C');
  }, 90_000);

  /** The running suite after a restart (the helper's own one is stopped first). */
  let again: Suite | undefined;
  const lines: string[] = [];

  /** Stops the suite, lets `due` domains' renewals fall due (in the status file), starts it again over the same folders. */
  async function restartWithDue(due: string[]): Promise<{ port: number; adminUrl: string }> {
    await (again ?? t.suite).stop(500);
    const s = status(t.dataDir);
    for (const d of due) s.domains[d]!.renewAt = new Date(Date.now() - 60_000).toISOString();
    writeFileSync(path.join(t.dataDir, 'acme', 'status.json'), JSON.stringify(s));
    lines.length = 0;
    const destination = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(...chunk.toString().split('\n').filter(Boolean));
        cb();
      },
    });
    again = await startSuite({ configDir: t.configDir, log: createLogger({ level: 'info', destination }), watch: false });
    return { port: Number(new URL(again.urls.http!.find((u) => u.startsWith('https:'))!).port), adminUrl: again.urls.admin![0]! };
  }

  afterAll(async () => {
    await again?.stop(500);
  });

  it('a renewal that falls due replaces the certificate with a new one, served at once', async () => {
    const before = status(t.dataDir).domains['b.test']!.fingerprint;
    const { port } = await restartWithDue(['b.test']);
    await waitFor(() => statusOr(t.dataDir).domains['b.test']?.fingerprint !== before, 60_000, 'the renewed certificate of b.test');
    const after = status(t.dataDir).domains['b.test']!;
    expect(Date.parse(after.renewAt!)).toBeGreaterThan(Date.now());
    const now = await presented('b.test', port, rootFile);
    expect(now.verified).toBe(true);
    expect(now.cert.fingerprint256).toBe(after.fingerprint);
    expect(lines.some((l) => l.includes('ACME renewal started') && l.includes('"b.test"'))).toBe(true);
  }, 90_000);

  it('a CA that is down when a renewal is due: the old certificate keeps serving and /healthz says so', async () => {
    await pebble.stopCa();
    const before = status(t.dataDir).domains['a.test']!.fingerprint;
    const { port, adminUrl } = await restartWithDue(['a.test']);
    await waitFor(() => lines.some((l) => l.includes('ACME order failed') && l.includes('"a.test"')), 60_000, 'the failed renewal of a.test');
    const health = (await (await fetch(`${adminUrl}/healthz`)).json()) as { status: string; problems: Array<{ key: string; message: string }> };
    expect(health.status).toBe('degraded');
    expect(health.problems.find((p) => p.key === 'acme:a.test')?.message).toMatch(/a\.test: no ACME certificate .*serving the acme certificate a\.test\.crt/);
    const now = await presented('a.test', port, rootFile);
    expect(now.verified).toBe(true);
    expect(now.cert.fingerprint256).toBe(before);
    const r = await curlHttps('a.test', port, rootFile);
    expect(r.out).toContain('Tenant A');
  }, 90_000);
});
