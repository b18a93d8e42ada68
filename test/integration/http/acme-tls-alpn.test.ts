import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../../src/lib/listen.ts';
import { runCommand } from '../../helpers/cli.ts';
import { havePebble, PEBBLE_MISSING, startPebble, type Pebble } from '../../helpers/pebble.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

const run = (cmd: string, args: string[]) => runCommand(cmd, args, { timeout: 30_000 });

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

  beforeAll(async () => {
    httpsPort = await freePort();
    // Pebble's HTTP-01 port has nothing behind it: only TLS-ALPN-01 on our HTTPS listener can succeed.
    const nothing = await freePort();
    pebble = await startPebble({ httpPort: nothing, tlsPort: httpsPort });
    t = await startTestSuite({
      main: {
        http: { tls: { listen: [`127.0.0.1:${httpsPort}`], certs: '../data/certs', selfSigned: true } },
        acme: { directory: pebble.directory, email: 'hostmaster@makewaves.test', ca: pebble.tlsCa, retrySeconds: 1, maxRetrySeconds: 4, challenges: ['tls-alpn-01'] },
      },
      tenants: { 'a.test': { domains: ['a.test'] }, 'b.test': { domains: ['b.test'] } },
      files: { 'a.test/index.html': 'Tenant A\n', 'b.test/index.html': 'Tenant B\n' },
    });
    rootFile = await pebble.writeRoot(t.dir);
  }, 60_000);

  afterAll(async () => {
    await t?.stop();
    await pebble?.stop();
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

/**
 * The HTTPS listener's side of TLS-ALPN-01 while a challenge is pending
 * (Pebble validates in milliseconds, so this is driven without it): a
 * listener opened with a pending challenge for c.test, whose certificate
 * (with the acmeIdentifier extension, RFC 8737 §3) openssl made.
 */
describe('the HTTPS listener with a TLS-ALPN-01 challenge pending', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-alpn-listener-'));
  const answered: string[] = [];
  let port: number;
  let close: () => Promise<void>;
  /** DER of OID 1.3.6.1.5.5.7.1.31 (id-pe-acmeIdentifier). */
  const ACME_ID_OID = Buffer.from('06082b06010505070 11f'.replace(/\s/g, ''), 'hex');

  beforeAll(async () => {
    const { openListeners } = await import('../../../src/http/listeners.ts');
    const { CertStore } = await import('../../../src/core/certs.ts');
    const { createLogger } = await import('../../../src/core/log.ts');
    const tls = await import('node:tls');
    const { Writable } = await import('node:stream');
    const ossl = (...a: string[]) => execFileSync('openssl', a, { stdio: 'ignore' });
    const f = (n: string) => path.join(dir, n);
    ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('default.key'), '-out', f('default.crt'), '-days', '1', '-subj', '/CN=default.test');
    const digest = 'ab'.repeat(32);
    ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('challenge.key'), '-out', f('challenge.crt'), '-days', '1', '-subj', '/CN=c.test', '-addext', 'subjectAltName=DNS:c.test', '-addext', `1.3.6.1.5.5.7.1.31=critical,DER:0420${digest}`);
    const challenge = tls.createSecureContext({ cert: readFileSync(f('challenge.crt')), key: readFileSync(f('challenge.key')) });
    const log = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
    const certs = new CertStore(dir, log);
    const opened = await openListeners(
      { listen: [], headersTimeout: 10, requestTimeout: 30, tls: { listen: ['127.0.0.1:0'], certs: dir } } as never,
      certs,
      () => undefined,
      log,
      {
        request: (_req, res) => res.end('page\n'),
        upgrade: (_s, _r, socket) => socket.destroy(),
        clientError: (_e, socket) => socket.destroy(),
        connect: (_r, socket) => socket.destroy(),
      },
      { context: (name) => (name === 'c.test' ? challenge : undefined), answered: (name) => answered.push(name) },
    );
    port = Number(new URL(opened.urls[0]!).port);
    close = async () => {
      await Promise.all(opened.listeners.map((l) => l.close(100)));
    };
  });

  afterAll(async () => {
    await close?.();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A TLS connection from Node's client: the protocol, the certificate and every byte the server sent until it closed. */
  async function connect(servername: string, protocols: string[], maxVersion: 'TLSv1.2' | 'TLSv1.3' = 'TLSv1.3') {
    const tls = await import('node:tls');
    return new Promise<{ alpn: string | false | null; cert: X509Certificate; bytes: number } | { error: string }>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername, ALPNProtocols: protocols, rejectUnauthorized: false, maxVersion });
      let bytes = 0;
      s.on('data', (c: Buffer) => (bytes += c.length));
      s.on('error', (err) => resolve({ error: err.message }));
      s.on('secureConnect', () => {
        const result = { alpn: s.alpnProtocol, cert: s.getPeerX509Certificate()!, bytes: 0 };
        if (s.alpnProtocol !== 'acme-tls/1') {
          s.end();
          return resolve(result);
        }
        // RFC 8737: the validator sends nothing; the server must send nothing either, and the connection ends.
        s.on('end', () => resolve({ ...result, bytes }));
      });
    });
  }

  it('acme-tls/1 over TLS 1.3 gets the challenge certificate, no bytes, and the end of the connection', async () => {
    const r = await connect('c.test', ['acme-tls/1']);
    if ('error' in r) throw new Error(r.error);
    expect(r.alpn).toBe('acme-tls/1');
    expect(r.cert.raw.includes(ACME_ID_OID)).toBe(true);
    expect(r.bytes).toBe(0);
    expect(answered).toContain('c.test');
  });

  it('h2 and http/1.1 for the same name meanwhile get the ordinary certificate', async () => {
    for (const proto of ['h2', 'http/1.1']) {
      const r = await connect('c.test', [proto]);
      if ('error' in r) throw new Error(r.error);
      expect(r.alpn).toBe(proto);
      expect(r.cert.raw.includes(ACME_ID_OID)).toBe(false);
      expect(r.cert.subject).toContain('default.test');
    }
  });

  it('acme-tls/1 is refused over TLS 1.2 (the certificate is chosen before ALPN there) and for a name with nothing pending', async () => {
    expect(await connect('c.test', ['acme-tls/1'], 'TLSv1.2')).toMatchObject({ error: expect.stringMatching(/no application protocol|alert/i) });
    expect(await connect('d.test', ['acme-tls/1'])).toMatchObject({ error: expect.stringMatching(/no application protocol|alert/i) });
  });
});
