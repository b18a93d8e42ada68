import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';
import { httpGet } from './helpers.ts';

const run = promisify(execFile);
const PASS = 'lftp-pass-5';
let t: TestSuite;

/** Runs lftp commands in one session (lftp uses FEAT, MLSD, SIZE/MDTM, REST, EPSV). */
function lftp(commands: string): Promise<{ stdout: string; stderr: string }> {
  const settings = 'set net:max-retries 1; set net:timeout 10; set cmd:fail-exit yes;';
  return run('lftp', ['-u', `liz@f.test,${PASS}`, '-e', `${settings} ${commands}; bye`, t.ftp!], { timeout: 30_000 });
}

beforeAll(async () => {
  t = await startTestSuite({
    tenants: { 'f.test': { domains: ['f.test'], quota: '1MiB', ftp: [{ user: 'liz', password: await hashPassword(PASS) }] } },
    main: { ftp: {} },
    files: { 'f.test/index.html': 'before mirror' },
  });
});
afterAll(async () => {
  await t?.stop();
});

describe('lftp', () => {
  it('mirrors a local folder tree up, lists it, and mirrors it back identically', async () => {
    const local = path.join(t.dir, 'local-site');
    mkdirSync(path.join(local, 'css'), { recursive: true });
    mkdirSync(path.join(local, 'blog', '2026'), { recursive: true });
    writeFileSync(path.join(local, 'index.html'), '<h1>mirrored</h1>');
    writeFileSync(path.join(local, 'css', 'site.css'), 'body{}');
    writeFileSync(path.join(local, 'blog', '2026', 'post.html'), 'x'.repeat(50_000));
    await lftp(`mirror -R --no-perms ${local} /`);
    expect(readFileSync(path.join(t.sitesDir, 'f.test', 'blog', '2026', 'post.html'), 'utf8')).toBe('x'.repeat(50_000));
    expect(await httpGet(t.http, 'f.test', '/')).toEqual({ status: 200, body: '<h1>mirrored</h1>' });

    const { stdout } = await lftp('cls -1 /css /blog/2026');
    expect(stdout.split('\n').filter(Boolean).sort()).toEqual(['/blog/2026/post.html', '/css/site.css']);

    const back = path.join(t.dir, 'back');
    await lftp(`mirror / ${back}`);
    expect(readdirSync(back).sort()).toEqual(['blog', 'css', 'index.html']);
    expect(readFileSync(path.join(back, 'css', 'site.css'), 'utf8')).toBe('body{}');
  });

  it('reports the quota refusal and leaves the site as it was', async () => {
    const big = path.join(t.dir, 'big.bin');
    writeFileSync(big, Buffer.alloc(2 * 1024 * 1024, 1));
    const err = await lftp(`put ${big} -o /big.bin`).then(
      () => undefined,
      (e: { stderr?: string }) => e,
    );
    expect(err?.stderr).toMatch(/552/);
    expect(readdirSync(path.join(t.sitesDir, 'f.test')).sort()).toEqual(['blog', 'css', 'index.html']);
  });
});
