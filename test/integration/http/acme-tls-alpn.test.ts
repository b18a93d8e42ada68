import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../../src/lib/listen.ts';
import { havePebble, PEBBLE_MISSING, startPebble, type Pebble } from '../../helpers/pebble.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

/** A TLS handshake with openssl s_client offering `alpn` for `host`: what was negotiated and the certificate presented. */
async function handshake(port: number, host: string, alpn: string, extra: string[] = []): Promise<{ alpn?: string; cert?: X509Certificate; out: string }> {
  const r = await run('sh', ['-c', `openssl s_client -connect 127.0.0.1:${port} -servername ${host} -alpn ${alpn} ${extra.join(' ')} </dev/null 2>&1`]);
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.out)?.[0];
  return { alpn: /ALPN protocol: (\S+)/.exec(r.out)?.[1], cert: pem ? new X509Certificate(pem) : undefined, out: r.out };
}

const status = (dataDir: string) => {
  try {
    return JSON.parse(readFileSync(path.join(dataDir, 'acme', 'status.json'), 'utf8')) as { domains: Record<string, { fingerprint?: string }> };
  } catch {
    return { domains: {} } as { domains: Record<string, { fingerprint?: string }> };
  }
};

describe.skipIf(!havePebble)(`ACME TLS-ALPN-01 against a real Pebble (${havePebble ? 'installed' : PEBBLE_MISSING})`, () => {
  let pebble: Pebble;
  let t: TestSuite;
  let httpsPort: number;
  let rootFile: string;
  let pebbleDir: string;

  beforeAll(async () => {
    httpsPort = await freePort();
    // Pebble's HTTP-01 port has nothing behind it: only TLS-ALPN-01 on our HTTPS listener can succeed.
    const nothing = await freePort();
    pebbleDir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-pebble-alpn-'));
    pebble = await startPebble({ dir: pebbleDir, httpPort: nothing, tlsPort: httpsPort });
    t = await startTestSuite({
      main: {
        http: { tls: { listen: [`127.0.0.1:${httpsPort}`], certs: '../data/certs', selfSigned: true } },
        acme: { directory: pebble.directory, email: 'hostmaster@makewaves.test', ca: pebble.tlsCa, retrySeconds: 1, maxRetrySeconds: 4, challenges: ['tls-alpn-01'] },
      },
      tenants: { 'a.test': { domains: ['a.test'] }, 'b.test': { domains: ['b.test'] } },
      files: { 'a.test/index.html': 'Tenant A\n', 'b.test/index.html': 'Tenant B\n' },
    });
    rootFile = path.join(t.dir, 'pebble-root.pem');
    writeFileSync(rootFile, await pebble.root());
  }, 60_000);

  afterAll(async () => {
    await t?.stop();
    await pebble?.stop();
    if (pebbleDir) rmSync(pebbleDir, { recursive: true, force: true });
  });

  it('issues certificates over TLS-ALPN-01 on the HTTPS listener, which goes on serving h2 and HTTP/1.1', async () => {
    await waitFor(() => ['a.test', 'b.test'].every((d) => status(t.dataDir).domains[d]?.fingerprint), 60_000, 'ACME certificates for a.test and b.test');
    const answered = t.logs().filter((l) => l.msg === 'ACME challenge answered');
    expect(answered.map((l) => `${l.domain} ${l.challenge}`)).toEqual(expect.arrayContaining(['a.test tls-alpn-01', 'b.test tls-alpn-01']));
    expect(answered.some((l) => l.challenge === 'http-01')).toBe(false);
    for (const [host, page] of [['a.test', 'Tenant A'], ['b.test', 'Tenant B']] as const) {
      for (const proto of ['--http2', '--http1.1']) {
        const r = await run('curl', ['-sS', proto, '--max-time', '20', '-o', '-', '-w', '\n%{http_version}', '--cacert', rootFile, '--resolve', `${host}:${httpsPort}:127.0.0.1`, `https://${host}:${httpsPort}/`]);
        expect(r.code, r.out).toBe(0);
        expect(r.out).toContain(page);
        expect(r.out.trim().split('\n').pop()).toBe(proto === '--http2' ? '2' : '1.1');
      }
    }
  }, 90_000);

  it('acme-tls/1 is refused for a name with no challenge pending: no challenge certificate, no HTTP', async () => {
    const h = await handshake(httpsPort, 'a.test', 'acme-tls/1');
    expect(h.alpn).toBeUndefined();
    expect(h.out).toMatch(/no application protocol|alert|handshake failure/i);
    // The same listener still negotiates h2 for the same name, with the issued certificate.
    const ok = await handshake(httpsPort, 'a.test', 'h2');
    expect(ok.alpn).toBe('h2');
    expect(ok.cert?.fingerprint256).toBe(status(t.dataDir).domains['a.test']!.fingerprint);
  }, 30_000);
});
