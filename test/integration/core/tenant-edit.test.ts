import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/core/config/load.ts';
import { hashPassword } from '../../../src/lib/password.ts';
import { runCli } from '../../helpers/cli.ts';
import { writeConfig } from '../../helpers/suite.ts';

// The verbs for every tenant-file field a customer's request changes keep the
// file's comments, and what they write passes the real loader.

const root = mkdtempSync(path.join(os.tmpdir(), 'makewaves-tenant-edit-'));
const { configDir } = writeConfig(root, { tenants: { 'other.test': { domains: ['other.test'] } } });
const file = path.join(configDir, 'tenants', 'shop.test.yaml');
const KEY1 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl laptop';
const KEY2 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3vuhgIitRkIFNvNV2cr8CIhPz5OWJwHnXPdlkATK8n desk';
let hash: string;
let original: string;

beforeAll(async () => {
  hash = await hashPassword('s3cret-pass');
  original = [
    '# Shop: contract 2026-114',
    'domains: [shop.test, www.shop.test] # both on the invoice',
    '# raised on request, ticket 88',
    'quota: 5MiB',
    'ftp:',
    '  # the web designer',
    '  - user: alice',
    `    password: "${hash}"`,
    '  - user: bob # leaves in March',
    `    password: "${hash}"`,
    '',
  ].join('\n');
});
beforeEach(() => writeFileSync(file, original));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const run = (...args: string[]) => runCli(...args, '--config', configDir);
const shop = () => loadConfig(configDir).tenants.find((t) => t.id === 'shop.test')!.config;
const keepsComments = () => {
  const text = readFileSync(file, 'utf8');
  for (const c of ['# Shop: contract 2026-114', '# both on the invoice', '# raised on request, ticket 88', '# the web designer']) expect(text).toContain(c);
};

describe('tenant domain add|remove', () => {
  it('adds and removes a domain, comments kept', async () => {
    expect(await run('tenant', 'domain', 'add', 'shop.test', 'Shop2.test')).toMatchObject({ code: 0, out: 'added shop2.test to tenant shop.test: shop.test, www.shop.test, shop2.test\n' });
    expect(shop().domains).toEqual(['shop.test', 'www.shop.test', 'shop2.test']);
    keepsComments();
    expect((await run('tenant', 'domain', 'remove', 'shop.test', 'www.shop.test')).code).toBe(0);
    expect(shop().domains).toEqual(['shop.test', 'shop2.test']);
    keepsComments();
  });

  it("refuses another tenant's domain (the loader names both files), an unknown one, and the last one", async () => {
    const taken = await run('tenant', 'domain', 'add', 'shop.test', 'other.test');
    expect(taken.code).toBe(1);
    expect(taken.err).toMatch(/other\.test/);
    expect(readFileSync(file, 'utf8')).toBe(original);
    expect((await run('tenant', 'domain', 'remove', 'shop.test', 'nope.test')).err).toBe('makewaves: tenant shop.test has no domain nope.test\n');
    expect((await run('tenant', 'domain', 'remove', 'other.test', 'other.test')).err).toMatch(/other\.test is the only domain of tenant other\.test/);
  });
});

describe('tenant quota', () => {
  it('sets, changes and lifts the quota, comments kept; refuses a non-size', async () => {
    expect(await run('tenant', 'quota', 'shop.test', '50MiB')).toMatchObject({ code: 0, out: 'tenant shop.test: quota 50 MiB\n' });
    expect(shop().quota).toBe(50 * 1024 * 1024);
    keepsComments();
    expect((await run('tenant', 'quota', 'shop.test', 'none')).out).toBe('tenant shop.test has no quota now\n');
    expect(shop().quota).toBeUndefined();
    expect((await run('tenant', 'quota', 'shop.test', 'lots')).err).toBe('makewaves: "lots" is not a size (examples: 1048576, 512KiB, 10MB) nor "none"\n');
    expect((await run('tenant', 'quota', 'other.test', '1048576')).code).toBe(0);
    expect(loadConfig(configDir).tenants.find((t) => t.id === 'other.test')!.config.quota).toBe(1048576);
  });
});

describe('passwd --remove', () => {
  it('removes an FTP user without reading a password, comments kept', async () => {
    expect(await run('passwd', '--remove', 'bob@shop.test')).toMatchObject({ code: 0, out: 'removed FTP user bob@shop.test (password and SFTP keys)\n' });
    expect(shop().ftp.map((u) => u.user)).toEqual(['alice']);
    keepsComments();
    expect((await run('passwd', '--remove', 'bob@shop.test')).err).toBe('makewaves: tenant shop.test has no FTP user bob\n');
  });
});

describe('ftp key add|remove', () => {
  it('adds keys to an FTP user and removes them by comment or line, comments kept', async () => {
    expect(await run('ftp', 'key', 'add', 'alice@shop.test', KEY1)).toMatchObject({ code: 0, out: 'added a key to alice@shop.test: 1 SFTP key\n' });
    expect((await run('ftp', 'key', 'add', 'alice@shop.test', KEY2)).code).toBe(0);
    expect(shop().ftp.find((u) => u.user === 'alice')!.keys).toEqual([KEY1, KEY2]);
    keepsComments();
    expect((await run('ftp', 'key', 'add', 'alice@shop.test', KEY1)).err).toBe('makewaves: alice@shop.test has this key already\n');
    expect((await run('ftp', 'key', 'remove', 'alice@shop.test', 'laptop')).code).toBe(0);
    expect(shop().ftp.find((u) => u.user === 'alice')!.keys).toEqual([KEY2]);
    expect((await run('ftp', 'key', 'remove', 'alice@shop.test', KEY2)).out).toBe('removed a key from alice@shop.test: 0 SFTP keys\n');
    expect(shop().ftp.find((u) => u.user === 'alice')!.keys).toEqual([]);
    keepsComments();
  });

  it('refuses a line that is not a public key (the loader says so) and leaves the file as it was', async () => {
    const r = await run('ftp', 'key', 'add', 'alice@shop.test', 'not a key');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/must be a public key line as in authorized_keys/);
    expect(readFileSync(file, 'utf8')).toBe(original);
    expect((await run('ftp', 'key', 'add', 'carol@shop.test', KEY1)).err).toBe('makewaves: tenant shop.test has no FTP user carol\n');
  });
});
