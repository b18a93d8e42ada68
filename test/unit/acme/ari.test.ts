import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { certId, nextAriCheckMs, parseRenewalInfo, pickInWindow } from '../../../src/acme/ari.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-ari-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A CA and a leaf it signs with `serial` (hex), made by openssl; the leaf's AKI as openssl prints it. */
function leaf(serial: string): { cert: X509Certificate; aki: string } {
  const f = (n: string) => path.join(dir, n);
  const ossl = (...a: string[]) => execFileSync('openssl', a, { stdio: ['ignore', 'pipe', 'ignore'] });
  ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '2', '-subj', '/CN=Test CA');
  ossl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('leaf.key'), '-out', f('leaf.csr'), '-subj', '/CN=a.test');
  writeFileSync(f('ext.cnf'), 'authorityKeyIdentifier=keyid\nsubjectAltName=DNS:a.test\n');
  ossl('x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-set_serial', `0x${serial}`, '-days', '1', '-extfile', f('ext.cnf'), '-out', f('leaf.crt'));
  const text = execFileSync('openssl', ['x509', '-in', f('leaf.crt'), '-noout', '-ext', 'authorityKeyIdentifier'], { encoding: 'utf8' });
  return { cert: new X509Certificate(readFileSync(f('leaf.crt'))), aki: /([0-9A-F]{2}(?::[0-9A-F]{2})+)/i.exec(text)![1]!.replace(/:/g, '') };
}

describe('ARI certID (RFC 9773 §4.1)', () => {
  it('is base64url(AKI keyIdentifier) "." base64url(serial DER bytes)', () => {
    const { cert, aki } = leaf('0123abcd');
    expect(certId(cert)).toBe(`${Buffer.from(aki, 'hex').toString('base64url')}.${Buffer.from('0123abcd', 'hex').toString('base64url')}`);
  });

  it('keeps the leading zero byte DER gives a serial whose first bit is set', () => {
    const { cert, aki } = leaf('8a0102');
    expect(certId(cert)).toBe(`${Buffer.from(aki, 'hex').toString('base64url')}.${Buffer.from('008a0102', 'hex').toString('base64url')}`);
  });
});

describe('ARI renewal window', () => {
  it('a point inside the suggested window; a window that ends before it starts is refused', () => {
    const w = parseRenewalInfo({ suggestedWindow: { start: '2030-01-01T00:00:00Z', end: '2030-01-03T00:00:00Z' } });
    expect(pickInWindow(w, () => 0)).toBe(Date.parse('2030-01-01T00:00:00Z'));
    expect(pickInWindow(w, () => 0.5)).toBe(Date.parse('2030-01-02T00:00:00Z'));
    expect(() => parseRenewalInfo({ suggestedWindow: { start: '2030-01-03T00:00:00Z', end: '2030-01-01T00:00:00Z' } })).toThrow(/ends before it starts/);
    expect(() => parseRenewalInfo({ nothing: true })).toThrow(/without a readable suggestedWindow/);
  });

  it('asked again after the CA Retry-After, between a minute and a day; six hours without one', () => {
    expect(nextAriCheckMs(0)).toBe(6 * 3_600_000);
    expect(nextAriCheckMs(5_000)).toBe(60_000);
    expect(nextAriCheckMs(7_200_000)).toBe(7_200_000);
    expect(nextAriCheckMs(10 * 86_400_000)).toBe(86_400_000);
  });
});
