import { lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
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
});
