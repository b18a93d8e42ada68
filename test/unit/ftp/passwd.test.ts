import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { passwd } from '../../../src/cli/commands/passwd.ts';
import { loadConfig } from '../../../src/core/config/load.ts';
import { Registry } from '../../../src/core/registry.ts';
import { verifyPassword } from '../../../src/lib/password.ts';

// A copy of the bundled example: the operator's own config/ may have changed passwords or tenants.
const BUNDLED = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../fixtures/config');
let dir: string;
const stdin = (s: string) => Readable.from([Buffer.from(s)]) as unknown as NodeJS.ReadStream;

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'mw-passwd-'));
  cpSync(BUNDLED, dir, { recursive: true });
  vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
});
afterEach(() => {
  vi.restoreAllMocks();
  rmSync(dir, { recursive: true, force: true });
});

async function check(login: string, password: string): Promise<boolean> {
  const account = new Registry(loadConfig(dir)).ftpAccount(login);
  return account !== undefined && verifyPassword(password, account.hash);
}

describe('makewaves passwd', () => {
  it('changes one hash and leaves every other byte of the file as it was', async () => {
    const file = path.join(dir, 'tenants', 'example.test.yaml');
    const before = readFileSync(file, 'utf8');
    expect(await check('alice@example.test', 'wonderland')).toBe(true);
    await passwd('alice@example.test', dir, stdin('looking-glass\n'));
    const after = readFileSync(file, 'utf8');
    const changed = after.split('\n').filter((l, i) => l !== before.split('\n')[i]);
    expect(changed).toHaveLength(1);
    expect(changed[0]).toMatch(/^ {4}password: "\$scrypt\$N=16384,r=8,p=1\$/);
    expect(await check('alice@example.test', 'looking-glass')).toBe(true);
    expect(await check('alice@example.test', 'wonderland')).toBe(false);
  });

  it('adds a user to an existing list, and a list to a tenant without one', async () => {
    await passwd('carol@example.test', dir, stdin('c-pass'));
    expect(await check('carol@example.test', 'c-pass')).toBe(true);
    expect(await check('alice@example.test', 'wonderland')).toBe(true);
    const shop = path.join(dir, 'tenants', 'shop.test.yaml');
    const before = readFileSync(shop, 'utf8');
    await passwd('sam@shop.test', dir, stdin('s-pass\n'));
    expect(readFileSync(shop, 'utf8').startsWith(before)).toBe(true);
    expect(await check('sam@shop.test', 's-pass')).toBe(true);
  });

  it('refuses bad logins, unknown tenants, empty passwords and broken files, changing nothing', async () => {
    const file = path.join(dir, 'tenants', 'example.test.yaml');
    const before = readFileSync(file, 'utf8');
    await expect(passwd('alice', dir, stdin('x'))).rejects.toThrow(/user@<tenant id>/);
    await expect(passwd('alice@nowhere.test', dir, stdin('x'))).rejects.toThrow(/no tenant "nowhere.test"/);
    await expect(passwd('alice@example.test', dir, stdin('\n'))).rejects.toThrow(/empty password/);
    expect(readFileSync(file, 'utf8')).toBe(before);
    writeFileSync(file, 'domains: [a.test\n');
    await expect(passwd('alice@example.test', dir, stdin('x'))).rejects.toThrow(/fix it first/);
  });
});
