import { chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CertStore } from '../../../src/core/certs.ts';
import { createLogger } from '../../../src/core/log.ts';
import { registryOf } from '../../helpers/registry.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'selfsigned-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('self-signed certificates', () => {
  // The store may be under <data>, the service user's once a start as root has handed it over; the next start as root writes them.
  it('are never written through a link put where a key goes', async () => {
    const store = path.join(dir, 'certs');
    mkdirSync(store, { mode: 0o700 });
    const victim = path.join(dir, 'victim');
    writeFileSync(victim, 'not yours\n');
    symlinkSync(victim, path.join(store, 'default.key'));
    const made = await new CertStore(store, createLogger({ level: 'silent' })).ensureSelfSigned(registryOf({}), 'mx.test');
    expect(made).toContain('default');
    expect(readFileSync(victim, 'utf8')).toBe('not yours\n');
    expect(lstatSync(path.join(store, 'default.key')).isFile()).toBe(true);
    expect(readFileSync(path.join(store, 'default.key'), 'utf8')).toMatch(/PRIVATE KEY/);
  });

  // The bundled config keeps them in <data>/certs. A link the service user put there had a start as root write the key
  // and certificate into any folder it named, over files of those names (another server's default.key, say).
  it.skipIf(process.getuid?.() !== 0)('are never written into a folder a link names, when the link is in a folder another user owns (as root)', async () => {
    const data = path.join(dir, 'data');
    mkdirSync(data, { mode: 0o750 });
    chownSync(data, 65534, 65534);
    const elsewhere = path.join(dir, 'elsewhere');
    mkdirSync(elsewhere);
    writeFileSync(path.join(elsewhere, 'default.key'), 'not yours\n');
    const store = path.join(data, 'certs');
    symlinkSync(elsewhere, store);
    await expect(new CertStore(store, createLogger({ level: 'silent' })).ensureSelfSigned(registryOf({}), 'mx.test')).rejects.toThrow(/symbolic link/);
    expect(readFileSync(path.join(elsewhere, 'default.key'), 'utf8')).toBe('not yours\n');
    expect(existsSync(path.join(elsewhere, 'default.crt'))).toBe(false);
  });

  it('are written into a folder the operator placed by a link (its folder not another user\'s)', async () => {
    const elsewhere = path.join(dir, 'elsewhere');
    mkdirSync(elsewhere, { mode: 0o700 });
    const store = path.join(dir, 'certs');
    symlinkSync(elsewhere, store);
    const made = await new CertStore(store, createLogger({ level: 'silent' })).ensureSelfSigned(registryOf({}), 'mx.test');
    expect(made).toContain('default');
    expect(readFileSync(path.join(elsewhere, 'default.key'), 'utf8')).toMatch(/PRIVATE KEY/);
  });
});
