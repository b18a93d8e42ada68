import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { accountKey, renewalTime } from '../../../src/acme/index.ts';

let dir: string;
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('ACME account key', () => {
  it('is made once, mode 0600, and the same key is used afterwards', async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-acme-'));
    const first = await accountKey(dir);
    const file = path.join(dir, 'acme', 'account.key');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(await accountKey(dir)).toBe(first);
  });

  it('a corrupt key file is a clear error naming it, and nothing replaces it (no silent new account)', async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-acme-'));
    mkdirSync(path.join(dir, 'acme'));
    const file = path.join(dir, 'acme', 'account.key');
    writeFileSync(file, '-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n', { mode: 0o600 });
    await expect(accountKey(dir)).rejects.toThrow(`${file}: not a readable private key`);
    await expect(accountKey(dir)).rejects.toThrow(/restore it from a backup, or remove it to register a new ACME account/);
    expect(readFileSync(file, 'utf8')).toContain('not a key');
  });
});

describe('renewal time', () => {
  it('is two thirds into the lifetime, give or take a thirtieth', () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-acme-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', path.join(dir, 'k'), '-out', path.join(dir, 'c'), '-days', '90', '-subj', '/CN=a.test'], { stdio: 'ignore' });
    const cert = new X509Certificate(readFileSync(path.join(dir, 'c')));
    const from = Date.parse(cert.validFrom);
    const life = Date.parse(cert.validTo) - from;
    expect(renewalTime(cert, () => 0.5)).toBe(from + (life * 2) / 3);
    expect(renewalTime(cert, () => 0)).toBe(from + (life * 2) / 3 - life / 30);
    expect(renewalTime(cert, () => 1)).toBe(from + (life * 2) / 3 + life / 30);
  });
});
