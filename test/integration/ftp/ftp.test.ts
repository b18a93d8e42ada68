import type { Client } from 'basic-ftp';
import { existsSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import { download, ftpConnect, ftpLogin, httpGet, rawSession, replyCode, upload } from './helpers.ts';

const PASS_A = 'apple-pass-1';
const PASS_B = 'banana-pass-2';
let t: TestSuite;
let ftpUrl: string;
const clients: Client[] = [];

/** a.test's transfer log so far ('' before its first batch is written: lines go out every 250 ms). */
function transferLog(): string {
  const file = path.join(t.dataDir, 'logs', 'a.test', 'ftp.log');
  return existsSync(file) ? readFileSync(file, 'utf8') : '';
}

async function asA(): Promise<Client> {
  const c = await ftpLogin(ftpUrl, 'ann@a.test', PASS_A);
  clients.push(c);
  return c;
}

beforeAll(async () => {
  t = await startTestSuite({
    tenants: {
      'a.test': { domains: ['a.test'], quota: '2MiB', ftp: [{ user: 'ann', password: await hashPassword(PASS_A) }] },
      // The sibling whose name extends a.test's: `/sites/a.test` is a string prefix of `/sites/a.test2`.
      'a.test2': { domains: ['a.test2'], quota: '64KiB', ftp: [{ user: 'ben', password: await hashPassword(PASS_B) }] },
    },
    // The HTTP cache trusts entries for a minute: an upload must show at once only because FTP says so.
    main: { ftp: {}, http: { cacheRevalidate: 60 } },
    files: {
      'a.test/index.html': 'home of a',
      'a.test/sub/page.html': 'a page',
      'a.test2/secret.html': 'secret of a.test2',
    },
  });
  ftpUrl = t.ftp!;
  // Links a tenant could never make itself (an operator's mistake, or an unpacked archive).
  symlinkSync(path.join(t.sitesDir, 'a.test2'), path.join(t.sitesDir, 'a.test', 'to-sibling'));
  symlinkSync('/etc', path.join(t.sitesDir, 'a.test', 'to-etc'));
  symlinkSync('/etc/hostname', path.join(t.sitesDir, 'a.test', 'hostname'));
  symlinkSync('sub', path.join(t.sitesDir, 'a.test', 'inside-link'));
});

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

afterAll(async () => {
  await t?.stop();
});

describe('FTP: logins', () => {
  it('reports its URL through the suite', () => {
    expect(ftpUrl).toMatch(/^ftp:\/\/127\.0\.0\.1:\d+$/);
  });

  it('refuses anonymous, logins without a tenant, and wrong passwords with 530; never logs a password', async () => {
    for (const [user, pass] of [
      ['anonymous', 'guest@'],
      ['ann', PASS_A],
      ['ann@a.test', 'Wr0ngSecret'],
    ]) {
      const c = await ftpConnect(ftpUrl);
      clients.push(c);
      expect(await replyCode(c.send(`USER ${user}`))).toBe(331);
      expect(await replyCode(c.send(`PASS ${pass}`))).toBe(530);
      // RFC 959: the client may try again on the same connection.
      expect(await replyCode(c.send('USER ann@a.test'))).toBe(331);
      expect(await replyCode(c.send(`PASS ${PASS_A}`))).toBe(230);
    }
    const failures = t.logs().filter((l) => l.msg === 'ftp login failed');
    expect(failures.map((l) => l.why)).toEqual(['not a user@tenant login', 'not a user@tenant login', 'wrong password']);
    const all = JSON.stringify(t.logs());
    for (const secret of [PASS_A, PASS_B, 'Wr0ngSecret', 'guest@']) expect(all).not.toContain(secret);
  });

  it('logs in case-insensitively and starts in the tenant root', async () => {
    const c = await ftpLogin(ftpUrl, 'ANN@A.TEST', PASS_A);
    clients.push(c);
    expect(await c.pwd()).toBe('/');
    const names = (await c.list()).map((f) => f.name).sort();
    // Links that leave the root (hostname, to-etc, to-sibling) are not listed.
    expect(names).toEqual(['index.html', 'inside-link', 'sub']);
  });
});

describe('FTP: reload', () => {
  it('a new user and a new password take effect on reload; open sessions go on', async () => {
    const open = await asA();
    const newPass = 'after-reload-4';
    t.writeTenant('a.test2', { domains: ['a.test2'], quota: '64KiB', ftp: [{ user: 'ben', password: await hashPassword(PASS_B) }, { user: 'cy', password: await hashPassword(newPass) }] });
    await waitFor(() => t.suite.registry().ftpAccount('cy@a.test2'), 5_000, 'the reload');
    const c = await ftpLogin(ftpUrl, 'cy@a.test2', newPass);
    clients.push(c);
    expect((await c.list()).map((f) => f.name)).toContain('secret.html');
    expect(await open.pwd()).toBe('/');
  });
});

describe('FTP: uploads', () => {
  it('an upload is served over HTTP at once, and so is its replacement', async () => {
    const c = await asA();
    await upload(c, 'fresh.html', 'version one');
    expect(await httpGet(t.http, 'a.test', '/fresh.html')).toEqual({ status: 200, body: 'version one' });
    await upload(c, 'fresh.html', 'version two, longer');
    expect(await httpGet(t.http, 'a.test', '/fresh.html')).toEqual({ status: 200, body: 'version two, longer' });
    await upload(c, 'sub/new.html', 'in a folder');
    expect(await download(c, '/sub/new.html')).toBe('in a folder');
    await waitFor(() => / 127\.0\.0\.1 ann@a\.test STOR 11 \d+ ok \/fresh\.html\n/.test(transferLog()), 2_000, 'the upload in the transfer log');
  });

  it('HTTP readers see the old or the new file whole while it is replaced, never a mix or a temporary', async () => {
    const c = await asA();
    const A = 'A'.repeat(300_000);
    const B = 'B'.repeat(200_000);
    await upload(c, 'swap.html', A);
    let stop = false;
    const seen = new Set<string>();
    const reader = (async () => {
      let n = 0;
      while (!stop && n < 2_000) {
        n++;
        const r = await httpGet(t.http, 'a.test', '/swap.html');
        expect(r.status).toBe(200);
        expect(r.body === A || r.body === B).toBe(true);
        seen.add(r.body[0]!);
      }
    })();
    for (let i = 0; i < 6; i++) await upload(c, 'swap.html', i % 2 === 0 ? B : A);
    stop = true;
    await reader;
    expect(seen.has('A') || seen.has('B')).toBe(true);
    expect(readdirSync(path.join(t.sitesDir, 'a.test')).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('APPE appends and REST+STOR resumes, within the quota', async () => {
    const c = await asA();
    await upload(c, 'log.txt', 'one,');
    expect(await replyCode(c.appendFrom((await import('node:stream')).Readable.from([Buffer.from('two')]), 'log.txt'))).toBe(226);
    expect(await download(c, 'log.txt')).toBe('one,two');
    expect(await replyCode(c.send('REST 4'))).toBe(350);
    await upload(c, 'log.txt', 'TWO!');
    expect(await download(c, 'log.txt')).toBe('one,TWO!');
    expect(await replyCode(c.send('REST 99'))).toBe(350);
    expect(await replyCode(upload(c, 'log.txt', 'x'))).toBe(554);
    expect(await download(c, 'log.txt')).toBe('one,TWO!');
  });

  it('an upload over the quota is cut off with 552, its data removed, the old file intact', async () => {
    const c = await ftpLogin(ftpUrl, 'ben@a.test2', PASS_B);
    clients.push(c);
    await upload(c, 'keep.html', 'old content');
    expect(await replyCode(upload(c, 'huge.bin', Buffer.alloc(100_000, 1)))).toBe(552);
    expect(await replyCode(upload(c, 'keep.html', Buffer.alloc(70_000, 2)))).toBe(552);
    const files = readdirSync(path.join(t.sitesDir, 'a.test2')).sort();
    expect(files).toEqual(['keep.html', 'secret.html']);
    expect(readFileSync(path.join(t.sitesDir, 'a.test2', 'keep.html'), 'utf8')).toBe('old content');
    // The usage was given back: a file that fits still goes in.
    expect(await replyCode(upload(c, 'fits.bin', Buffer.alloc(40_000, 3)))).toBe(226);
    expect(t.logs().some((l) => l.msg === 'ftp upload cut off: quota exceeded' && l.tenant === 'a.test2')).toBe(true);
    await c.remove('fits.bin');
  });
});

describe('FTP: the quota and a file deleted during its replacement', () => {
  it('a STOR replacing a file deleted meanwhile gets no credit for it: past the quota it is cut off', async () => {
    const c = await ftpLogin(ftpUrl, 'ben@a.test2', PASS_B);
    const other = await ftpLogin(ftpUrl, 'ben@a.test2', PASS_B);
    clients.push(c, other);
    const site = path.join(t.sitesDir, 'a.test2');
    await upload(c, 'swap.bin', Buffer.alloc(50_000, 1));
    const source = new Readable({ read: () => undefined });
    const stored = replyCode(c.uploadFrom(source, 'swap.bin'));
    // The STOR has begun (its temporary is there, the old file's 50,000 bytes counted as to be freed) ...
    await waitFor(() => readdirSync(site).some((n) => n.startsWith('.~mw-upload-')), 5_000, 'the upload temporary');
    // ... when the old file is deleted over another connection: its bytes are given back now, not again at the commit.
    await other.remove('swap.bin');
    source.push(Buffer.alloc(100_000, 2));
    source.push(null);
    // 100,000 bytes in a 64 KiB quota.
    expect(await stored).toBe(552);
    expect(existsSync(path.join(site, 'swap.bin'))).toBe(false);
    expect(readdirSync(site).filter((n) => n.startsWith('.'))).toEqual([]);
  });
});

describe('FTP: the jail', () => {
  it('one tenant cannot see or touch another tenant’s files (sibling-prefix roots)', async () => {
    const c = await asA();
    for (const cmd of ['CWD ..', 'CWD ../a.test2', 'CWD /../a.test2', 'SIZE ../a.test2/secret.html', 'MDTM /../a.test2/secret.html', 'DELE ../a.test2/secret.html', 'RNFR ../a.test2/secret.html', 'MKD ../a.test2/x', 'MLST ../a.test2']) {
      expect(await replyCode(c.sendIgnoringError(cmd)), cmd).toBe(550);
    }
    await expect(download(c, '../a.test2/secret.html')).rejects.toMatchObject({ code: 550 });
    expect(await replyCode(upload(c, '../a.test2/evil.html', 'x'))).toBe(550);
    expect(await replyCode(upload(c, '/../../a.test2/evil.html', 'x'))).toBe(550);
    expect(readdirSync(path.join(t.sitesDir, 'a.test2')).sort()).toEqual(['keep.html', 'secret.html']);
    expect(await c.pwd()).toBe('/');
  });

  it('a symlink out of the root is refused for RETR, STOR, LIST, MLSD, MLST, CWD, DELE, RNFR, SIZE', async () => {
    const c = await asA();
    for (const target of ['to-sibling', 'to-etc', 'hostname']) {
      for (const cmd of [`CWD ${target}`, `DELE ${target}`, `RNFR ${target}`, `SIZE ${target}`, `MLST ${target}`, `MDTM ${target}`, `RMD ${target}`]) {
        expect(await replyCode(c.sendIgnoringError(cmd)), cmd).toBe(550);
      }
    }
    await expect(download(c, 'hostname')).rejects.toMatchObject({ code: 550 });
    await expect(download(c, 'to-sibling/secret.html')).rejects.toMatchObject({ code: 550 });
    await expect(download(c, 'to-etc/passwd')).rejects.toMatchObject({ code: 550 });
    await expect(c.list('to-sibling')).rejects.toMatchObject({ code: 550 });
    await expect(c.list('to-etc')).rejects.toMatchObject({ code: 550 });
    expect(await replyCode(upload(c, 'to-sibling/evil.html', 'x'))).toBe(550);
    expect(await replyCode(upload(c, 'hostname', 'x'))).toBe(550);
    expect(await replyCode(c.sendIgnoringError('RNFR index.html'))).toBe(350);
    expect(await replyCode(c.sendIgnoringError('RNTO to-sibling/stolen.html'))).toBe(550);
    expect(readdirSync(path.join(t.sitesDir, 'a.test2')).sort()).toEqual(['keep.html', 'secret.html']);
    expect(existsSync(path.join(t.sitesDir, 'a.test', 'index.html'))).toBe(true);
    // A link that stays inside works like the folder it names.
    expect(await download(c, 'inside-link/page.html')).toBe('a page');
    // ... but is never renamed (nor is a folder holding one): renamed where a real folder stood, it would turn a
    // path checked a moment before into one through the link when opened.
    expect(await replyCode(c.sendIgnoringError('RNFR inside-link'))).toBe(350);
    const moved = await c.sendIgnoringError('RNTO sub2');
    expect(moved.code).toBe(550);
    expect(moved.message).toMatch(/links are renamed only by the hosting provider/);
    expect(readdirSync(path.join(t.sitesDir, 'a.test'))).toContain('inside-link');
    const refusals = t.logs().filter((l) => l.msg === 'ftp path refused' && l.why === 'symlink escape');
    expect(refusals.length).toBeGreaterThan(10);
  });

  it('hostile path forms are refused in FTP words, never with a host path', async () => {
    const c = await asA();
    const cases: Array<[string, number]> = [
      ['CWD a\\..\\..\\etc', 553],
      ['MKD ..\\evil', 553],
      ['MKD .hidden', 553],
      [`MKD ${'n'.repeat(300)}`, 553],
      [`CWD ${'d/'.repeat(600)}`, 553],
      ['CWD %2e%2e', 550], // literal name: not decoded, and no such folder
      ['CWD /sub/../..', 550],
    ];
    for (const [cmd, code] of cases) {
      const r = await c.sendIgnoringError(cmd);
      expect(r.code, cmd).toBe(code);
      expect(r.message).not.toContain(t.sitesDir);
    }
    // Clients will not send a NUL; a bare connection does.
    const raw = await rawSession(ftpUrl);
    await raw.send('USER ann@a.test');
    expect(await raw.send(`PASS ${PASS_A}`)).toMatch(/^230 /);
    expect(await raw.send('CWD sub\u0000/../..')).toMatch(/^553 /);
    expect(await raw.send(Buffer.from([0x43, 0x57, 0x44, 0x20, 0xff, 0xfe, 0x2e, 0x2e]))).toMatch(/^550 /);
    expect(await raw.send('PWD')).toMatch(/^257 "\/"/);
    raw.close();
    expect(await replyCode(c.sendIgnoringError('SITE CHMOD 777 index.html'))).toBe(200); // a no-op: modes stay the host's
    expect(await replyCode(c.sendIgnoringError('SITE EXEC ls'))).toBe(502);
  });

  it('a refused or failed command never shows a host path', async () => {
    const c = await asA();
    const logsBefore = t.logs().length;
    for (const cmd of ['CWD nowhere', 'SIZE nowhere', 'RMD sub', 'DELE sub', 'MKD sub']) {
      const r = await c.sendIgnoringError(cmd);
      expect(r.code, cmd).toBeGreaterThanOrEqual(500);
      expect(r.message).not.toContain(t.dir);
    }
    expect(t.logs().length).toBeGreaterThanOrEqual(logsBefore);
  });
});

describe('FTP: protocol', () => {
  it('FEAT lists MLST, SIZE, MDTM, REST STREAM, UTF8, EPSV; MLSD and MLST answer (RFC 3659)', async () => {
    const c = await asA();
    const feat = (await c.send('FEAT')).message;
    // basic-ftp's OPTS MLST at login chose its facts; FEAT stars the ones selected (RFC 3659 §7.8).
    for (const f of ['MLST type*;size*;modify*;', 'SIZE', 'MDTM', 'REST STREAM', 'UTF8', 'EPSV', 'EPRT']) expect(feat).toContain(` ${f}`);
    expect(feat).not.toContain('AUTH TLS');
    const mlst = await c.send('MLST /sub/page.html');
    expect(mlst.code).toBe(250);
    expect(mlst.message).toMatch(/\n type=file;size=6;modify=\d{14};[^ ]* \/sub\/page\.html\r?\n250 End/);
    expect(await replyCode(c.send('OPTS MLST type;size;modify;perm;UNIX.mode;'))).toBe(200);
    expect((await c.send('MLST /sub/page.html')).message).toMatch(/ type=file;size=6;modify=\d{14};perm=adfrw;UNIX\.mode=0644; \/sub\/page\.html/);
    // basic-ftp lists with MLSD once FEAT shows MLST.
    const list = await c.list('/sub');
    expect(list.map((f) => [f.name, f.size])).toContainEqual(['page.html', 6]);
    expect(await replyCode(c.send('OPTS MLST type;size;'))).toBe(200);
    expect((await c.send('MLST index.html')).message).toMatch(/ type=file;size=\d+; \/index\.html/);
    expect(await c.size('index.html')).toBe(9);
    expect((await c.lastMod('index.html'))?.getTime()).toBeGreaterThan(0);
  });

  it('PORT and EPRT toward another address, or a privileged port, are refused (FTP bounce)', async () => {
    const c = await asA();
    for (const cmd of ['PORT 10,0,0,1,200,10', 'PORT 127,0,0,2,200,10', 'EPRT |1|192.0.2.1|5000|', 'EPRT |2|::1|5000|', 'PORT 127,0,0,1,0,25']) {
      expect(await replyCode(c.sendIgnoringError(cmd)), cmd).toBe(500);
    }
    expect(await replyCode(c.sendIgnoringError('PORT 1,2,3'))).toBe(501);
    const bounces = t.logs().filter((l) => l.msg === 'ftp active connection refused (bounce)');
    expect(bounces.length).toBe(5);
  });

  it('an over-long command line is refused and the session goes on', async () => {
    const c = await asA();
    expect(await replyCode(c.sendIgnoringError(`NOOP ${'x'.repeat(10_000)}`))).toBe(500);
    await waitFor(async () => (await c.sendIgnoringError('NOOP')).code === 200, 2_000, 'a NOOP after the long line');
    expect(await c.pwd()).toBe('/');
  });

  it('the data folder logs every transfer for the tenant', async () => {
    await waitFor(() => / RETR \d+ \d+ ok \/sub\/new\.html\n/.test(transferLog()), 2_000, 'the download in the transfer log');
    expect(transferLog()).not.toContain(t.sitesDir);
  });
});

describe('FTP: downloads', () => {
  it('RETR sends a 1.5 MiB file byte for byte, and from a REST offset only the rest; each is in the transfer log', async () => {
    const data = Buffer.alloc(1_500_000);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i, i);
    writeFileSync(path.join(t.sitesDir, 'a.test', 'big.bin'), data);
    const c = await asA();
    const whole: Buffer[] = [];
    await c.downloadTo(new Writable({ write: (chunk: Buffer, _e, cb) => (whole.push(chunk), cb()) }), 'big.bin');
    expect(Buffer.concat(whole).equals(data)).toBe(true);
    const rest: Buffer[] = [];
    await c.downloadTo(new Writable({ write: (chunk: Buffer, _e, cb) => (rest.push(chunk), cb()) }), 'big.bin', 1_000_000);
    expect(Buffer.concat(rest).equals(data.subarray(1_000_000))).toBe(true);
    await waitFor(() => / RETR 500000 \d+ ok \/big\.bin\n/.test(transferLog()), 2_000, 'the REST download in the transfer log');
    expect(transferLog()).toMatch(/ RETR 1500000 \d+ ok \/big\.bin\n/);
    rmSync(path.join(t.sitesDir, 'a.test', 'big.bin'));
  });

  it('RETR of a folder, a missing file or a REST past the end is refused before any data connection is used', async () => {
    const c = await asA();
    await expect(c.downloadTo(new Writable({ write: (_c, _e, cb) => cb() }), 'sub')).rejects.toThrow(/550 .*not a plain file/);
    await expect(c.downloadTo(new Writable({ write: (_c, _e, cb) => cb() }), 'nothing.html')).rejects.toThrow(/550 /);
    await expect(c.downloadTo(new Writable({ write: (_c, _e, cb) => cb() }), 'index.html', 10_000)).rejects.toThrow(/554 /);
    expect(await c.pwd()).toBe('/');
  });
});

describe('FTP: ABOR', () => {
  async function loggedIn() {
    const raw = await rawSession(ftpUrl);
    await raw.send('USER ann@a.test');
    expect(await raw.send(`PASS ${PASS_A}`)).toMatch(/^230 /);
    return raw;
  }

  it('ABOR while a STOR still waits for its data connection ends the wait at once (not after the 30 s data timeout)', async () => {
    const raw = await loggedIn();
    expect(await raw.send('EPSV')).toMatch(/^229 /);
    // The client never connects; a plain STOR says 150 only once it has (see store()), so ABOR follows at once.
    const t0 = Date.now();
    expect(await raw.send('STOR never.html\r\nABOR')).toMatch(/^425 /);
    expect(await raw.read()).toMatch(/^226 /);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(await raw.send('NOOP')).toMatch(/^200 /);
    raw.close();
    expect(existsSync(path.join(t.sitesDir, 'a.test', 'never.html'))).toBe(false);
    // The temporary opened while the data connection was awaited is gone too.
    expect(readdirSync(path.join(t.sitesDir, 'a.test')).filter((n) => n.startsWith('.~mw-upload'))).toEqual([]);
  });

  it('ABOR with no transfer running answers 225 and drops the waiting data listener', async () => {
    const raw = await loggedIn();
    expect(await raw.send('EPSV')).toMatch(/^229 /);
    expect(await raw.send('ABOR')).toMatch(/^225 /);
    expect(await raw.send('NOOP')).toMatch(/^200 /);
    raw.close();
  });
});

describe('FTP: pipelining', () => {
  it('a burst of pipelined commands is answered in order, one reply each', async () => {
    const raw = await rawSession(ftpUrl);
    await raw.send('USER ann@a.test');
    expect(await raw.send(`PASS ${PASS_A}`)).toMatch(/^230 /);
    const replies: string[] = [];
    const first = raw.send(Buffer.from(Array.from({ length: 500 }, (_, i) => (i % 2 ? 'PWD' : 'NOOP')).join('\r\n')));
    replies.push(await first);
    for (let i = 1; i < 500; i++) replies.push(await raw.read());
    expect(replies.map((r) => r.slice(0, 3))).toEqual(Array.from({ length: 500 }, (_, i) => (i % 2 ? '257' : '200')));
    raw.close();
  });
});
