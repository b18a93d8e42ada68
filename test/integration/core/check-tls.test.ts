import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generate } from 'selfsigned';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../../helpers/cli.ts';
import { startTestSuite, writeConfig } from '../../helpers/suite.ts';

// `makewaves check` names every certificate problem HTTPS, STARTTLS and FTPS
// would meet, and the start-up log says which TLS offers are off and why.

const root = mkdtempSync(path.join(os.tmpdir(), 'makewaves-check-tls-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function writeCert(dir: string, name: string, domains: string[]): Promise<void> {
  const pems = await generate([{ name: 'commonName', value: domains[0]! }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: domains.map((value) => ({ type: 2 as const, value })) }],
  });
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, `${name}.crt`), pems.cert);
  writeFileSync(path.join(dir, `${name}.key`), pems.private);
}

function fixture(name: string, tenants: Record<string, Record<string, unknown>>, main: Record<string, unknown> = {}) {
  const dir = path.join(root, name);
  mkdirSync(dir);
  const { configDir } = writeConfig(dir, { main: { http: { tls: { listen: ['127.0.0.1:0'], certs: '../certs' } }, ...main }, tenants });
  return { dir, configDir, certs: path.join(dir, 'certs') };
}

describe('makewaves check on TLS', () => {
  it('names a tenant tls.cert/tls.key that points at a missing file (file and key) and exits 1', async () => {
    const f = fixture('own-missing', { 'a.test': { domains: ['a.test'], tls: { cert: 'gone/a.crt', key: 'gone/a.key' } } });
    await writeCert(f.certs, 'default', ['mx.test', 'a.test']);
    const r = await runCli('check', '--config', f.configDir);
    expect(r.code).toBe(1);
    const file = path.join(f.configDir, 'tenants', 'a.test.yaml');
    expect(r.err).toContain(`${file}: tls.cert: ${path.join(f.configDir, 'tenants', 'gone/a.crt')} cannot be read (ENOENT)`);
    expect(r.err).toContain(`${file}: tls.key: ${path.join(f.configDir, 'tenants', 'gone/a.key')} cannot be read (ENOENT)`);
  });

  it('calls a domain with no certificate a problem when HTTPS is on, selfSigned is false and there is no acme:', async () => {
    const f = fixture('bare', { 'a.test': { domains: ['a.test'] } });
    const r = await runCli('check', '--config', f.configDir);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/a\.test: no certificate in .*certs .*HTTPS handshakes for it fail/);
  });

  it('passes the same domain once its certificate is in the store (selfSigned false)', async () => {
    const f = fixture('covered', { 'a.test': { domains: ['a.test'] } });
    await writeCert(f.certs, 'a.test', ['a.test']);
    const r = await runCli('check', '--config', f.configDir);
    expect(r.err).not.toMatch(/a\.test: no certificate|cannot be read/);
  });

  it('says STARTTLS and FTPS are off without a default certificate (a note)', async () => {
    const f = fixture('no-default', { 'a.test': { domains: ['a.test'] } }, { smtp: { listen: ['127.0.0.1:0'] }, ftp: { listen: '127.0.0.1:0' } });
    await writeCert(f.certs, 'a.test', ['a.test']);
    const r = await runCli('check', '--config', f.configDir);
    expect(r.out).toContain(`note: no readable default certificate (${path.join(f.certs, 'default.crt')} and ${path.join(f.certs, 'default.key')}): SMTP STARTTLS is off`);
    expect(r.out).toContain('note: ftp.tls is not configured: FTPS is off');
    expect(r.err).not.toMatch(/STARTTLS|FTPS/);
  });

  it('calls ftp.tls without files and no default certificate a problem (FTP would not start)', async () => {
    const f = fixture('ftps-no-default', { 'a.test': { domains: ['a.test'] } }, { ftp: { listen: '127.0.0.1:0', tls: {} } });
    await writeCert(f.certs, 'a.test', ['a.test']);
    const r = await runCli('check', '--config', f.configDir);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/ftp\.tls names no cert\/key and there is no readable default certificate .*: FTP does not start/);
  });
});

describe('start-up log on TLS offers', () => {
  it('says SMTP STARTTLS, FTPS and HTTPS for a bare domain are off, and why', async () => {
    const t = await startTestSuite({
      main: { http: { tls: { listen: ['127.0.0.1:0'], certs: '../certs' } }, smtp: { listen: ['127.0.0.1:0'] }, ftp: {} },
      tenants: { 'a.test': { domains: ['a.test'] } },
    });
    try {
      const msgs = t.logs().map((l) => String(l.msg));
      expect(msgs).toContainEqual(expect.stringMatching(/^SMTP STARTTLS is off: no default certificate in .*certs \(default\.crt and default\.key, readable\)$/));
      expect(msgs).toContain('FTPS (AUTH TLS) is off: ftp.tls is not configured');
      expect(msgs).toContainEqual(expect.stringMatching(/^HTTPS is off for a\.test: no certificate in .*certs and no default one$/));
    } finally {
      await t.stop();
    }
  });
});
