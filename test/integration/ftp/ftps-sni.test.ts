import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';
import { starttlsSubject } from '../../helpers/tls.ts';

let t: TestSuite;

beforeAll(async () => {
  const password = await hashPassword('sni-pass-1');
  t = await startTestSuite({
    tenants: {
      'one.test': { domains: ['one.test', 'www.one.test'], ftp: [{ user: 'ann', password }] },
      'two.test': { domains: ['two.test'], ftp: [{ user: 'ben', password }] },
    },
    // No ftp.tls files: FTPS takes its certificates from the suite's store, as HTTPS does.
    main: { http: { tls: { listen: ['127.0.0.1:0'], certs: '../certs', selfSigned: true } }, ftp: { tls: {} } },
  });
});
afterAll(async () => {
  await t?.stop();
});

/** The subject of the certificate the FTP listener presents after AUTH TLS, asked for `servername` (none: no SNI). */
function subjectFor(servername: string | undefined, ftpUrl = t.ftp!): Promise<string> {
  return starttlsSubject('ftp', ftpUrl, servername);
}

describe('FTPS chooses its certificate by SNI, from the store HTTPS uses', () => {
  it.each([
    ['one.test', 'CN = one.test'],
    ['www.one.test', 'CN = one.test'],
    ['two.test', 'CN = two.test'],
    ['TWO.TEST', 'CN = two.test'],
    ['unknown.test', 'CN = mx.test'],
    [undefined, 'CN = mx.test'],
  ])('SNI %s → %s', async (servername, subject) => {
    expect(await subjectFor(servername)).toBe(subject);
  });
});

describe('FTPS with its own certificate (ftp.tls.cert) and a store', () => {
  let own: TestSuite;
  beforeAll(async () => {
    const { execFileSync } = await import('node:child_process');
    const { mkdtempSync } = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mw-ftps-own-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=ftp.own.test', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { stdio: 'ignore' });
    own = await startTestSuite({
      tenants: { 'one.test': { domains: ['one.test'], ftp: [] } },
      main: {
        http: { tls: { listen: ['127.0.0.1:0'], certs: '../certs', selfSigned: true } },
        ftp: { tls: { cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') } },
      },
    });
  });
  afterAll(async () => {
    await own?.stop();
  });

  it('a name the store holds gets its certificate; any other name, or none, gets ftp.tls.cert', async () => {
    expect(await subjectFor('one.test', own.ftp)).toBe('CN = one.test');
    expect(await subjectFor('unknown.test', own.ftp)).toBe('CN = ftp.own.test');
    expect(await subjectFor(undefined, own.ftp)).toBe('CN = ftp.own.test');
  });
});
