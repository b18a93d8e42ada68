import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ssh2 from 'ssh2';
import { describe, expect, it } from 'vitest';
import { hostKeyDir, loadOrCreateHostKeys, newHostKey } from '../../../src/core/hostkeys.ts';

describe('SFTP host key generation', () => {
  // ssh2's own generator makes a malformed ed25519 key about once in 200; 1,500 keys all
  // came out usable here only with the retry (without it, all good has a chance under 0.1%).
  it('every ed25519 key it makes parses and signs', () => {
    const probe = Buffer.from('probe');
    let bad = 0;
    for (let i = 0; i < 1500; i++) {
      const parsed = ssh2.utils.parseKey(newHostKey('ed25519').private);
      if (parsed instanceof Error || !parsed.verify(probe, parsed.sign(probe))) bad++;
    }
    expect(bad).toBe(0);
  });
});

describe('SFTP host key files', () => {
  // <data>/sftp belongs to the service user once a start as root has handed <data> over; the next start as root makes
  // missing keys before it drops to that user again. A link that user put where a file or the folder goes is never followed.
  it('never writes through a symbolic link put where the public key goes', () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'hostkeys-'));
    try {
      const data = path.join(root, 'data');
      mkdirSync(hostKeyDir(data), { recursive: true, mode: 0o700 });
      const victim = path.join(root, 'victim');
      writeFileSync(victim, 'not yours\n', { mode: 0o600 });
      symlinkSync(victim, path.join(hostKeyDir(data), 'ssh_host_ed25519_key.pub'));
      const keys = loadOrCreateHostKeys(data);
      expect(keys).toHaveLength(2);
      expect(readFileSync(victim, 'utf8')).toBe('not yours\n');
      const pub = path.join(hostKeyDir(data), 'ssh_host_ed25519_key.pub');
      expect(lstatSync(pub).isFile()).toBe(true);
      expect(readFileSync(pub, 'utf8')).toMatch(/^ssh-ed25519 /);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('refuses a symbolic link where the folder goes: nothing written or changed where it leads', () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'hostkeys-'));
    try {
      const data = path.join(root, 'data');
      const elsewhere = path.join(root, 'elsewhere');
      mkdirSync(data);
      mkdirSync(elsewhere, { mode: 0o700 });
      chmodSync(elsewhere, 0o700);
      symlinkSync(elsewhere, hostKeyDir(data));
      expect(() => loadOrCreateHostKeys(data)).toThrow(/symbolic link/);
      expect(existsSync(path.join(elsewhere, 'ssh_host_ed25519_key'))).toBe(false);
      expect((lstatSync(elsewhere).mode & 0o7777).toString(8)).toBe('700');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
