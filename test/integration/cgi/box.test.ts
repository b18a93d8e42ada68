import { existsSync, readdirSync, readFileSync, realpathSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boxMissing, call, startCgiSuite, startOutsideListeners, type CgiTestSuite, type OutsideListeners } from '../../helpers/cgi.ts';

// Each tenant's handler runs in a bubblewrap box of its own: attacked from
// inside over real HTTP, every way out is shut, and the box's filesystem,
// seen from outside through /proc/<pid>/root, holds only what it should.

const fixture = (name: string) => readFileSync(path.join(import.meta.dirname, '../../fixtures/cgi', name));
let s: CgiTestSuite;
let outside: OutsideListeners;
const ABSTRACT = `\0makewaves-box-test-${process.pid}`;
const SECRET = 'victim secret 8f3a';

beforeAll(async () => {
  s = await startCgiSuite({
    tenants: { 'evil.test': { domains: ['evil.test'], cgi: true }, 'victim.test': { domains: ['victim.test'], cgi: true } },
    files: {
      'evil.test/cgi-bin/boxed.js': fixture('boxed.js'),
      'victim.test/secret.txt': SECRET,
      'victim.test/cgi-bin/boxed.js': fixture('boxed.js'),
    },
  });
  // Links a tenant could upload (over FTP, as a tar): to a system file, to a neighbour's file.
  symlinkSync('/etc/passwd', path.join(s.sitesDir, 'evil.test', 'passwd.txt'));
  symlinkSync(path.join(s.sitesDir, 'victim.test', 'secret.txt'), path.join(s.sitesDir, 'evil.test', 'neighbour.txt'));
  // Listeners a handler must not reach: a Unix socket by path (open to every user), an abstract one, UDP.
  outside = await startOutsideListeners(s.dir, ABSTRACT);
});
afterAll(async () => {
  outside?.close();
  await s?.stop();
});

async function inBox(a: string, params: Record<string, string> = {}): Promise<{ ok: boolean; code?: string; value?: unknown }> {
  const q = new URLSearchParams({ a, ...params }).toString();
  const res = await call(s.http, 'evil.test', `/cgi-bin/boxed?${q}`);
  expect(res.status).toBe(200);
  return (await res.json()) as { ok: boolean; code?: string; value?: unknown };
}

/** The handler processes (Node, inside the box) of `tenant`, found by their write grant. */
function handlerPids(tenant: string): number[] {
  const grant = `--allow-fs-write=${path.join(s.dataDir, 'cgi', tenant)}`;
  const node = realpathSync(process.execPath);
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
        return argv[0] === node && argv.includes(grant);
      } catch {
        return false; // ended meanwhile
      }
    })
    .map(Number);
}

describe.skipIf(boxMissing)('a handler in its box', () => {
  it.each([
    ['/etc/shadow'],
    ['/etc/passwd'],
    ['the suite database', () => path.join(s.dataDir, 'makewaves.db')],
    ['the suite config', () => path.join(s.dir, 'config', 'makewaves.yaml')],
    ["another tenant's file by path", () => path.join(s.sitesDir, 'victim.test', 'secret.txt')],
    ["another tenant's file by ..", () => path.join(s.sitesDir, 'evil.test', '..', 'victim.test', 'secret.txt')],
    ['/etc/passwd by a link in its root', () => path.join(s.sitesDir, 'evil.test', 'passwd.txt')],
    ["another tenant's file by a link in its root", () => path.join(s.sitesDir, 'evil.test', 'neighbour.txt')],
    ["another tenant's file by /proc/1/root", () => `/proc/1/root${path.join(s.sitesDir, 'victim.test', 'secret.txt')}`],
    ['/etc/passwd by /proc/self/root', () => '/proc/self/root/etc/passwd'],
    ["the suite's environment", () => '/proc/1/environ'],
  ])('cannot read %s', async (name, where?: () => string) => {
    const r = await inBox('read', { p: where ? where() : name });
    expect(r.ok).toBe(false);
    expect(JSON.stringify(r)).not.toContain(SECRET);
  });

  it.each([
    ['its own web root', () => path.join(s.sitesDir, 'evil.test', 'dropped.html')],
    ["another tenant's web root", () => path.join(s.sitesDir, 'victim.test', 'dropped.html')],
    ["another tenant's scratch folder", () => path.join(s.dataDir, 'cgi', 'victim.test', 'dropped')],
    ['the suite data', () => path.join(s.dataDir, 'dropped')],
    ['/tmp by .. from its scratch folder', () => path.join(s.dataDir, 'cgi', 'evil.test', '..', '..', '..', 'dropped')],
  ])('cannot write to %s', async (_name, where: () => string) => {
    const target = where();
    const r = await inBox('write', { p: target });
    expect(r.ok).toBe(false);
    expect(existsSync(path.normalize(target))).toBe(false);
  });

  it('still writes its own scratch folder', async () => {
    const file = path.join(s.dataDir, 'cgi', 'evil.test', 'kept.txt');
    expect(await inBox('write', { p: file })).toEqual({ ok: true });
    expect(readFileSync(file, 'utf8')).toBe('written from a box');
  });

  it('reaches no TCP port, UDP port, Unix socket by path or abstract socket outside, not even the suite', async () => {
    expect(await inBox('tcp', { port: String(s.port) })).toMatchObject({ ok: false });
    expect(await inBox('udp', { port: String(outside.udpPort) })).toMatchObject({ ok: false });
    expect(await inBox('unix', { p: outside.socket })).toMatchObject({ ok: false, code: 'ENOENT' });
    expect(await inBox('unix', { p: ABSTRACT })).toMatchObject({ ok: false });
  });

  it('is PID 1 of its own PID namespace, with a host name and a network of its own', async () => {
    const r = await inBox('whoami');
    expect(r.value).toEqual({ pid: 1, hostname: 'handler', interfaces: ['lo'] });
  });

  it.skipIf(process.arch !== 'x64' && process.arch !== 'arm64')('runs under the boxes\' system call filter (seccomp, from bwrap)', async () => {
    await inBox('whoami');
    const [pid] = handlerPids('evil.test');
    expect(/^Seccomp:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]).toBe('2');
  });

  it.skipIf(!existsSync('/proc/self/autogroup'))('runs in a scheduling group (autogroup) at nice 10, not one as heavy as the server\'s session', async () => {
    // The kernel takes one autogroup change per 100 ms in the whole system: the runner tries again at each request until it is taken.
    let seen = '';
    for (let i = 0; i < 20 && !/ nice 10$/.test(seen); i++) {
      await inBox('whoami');
      seen = handlerPids('evil.test').map((pid) => readFileSync(`/proc/${pid}/autogroup`, 'utf8').trim()).join(' ');
    }
    expect(seen).toMatch(/^\/autogroup-\d+ nice 10$/);
  });

  it('sees, as the kernel shows it, only the runtime, its own root and its own scratch folder', async () => {
    await inBox('whoami');
    const [pid] = handlerPids('evil.test');
    expect(pid).toBeDefined();
    const root = `/proc/${pid}/root`;
    const top = readdirSync(root);
    for (const gone of ['etc/shadow', 'etc/passwd', 'etc/hosts', 'home', 'root', 'var', 'srv', 'opt']) expect(existsSync(path.join(root, gone)), gone).toBe(false);
    expect(readdirSync(path.join(root, 'etc')).sort()).toEqual(['ld.so.cache', 'localtime'].filter((f) => existsSync(`/etc/${f}`)));
    expect(top).toEqual(expect.arrayContaining(['usr', 'proc', 'dev', 'tmp']));
    expect(readdirSync(path.join(root, s.sitesDir))).toEqual(['evil.test']);
    expect(readdirSync(path.join(root, s.dataDir))).toEqual(['cgi']);
    expect(readdirSync(path.join(root, s.dataDir, 'cgi'))).toEqual(['evil.test']);
    expect(existsSync(path.join(root, s.dir, 'config'))).toBe(false);
    expect(existsSync(path.join(root, outside.socket))).toBe(false);
    // The links resolve inside the box, where their targets do not exist.
    expect(existsSync(path.join(root, s.sitesDir, 'evil.test', 'passwd.txt'))).toBe(true);
    expect(existsSync(path.join(root, '/etc/passwd'))).toBe(false);
    // No capabilities, in a session of its own.
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    expect(status).toMatch(/CapEff:\s+0+\n/);
    expect(status).toMatch(/CapBnd:\s+0+\n/);
    expect(status).toMatch(/NoNewPrivs:\s+1/);
  });

  it("keeps two tenants' boxes apart: each sees its own web root only", async () => {
    const res = await call(s.http, 'victim.test', '/cgi-bin/boxed?a=whoami');
    expect(res.status).toBe(200);
    const [pid] = handlerPids('victim.test');
    expect(readdirSync(path.join(`/proc/${pid}/root`, s.sitesDir))).toEqual(['victim.test']);
    expect(readdirSync(path.join(`/proc/${pid}/root`, s.dataDir, 'cgi'))).toEqual(['victim.test']);
  });
});
