import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';
import { httpGet, rawSession } from './helpers.ts';

const run = promisify(execFile);
const PASS = 'commands-pass-7';
let t: TestSuite;

beforeAll(async () => {
  t = await startTestSuite({
    tenants: { 'c.test': { domains: ['c.test'], ftp: [{ user: 'cy', password: await hashPassword(PASS) }] } },
    main: { ftp: {} },
    files: { 'c.test/index.html': 'before', 'c.test/old.html': 'old' },
  });
});
afterAll(async () => {
  await t?.stop();
});

async function loggedIn(): Promise<Awaited<ReturnType<typeof rawSession>>> {
  const raw = await rawSession(t.ftp!);
  await raw.send('USER cy@c.test');
  expect(await raw.send(`PASS ${PASS}`)).toMatch(/^230 /);
  return raw;
}

/** Opens a passive data connection to `port` (as clients do right after EPSV); `send` writes `data` and closes it. */
async function dataTo(port: number): Promise<{ send(data: string): Promise<void> }> {
  const s = connect(port, '127.0.0.1');
  s.on('error', () => undefined);
  await new Promise((r) => s.once('connect', r));
  return { send: (data) => new Promise<void>((resolve) => s.end(data, () => resolve())) };
}

const epsvPort = (reply: string) => Number(/\(\|\|\|(\d+)\|\)/.exec(reply)![1]);
const site = (...p: string[]) => path.join(t.sitesDir, 'c.test', ...p);

describe('FTP commands real clients rely on', () => {
  it('OPTS UTF8 ON is accepted before login (200)', async () => {
    const raw = await rawSession(t.ftp!);
    expect(await raw.send('OPTS UTF8 ON')).toMatch(/^200 /);
    expect(await raw.send('OPTS UTF-8 ON')).toMatch(/^200 /);
    expect(await raw.send('OPTS UTF8 OFF')).toMatch(/^50\d /);
    raw.close();
  });

  it('OPTS without an option is refused with 501 (a syntax error), not a local error', async () => {
    const raw = await loggedIn();
    expect(await raw.send('OPTS')).toMatch(/^501 /);
    expect(await raw.send('NOOP')).toMatch(/^200 /);
    raw.close();
    expect(t.logs().some((l) => l.msg === 'ftp command failed')).toBe(false);
    expect(t.logs().some((l) => l.msg === 'ftp command refused' && l.why === 'OPTS without an option')).toBe(true);
  });

  it('bare STOU stores under a unique name and names it (RFC 1123 §4.1.2.9: 150 FILE: name, then 226)', async () => {
    const raw = await loggedIn();
    const data = await dataTo(epsvPort(await raw.send('EPSV')));
    const first = await raw.send('STOU');
    const m = /^150 FILE: (\S+)\r\n$/.exec(first);
    expect(m).not.toBeNull();
    await data.send('unique bytes');
    expect(await raw.read()).toMatch(/^226 /);
    const name = m![1]!;
    expect(readFileSync(site(name.replace(/^\//, '')), 'utf8')).toBe('unique bytes');
    // STOU with a name that exists keeps the old file and names the new one.
    const data2 = await dataTo(epsvPort(await raw.send('EPSV')));
    const second = /^150 FILE: (\S+)\r\n$/.exec(await raw.send('STOU old.html'));
    expect(second![1]).not.toBe('old.html');
    await data2.send('new');
    expect(await raw.read()).toMatch(/^226 /);
    expect(readFileSync(site('old.html'), 'utf8')).toBe('old');
    expect(readFileSync(site(second![1]!.replace(/^\//, '')), 'utf8')).toBe('new');
    raw.close();
  });

  it('EPSV ALL (RFC 2428 §4) answers 200 and then refuses PORT, PASV and EPRT; EPSV still works', async () => {
    const raw = await loggedIn();
    expect(await raw.send('EPSV ALL')).toMatch(/^200 /);
    expect(await raw.send('PASV')).toMatch(/^5\d\d /);
    expect(await raw.send('PORT 127,0,0,1,200,10')).toMatch(/^5\d\d /);
    expect(await raw.send('EPRT |1|127.0.0.1|51210|')).toMatch(/^5\d\d /);
    expect(await raw.send('EPSV')).toMatch(/^229 /);
    raw.close();
    expect(t.logs().some((l) => l.msg === 'ftp command refused' && l.why === 'EPSV ALL')).toBe(true);
  });

  it.each([
    ['EPSV 3', /^522 .*\(1\)/],
    ['EPSV 2', /^522 .*\(1\)/],
    ['EPSV x', /^522 /],
    ['EPSV 1', /^229 /],
    ['EPRT |3|127.0.0.1|51210|', /^522 .*\(1,2\)/],
  ])('%s on an IPv4 control connection → %s', async (line, reply) => {
    const raw = await loggedIn();
    expect(await raw.send(line)).toMatch(reply);
    raw.close();
  });

  it('MFMT sets a file time (draft-somers-ftp-mfxx) and answers 213 Modify=; refuses bad times, missing files, folders outside', async () => {
    const raw = await loggedIn();
    expect(await raw.send('MFMT 20200102030405 index.html')).toBe('213 Modify=20200102030405; /index.html\r\n');
    expect(statSync(site('index.html')).mtime.toISOString()).toBe('2020-01-02T03:04:05.000Z');
    expect(await raw.send('MDTM index.html')).toBe('213 20200102030405\r\n');
    expect(await raw.send('MFMT 20201302030405 index.html')).toMatch(/^501 /);
    expect(await raw.send('MFMT yesterday index.html')).toMatch(/^501 /);
    expect(await raw.send('MFMT 20200102030405 missing.html')).toMatch(/^550 /);
    expect(await raw.send('MFMT 20200102030405 ../c.test2/x')).toMatch(/^550 /);
    expect(await raw.send('FEAT')).toContain(' MFMT\r\n');
    raw.close();
    const anon = await rawSession(t.ftp!);
    expect(await anon.send('MFMT 20200102030405 index.html')).toMatch(/^530 /);
    anon.close();
  });

  it('SITE CHMOD is answered 200 and changes nothing (modes are the host’s to set); other SITE commands stay refused', async () => {
    const raw = await loggedIn();
    const before = statSync(site('old.html')).mode;
    expect(await raw.send('SITE CHMOD 777 old.html')).toMatch(/^200 /);
    expect(statSync(site('old.html')).mode).toBe(before);
    expect(await raw.send('SITE EXEC ls')).toMatch(/^502 /);
    raw.close();
  });
});

describe('lftp mirror -R --overwrite, as docs/ftp.md shows it', () => {
  it('uploads a tree with permissions and file times, exits 0, and HTTP serves the files', async () => {
    const local = path.join(t.dir, 'my-site');
    mkdirSync(path.join(local, 'css'), { recursive: true });
    writeFileSync(path.join(local, 'index.html'), '<h1>mirrored</h1>');
    writeFileSync(path.join(local, 'css', 'site.css'), 'body{}');
    const when = new Date('2021-06-07T08:09:10Z');
    utimesSync(path.join(local, 'css', 'site.css'), when, when);
    // Modes other than the defaults make lftp send SITE CHMOD for each (it fails the run on an error reply).
    chmodSync(path.join(local, 'index.html'), 0o640);
    chmodSync(path.join(local, 'css'), 0o750);
    const { stderr } = await run('lftp', ['-u', `cy@c.test,${PASS}`, '-e', `set cmd:fail-exit yes; mirror -R --overwrite ${local} /; bye`, t.ftp!], { timeout: 30_000 });
    expect(stderr).toBe('');
    expect(await httpGet(t.http, 'c.test', '/')).toEqual({ status: 200, body: '<h1>mirrored</h1>' });
    expect(await httpGet(t.http, 'c.test', '/css/site.css')).toEqual({ status: 200, body: 'body{}' });
    expect(statSync(site('css', 'site.css')).mtime.toISOString()).toBe(when.toISOString());
    expect(existsSync(site('old.html'))).toBe(true);
  });
});
