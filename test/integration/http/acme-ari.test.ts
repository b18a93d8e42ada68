import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/core/log.ts';
import { freePort } from '../../../src/lib/listen.ts';
import { startSuite, type Suite } from '../../../src/main.ts';
import { havePebble, PEBBLE_MISSING, startPebble, type Pebble } from '../../helpers/pebble.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

type Status = { domains: Record<string, { fingerprint?: string; renewAt?: string; renewFrom?: string; ari?: { start: string; end: string; nextCheck: string } }> };
const status = (dataDir: string): Status => {
  try {
    return JSON.parse(readFileSync(path.join(dataDir, 'acme', 'status.json'), 'utf8')) as Status;
  } catch {
    return { domains: {} };
  }
};

/**
 * The RFC 9773 certID of a certificate file, worked out with openssl (not
 * with the suite's own code): base64url of the Authority Key Identifier's
 * keyIdentifier, ".", base64url of the serial number's DER integer bytes.
 */
function opensslCertId(file: string): string {
  const aki = execFileSync('openssl', ['x509', '-in', file, '-noout', '-ext', 'authorityKeyIdentifier'], { encoding: 'utf8' });
  const keyId = /([0-9A-F]{2}(?::[0-9A-F]{2})+)/i.exec(aki)![1]!.replace(/:/g, '');
  let serial = /serial=([0-9A-F]+)/i.exec(execFileSync('openssl', ['x509', '-in', file, '-noout', '-serial'], { encoding: 'utf8' }))![1]!;
  if (serial.length % 2) serial = `0${serial}`;
  // DER writes a leading zero byte when the first bit is set (the integer is positive).
  if (parseInt(serial.slice(0, 2), 16) & 0x80) serial = `00${serial}`;
  return `${Buffer.from(keyId, 'hex').toString('base64url')}.${Buffer.from(serial, 'hex').toString('base64url')}`;
}

/**
 * Pebble as packaged (2.4) has no renewalInfo; Pebble from 2.6 on does. A
 * front on loopback serves Pebble's directory with `renewalInfo` added
 * (every other URL in it is Pebble's own) and answers renewalInfo for the
 * certificates in the suite's certs folder, each identified by openssl.
 */
describe.skipIf(!havePebble)(`ACME Renewal Information (RFC 9773) with a real Pebble (${havePebble ? 'installed' : PEBBLE_MISSING})`, () => {
  let pebble: Pebble;
  let front: https.Server;
  let t: TestSuite;
  /** The suite's certificate folder, known once its start returns (an order may finish, and ask here, before that). */
  let certsKnown: (dir: string) => void = () => undefined;
  const certsDir = new Promise<string>((resolve) => (certsKnown = resolve));
  /** The window answered per domain: [start, end] in ms from the moment of asking. */
  const windows = new Map<string, [number, number]>();
  const asked: string[] = [];

  beforeAll(async () => {
    const httpPort = await freePort();
    pebble = await startPebble({ httpPort });
    const pebbleDirectory = await (await import('node:https')).default;
    const directoryOf = () =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        pebbleDirectory
          .get(pebble.directory, { ca: readFileSync(pebble.tlsCa) }, (res) => {
            let body = '';
            res.on('data', (c: Buffer) => (body += c.toString()));
            res.on('end', () => resolve(JSON.parse(body) as Record<string, unknown>));
          })
          .on('error', reject);
      });
    front = https.createServer({ cert: readFileSync(pebble.tlsCa), key: readFileSync(pebble.tlsKey) }, async (req, res) => {
      const base = `https://127.0.0.1:${(front.address() as AddressInfo).port}`;
      if (req.url === '/dir') {
        const dir = await directoryOf();
        res.writeHead(200, { 'Content-Type': 'application/json' });
        return res.end(JSON.stringify({ ...dir, renewalInfo: `${base}/renewal-info` }));
      }
      const id = /^\/renewal-info\/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/.exec(req.url ?? '')?.[1];
      asked.push(req.url ?? '');
      const certs = await certsDir;
      for (const f of readdirSync(certs).filter((n) => n.endsWith('.crt'))) {
        const domain = f.slice(0, -4);
        const w = windows.get(domain);
        if (!id || !w || opensslCertId(path.join(certs, f)) !== id) continue;
        res.writeHead(200, { 'Content-Type': 'application/json', 'Retry-After': '21600' });
        return res.end(JSON.stringify({ suggestedWindow: { start: new Date(Date.now() + w[0]).toISOString(), end: new Date(Date.now() + w[1]).toISOString() }, explanationURL: 'https://ca.test/why' }));
      }
      res.writeHead(404, { 'Content-Type': 'application/problem+json' });
      res.end(JSON.stringify({ type: 'urn:ietf:params:acme:error:malformed', detail: 'no such certificate' }));
    });
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    const day = 86_400_000;
    windows.set('a.test', [10 * day, 11 * day]);
    t = await startTestSuite({
      main: {
        http: { listen: [`127.0.0.1:${httpPort}`], tls: { listen: ['127.0.0.1:0'], certs: '../data/certs', selfSigned: true } },
        acme: { directory: `https://127.0.0.1:${(front.address() as AddressInfo).port}/dir`, email: 'hostmaster@makewaves.test', ca: pebble.tlsCa, retrySeconds: 1, maxRetrySeconds: 4 },
      },
      tenants: { 'a.test': { domains: ['a.test'] } },
      files: { 'a.test/index.html': 'Tenant A\n' },
    });
    certsKnown(path.join(t.dataDir, 'certs'));
  }, 60_000);

  let again: Suite | undefined;
  afterAll(async () => {
    await again?.stop(500);
    await t?.stop();
    await new Promise((resolve) => front?.close(resolve));
    await pebble?.stop();
  });

  it('after issuance the renewal is set at a random point of the window the CA suggests', async () => {
    const started = Date.now();
    await waitFor(() => status(t.dataDir).domains['a.test']?.renewFrom === 'ari', 60_000, 'an ARI renewal time for a.test');
    const s = status(t.dataDir).domains['a.test']!;
    const renewAt = Date.parse(s.renewAt!);
    expect(renewAt).toBeGreaterThanOrEqual(Date.parse(s.ari!.start));
    expect(renewAt).toBeLessThanOrEqual(Date.parse(s.ari!.end));
    // Far from two thirds of Pebble's certificate lifetime: the window is ten days out.
    expect(renewAt - started).toBeGreaterThan(9 * 86_400_000);
    // Asked again after the CA's Retry-After (six hours).
    expect(Date.parse(s.ari!.nextCheck) - started).toBeGreaterThanOrEqual(6 * 3_600_000 - 1_000);
    expect(t.logs().some((l) => l.msg === 'ACME renewal window from the CA (ARI)' && l.domain === 'a.test')).toBe(true);
    const cli = execFileSync('node', ['bin/makewaves.js', 'certs', '--config', t.configDir], { cwd: path.resolve(import.meta.dirname, '../../..'), encoding: 'utf8' });
    expect(cli).toMatch(/^a\.test\s+a\.test\s+acme\s.*\d{4}-\d\d-\d\d \d\d:\d\dZ \(ARI\)/m);
  }, 90_000);

  it('a window that has begun (the CA wants the certificate replaced) renews at once when renewalInfo is next asked', async () => {
    const before = status(t.dataDir).domains['a.test']!.fingerprint;
    windows.set('a.test', [-3_600_000, -60_000]);
    await t.suite.stop(500);
    // renewalInfo falls due again (as it does after its Retry-After).
    const s = status(t.dataDir);
    s.domains['a.test']!.ari!.nextCheck = new Date(Date.now() - 1000).toISOString();
    writeFileSync(path.join(t.dataDir, 'acme', 'status.json'), JSON.stringify(s));
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(...chunk.toString().split('\n').filter(Boolean));
        cb();
      },
    });
    again = await startSuite({ configDir: t.configDir, log: createLogger({ level: 'info', destination }), watch: false });
    await waitFor(() => status(t.dataDir).domains['a.test']?.fingerprint !== before, 60_000, 'the certificate of a.test renewed');
    expect(lines.some((l) => l.includes('ACME renewal started') && l.includes('"a.test"'))).toBe(true);
  }, 90_000);
});
