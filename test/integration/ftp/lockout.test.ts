import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { runCli } from '../../helpers/cli.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';
import { rawSession } from './helpers.ts';

const run = promisify(execFile);
const PASS = 'lockout-pass-4';
let t: TestSuite;

beforeAll(async () => {
  const hash = await hashPassword(PASS);
  t = await startTestSuite({
    tenants: {
      'k.test': { domains: ['k.test'], ftp: ['alice', 'bob', 'carol', 'dave'].map((user) => ({ user, password: hash })) },
    },
    main: {
      ftp: {
        maxConnectionsPerIp: 40,
        lockout: { failures: 3, accountFailures: 6, addressFailures: 50, windowSeconds: 600, lockSeconds: 300 },
      },
    },
    files: { 'k.test/index.html': 'lockout' },
  });
});
afterAll(async () => {
  await t?.stop();
});

/**
 * One login with curl from a loopback address of its own (`--interface`),
 * listing the root: curl's exit code, 0 when logged in, 67 when the login
 * was refused.
 */
async function curlLogin(from: string, user: string, password: string): Promise<number> {
  try {
    await run('curl', ['-sS', '--max-time', '10', '--interface', from, '--user', `${user}:${password}`, `${t.ftp}/`]);
    return 0;
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
}

const failedChecks = (user: string) => t.logs().filter((l) => l.msg === 'ftp login failed' && l.user === user).length;

describe('FTP login lockout: counted per (account, address), with an account ceiling', () => {
  it("failures from one address lock that address out of the account; the right password from another address still works; other accounts are untouched", async () => {
    for (let i = 0; i < 3; i++) expect(await curlLogin('127.0.0.2', 'alice@k.test', `guess-${i}`)).toBe(67);
    // Locked for this address, even with the right password.
    expect(await curlLogin('127.0.0.2', 'alice@k.test', PASS)).toBe(67);
    expect(failedChecks('alice@k.test')).toBe(3);
    expect(t.logs().some((l) => l.msg === 'ftp login refused: too many failures' && l.user === 'alice@k.test' && l.remote === '127.0.0.2')).toBe(true);
    // Another address that never failed logs in; so does another account from the locked address.
    expect(await curlLogin('127.0.0.3', 'alice@k.test', PASS)).toBe(0);
    expect(await curlLogin('127.0.0.2', 'bob@k.test', PASS)).toBe(0);
  });

  it('failures spread over addresses lock the account at the slower account ceiling', async () => {
    for (const from of ['127.0.0.4', '127.0.0.5']) {
      for (let i = 0; i < 3; i++) expect(await curlLogin(from, 'carol@k.test', `guess-${i}`)).toBe(67);
    }
    expect(await curlLogin('127.0.0.6', 'carol@k.test', PASS)).toBe(67);
    const lock = t.logs().find((l) => l.msg === 'ftp login locked after repeated failures' && l.user === 'carol@k.test' && (l.locked as string[]).includes('account:carol@k.test'));
    expect(lock).toBeDefined();
  });

  it('`makewaves ftp unlock USER` lifts the locks of a running server at once', async () => {
    expect(await curlLogin('127.0.0.2', 'alice@k.test', PASS)).toBe(67);
    const locks = await runCli('ftp', 'locks', '-c', t.configDir);
    expect(locks.code).toBe(0);
    expect(locks.out).toMatch(/alice@k\.test\s+from 127\.0\.0\.2/);
    expect(locks.out).toMatch(/carol@k\.test\s+from any address/);
    const res = await runCli('ftp', 'unlock', 'Alice@K.test', '-c', t.configDir);
    expect(res).toMatchObject({ code: 0, err: '' });
    expect(res.out).toMatch(/^alice@k\.test: 1 lock lifted/);
    expect(await curlLogin('127.0.0.2', 'alice@k.test', PASS)).toBe(0);
    expect(await curlLogin('127.0.0.6', 'carol@k.test', PASS)).toBe(67);
    expect((await runCli('ftp', 'unlock', 'carol@k.test', '-c', t.configDir)).code).toBe(0);
    expect(await curlLogin('127.0.0.6', 'carol@k.test', PASS)).toBe(0);
  });

  it('an unlock of a login that has no lock says so and exits 0; a name that cannot be a login exits 1', async () => {
    expect((await runCli('ftp', 'unlock', 'nobody@k.test', '-c', t.configDir)).out).toMatch(/^nobody@k\.test: no lock in force/);
    const bad = await runCli('ftp', 'unlock', 'not a login', '-c', t.configDir);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/user@tenant/);
  });

  it('parallel sessions never get more password checks than the limit (the count is taken before the check)', async () => {
    // 10 sessions × 3 wrong passwords, all at once, from one address against one account.
    const sessions = await Promise.all(Array.from({ length: 10 }, () => rawSession(t.ftp!)));
    const replies = await Promise.all(
      sessions.map(async (raw) => {
        const out: string[] = [];
        for (let i = 0; i < 3; i++) {
          await raw.send('USER dave@k.test');
          out.push(await raw.send(`PASS guess-${i}`));
        }
        raw.close();
        return out;
      }),
    );
    const all = replies.flat();
    expect(all).toHaveLength(30);
    expect(all.every((r) => r.startsWith('530 '))).toBe(true);
    expect(failedChecks('dave@k.test')).toBeLessThanOrEqual(3);
    expect(all.filter((r) => /^530 Login incorrect/.test(r)).length).toBeLessThanOrEqual(3);
  });
});
