import type { Client } from 'basic-ftp';
import { execFile } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import { ftpLogin, rawSession, replyCode } from './helpers.ts';

const run = promisify(execFile);
const PASS = 'limits-pass-9';
// A passive range unlikely to collide with other test runs on this machine.
const PASV_BASE = 40_000 + Math.floor(Math.random() * 2_000) * 10;
let t: TestSuite;
const clients: Client[] = [];

beforeAll(async () => {
  t = await startTestSuite({
    tenants: {
      'l.test': { domains: ['l.test'], ftp: [{ user: 'lee', password: await hashPassword(PASS) }, { user: 'max', password: await hashPassword(PASS) }] },
    },
    main: {
      ftp: {
        idleTimeout: 0.6,
        maxConnectionsPerIp: 3,
        passive: { address: '127.0.0.1', ports: `${PASV_BASE}-${PASV_BASE + 9}` },
      },
    },
    files: { 'l.test/index.html': 'limits' },
  });
});

/**
 * A logged-in bare session. The per-IP cap is small here, and the server
 * frees a slot when it sees the previous test's close: wait for a 220.
 */
async function rawFresh(): Promise<Awaited<ReturnType<typeof rawSession>>> {
  const fresh = await waitFor(
    async () => {
      const r = await rawSession(t.ftp!);
      if (r.greeting.startsWith('220')) return r;
      r.close();
      return undefined;
    },
    3_000,
    'a free connection slot',
  );
  return fresh!;
}

async function rawLogin(): Promise<Awaited<ReturnType<typeof rawSession>>> {
  const raw = await rawFresh();
  await raw.send('USER lee@l.test');
  expect(await raw.send(`PASS ${PASS}`)).toMatch(/^230 /);
  return raw;
}

/** A logged-in bare session with an upload of `name` started (150 received) on an open data connection. */
async function rawUpload(name: string): Promise<{ raw: Awaited<ReturnType<typeof rawSession>>; data: Socket }> {
  const raw = await rawLogin();
  const epsv = await raw.send('EPSV');
  const data = connect(Number(/\(\|\|\|(\d+)\|\)/.exec(epsv)![1]), '127.0.0.1');
  data.on('error', () => undefined);
  await new Promise((r) => data.once('connect', r));
  expect(await raw.send(`STOR ${name}`)).toMatch(/^150 /);
  return { raw, data };
}

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

afterAll(async () => {
  await t?.stop();
});

describe('FTP limits', () => {
  it('PASV and EPSV use the configured range and address', async () => {
    const c = await ftpLogin(t.ftp!, `lee@l.test`, PASS);
    clients.push(c);
    for (let i = 0; i < 3; i++) {
      const r = await c.send('PASV');
      const m = /\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)/.exec(r.message)!;
      expect(m.slice(1, 5).join('.')).toBe('127.0.0.1');
      const port = Number(m[5]) * 256 + Number(m[6]);
      expect(port).toBeGreaterThanOrEqual(PASV_BASE);
      expect(port).toBeLessThanOrEqual(PASV_BASE + 9);
      const e = await c.send('EPSV');
      const ep = Number(/\(\|\|\|(\d+)\|\)/.exec(e.message)![1]);
      expect(ep).toBeGreaterThanOrEqual(PASV_BASE);
      expect(ep).toBeLessThanOrEqual(PASV_BASE + 9);
    }
    // Each PASV/EPSV closes the session's previous data listener: many in a row never exhaust the range.
    for (let i = 0; i < 30; i++) expect(await replyCode(c.send(i % 2 ? 'PASV' : 'EPSV'))).toBeLessThan(300);
    // And a transfer through it works.
    await c.uploadFrom(Readable.from([Buffer.from('via range')]), 'range.html');
    expect(readFileSync(path.join(t.sitesDir, 'l.test', 'range.html'), 'utf8')).toBe('via range');
  });

  it('curl uploads and downloads (passive and active toward its own address)', async () => {
    const local = path.join(t.dir, 'curl-up.txt');
    writeFileSync(local, 'sent by curl');
    const url = `${t.ftp!}/curl.html`;
    await run('curl', ['-sS', '--max-time', '10', '-T', local, '--user', `lee@l.test:${PASS}`, url]);
    expect(readFileSync(path.join(t.sitesDir, 'l.test', 'curl.html'), 'utf8')).toBe('sent by curl');
    const active = await run('curl', ['-sS', '--max-time', '10', '-P', '127.0.0.1', '--user', `lee@l.test:${PASS}`, url]);
    expect(active.stdout).toBe('sent by curl');
    writeFileSync(local, 'sent actively');
    await run('curl', ['-sS', '--max-time', '10', '-P', '127.0.0.1', '-T', local, '--user', `lee@l.test:${PASS}`, `${t.ftp!}/curl-active.html`]);
    expect(readFileSync(path.join(t.sitesDir, 'l.test', 'curl-active.html'), 'utf8')).toBe('sent actively');
  });

  /** PASV on `raw`: the data port from its 227 reply. */
  async function pasvPort(raw: Awaited<ReturnType<typeof rawLogin>>): Promise<number> {
    const m = /\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)/.exec(await raw.send('PASV'));
    return Number(m![5]) * 256 + Number(m![6]);
  }

  /** A data connection to `port` from `from`; resolves once the server has closed it (a refusal), with what it read. */
  function refusedFrom(port: number, from: string): Promise<string> {
    const sock = connect({ port, host: '127.0.0.1', localAddress: from });
    let got = '';
    sock.on('data', (d) => (got += String(d)));
    sock.on('error', () => undefined);
    return new Promise((r) => sock.once('close', () => r(got)));
  }

  const refusals = (why: string) => t.logs().filter((l) => l.msg === 'ftp passive data connection refused' && l.why === why);

  it("a PASV port takes one data connection, from the control connection's address: a stranger from another address first, and any connection after the client's, are refused and logged; the client's transfer works", async () => {
    const raw = await rawLogin(); // the control connection comes from 127.0.0.1
    const port = await pasvPort(raw);
    expect(await refusedFrom(port, '127.0.0.2')).toBe('');
    expect(refusals('another address').some((l) => l.dataFrom === '127.0.0.2' && l.control === '127.0.0.1')).toBe(true);
    const data = connect({ port, host: '127.0.0.1', localAddress: '127.0.0.1' });
    data.on('error', () => undefined);
    await new Promise((r) => data.once('connect', r));
    // The port is taken: a second connection, even from the client's own address, is refused and logged with who took it.
    expect(await refusedFrom(port, '127.0.0.1')).toBe('');
    const taken = refusals('already taken').find((l) => l.takenBy === `127.0.0.1:${data.localPort}`);
    expect(taken).toMatchObject({ dataFrom: '127.0.0.1', control: '127.0.0.1' });
    expect(await refusedFrom(port, '127.0.0.3')).toBe('');
    expect(refusals('another address').some((l) => l.dataFrom === '127.0.0.3')).toBe(true);
    expect(await raw.send('STOR own.html')).toMatch(/^150 /);
    data.end('from the client itself');
    expect(await raw.read()).toMatch(/^226 /);
    // The transfer done, the port is closed: the next transfer needs a new PASV.
    const late = connect({ port, host: '127.0.0.1' });
    expect(await new Promise((r) => late.once('error', (e: NodeJS.ErrnoException) => r(e.code)))).toBe('ECONNREFUSED');
    expect(await raw.send('RETR own.html')).toMatch(/^425 /);
    raw.close();
    expect(readFileSync(path.join(t.sitesDir, 'l.test', 'own.html'), 'utf8')).toBe('from the client itself');
  });

  it("plain FTP cannot tell programs on the client's host apart: one that connects first takes the port, and the client's own connection, refused as already taken, is logged naming it", async () => {
    const raw = await rawLogin();
    const port = await pasvPort(raw);
    const first = connect({ port, host: '127.0.0.1' });
    first.on('error', () => undefined);
    await new Promise((r) => first.once('connect', r));
    expect(await refusedFrom(port, '127.0.0.1')).toBe('');
    expect(refusals('already taken').some((l) => l.takenBy === `127.0.0.1:${first.localPort}`)).toBe(true);
    first.destroy();
    raw.close();
  });

  it('a session idle for longer than idleTimeout is closed with 421', async () => {
    const raw = await rawLogin();
    await raw.closed;
    expect(t.logs().some((l) => l.msg === 'ftp session closed: idle timeout')).toBe(true);
  });

  it('a stalled upload is aborted after idleTimeout with 426, leaving nothing behind', async () => {
    const { raw, data } = await rawUpload('stalled.bin');
    data.write(Buffer.alloc(10_000, 7)); // then nothing, ever: the client stalls mid-transfer
    expect(await raw.read()).toMatch(/^426 Connection closed; transfer aborted, \/stalled\.bin not stored/);
    data.destroy();
    raw.close();
    expect(readdirSync(path.join(t.sitesDir, 'l.test')).filter((n) => n.startsWith('.') || n === 'stalled.bin')).toEqual([]);
    expect(t.logs().some((l) => l.msg === 'ftp transfer aborted: no data moved')).toBe(true);
  });

  it('ABOR during an upload ends it with 426 then 226, storing nothing', async () => {
    const { raw, data } = await rawUpload('aborted.bin');
    data.write(Buffer.alloc(5_000, 7));
    expect(await raw.send('ABOR')).toMatch(/^426 /);
    expect(await raw.read()).toMatch(/^226 Abort successful/);
    expect(await raw.send('NOOP')).toMatch(/^200 /);
    data.destroy();
    raw.close();
    expect(readdirSync(path.join(t.sitesDir, 'l.test')).filter((n) => n.startsWith('.') || n === 'aborted.bin')).toEqual([]);
  });

  it('ABOR during a download ends it with 426 then 226; the session goes on', async () => {
    writeFileSync(path.join(t.sitesDir, 'l.test', 'huge.bin'), Buffer.alloc(32 * 1024 * 1024, 1));
    const raw = await rawLogin();
    const epsv = await raw.send('EPSV');
    const data = connect(Number(/\(\|\|\|(\d+)\|\)/.exec(epsv)![1]), '127.0.0.1');
    data.on('error', () => undefined);
    await new Promise((r) => data.once('connect', r));
    data.pause(); // a client that reads nothing: the file cannot all be sent
    expect(await raw.send('RETR huge.bin')).toMatch(/^150 /);
    expect(await raw.send('ABOR')).toMatch(/^426 /);
    expect(await raw.read()).toMatch(/^226 Abort successful/);
    expect(await raw.send('NOOP')).toMatch(/^200 /);
    data.destroy();
    raw.close();
    const log = path.join(t.dataDir, 'logs', 'l.test', 'ftp.log');
    await waitFor(() => existsSync(log) && / RETR \d+ \d+ aborted \/huge\.bin\n/.test(readFileSync(log, 'utf8')), 2_000, 'the aborted download in the transfer log');
  });

  it('an upload that cannot be put in place answers 451 with a reference, logged, and leaves no temporary', async () => {
    const { raw, data } = await rawUpload('blocked.html');
    // Meanwhile something on the host makes a non-empty folder of that name: the final rename must fail.
    mkdirSync(path.join(t.sitesDir, 'l.test', 'blocked.html', 'inner'), { recursive: true });
    data.end('content');
    const reply = await raw.read();
    expect(reply).toMatch(/^451 Local error, ref (\w+)/);
    expect(reply).not.toContain(t.sitesDir);
    const ref = /ref (\w+)/.exec(reply)![1];
    expect(t.logs().some((l) => l.ref === ref && l.level === 50)).toBe(true);
    raw.close();
    expect(readdirSync(path.join(t.sitesDir, 'l.test')).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('refuses connections over the per-IP cap with 421, and frees the slots when they close', async () => {
    const open = [];
    let refused: string | undefined;
    for (let i = 0; i < 10 && !refused; i++) {
      const s = await rawSession(t.ftp!);
      open.push(s);
      if (s.greeting.startsWith('421')) refused = s.greeting;
    }
    expect(refused).toMatch(/^421 Too many connections from your address/);
    const admitted = open.filter((s) => s.greeting.startsWith('220'));
    expect(admitted.length).toBeLessThanOrEqual(3);
    expect(t.logs().some((l) => l.msg === 'ftp connection refused' && l.why === 'per-IP connection limit' && l.remote === '127.0.0.1' && l.open === 3)).toBe(true);
    // One ends with QUIT: once the server has closed it, its slot is free, and only that one.
    expect(await admitted[0]!.send('QUIT')).toMatch(/^221 /);
    await admitted[0]!.closed;
    const next = await rawSession(t.ftp!);
    expect(next.greeting).toMatch(/^220[ -]/);
    const over = await rawSession(t.ftp!);
    expect(over.greeting).toMatch(/^421 /);
    for (const s of [...open, next, over]) s.close();
  });

  it('after 5 failed logins a user is locked out from that address for 5 minutes, even with the right password; other users are not', async () => {
    for (let i = 0; i < 5; i++) {
      const raw = await rawFresh();
      await raw.send('USER max@l.test');
      expect(await raw.send('PASS guess-' + i)).toMatch(/^530 Login incorrect/);
      raw.close();
    }
    const raw = await rawFresh();
    await raw.send('USER max@l.test');
    expect(await raw.send(`PASS ${PASS}`)).toMatch(/^530 Too many failed logins; try again in 5 minutes/);
    // The lock is of max from this address: lee logs in from it.
    await raw.send('USER lee@l.test');
    expect(await raw.send(`PASS ${PASS}`)).toMatch(/^230 /);
    raw.close();
    const locks = t.logs().filter((l) => l.msg === 'ftp login locked after repeated failures');
    expect(locks).toHaveLength(1);
    expect(locks[0]).toMatchObject({ user: 'max@l.test', locked: ['pair:max@l.test|127.0.0.1'] });
    expect(t.logs().filter((l) => l.msg === 'ftp login refused: too many failures')).toHaveLength(1);
    expect(existsSync(path.join(t.sitesDir, 'l.test', 'index.html'))).toBe(true);
  });
});

describe('FTP shutdown', () => {
  it('an upload cut by the shutdown is not stored, and its line is in the transfer log once stop() has resolved', async () => {
    const u = await startTestSuite({
      tenants: { 's.test': { domains: ['s.test'], ftp: [{ user: 'sam', password: await hashPassword(PASS) }] } },
      main: { ftp: {} },
    });
    try {
      const raw = await rawSession(u.ftp!);
      await raw.send('USER sam@s.test');
      expect(await raw.send(`PASS ${PASS}`)).toMatch(/^230 /);
      const epsv = await raw.send('EPSV');
      const data = connect(Number(/\(\|\|\|(\d+)\|\)/.exec(epsv)![1]), '127.0.0.1');
      data.on('error', () => undefined);
      await new Promise((r) => data.once('connect', r));
      expect(await raw.send('STOR cut.bin')).toMatch(/^150 /);
      data.write(Buffer.alloc(100_000, 1)); // and then nothing: the upload is still running at the shutdown
      await waitFor(() => u.logs().some((l) => l.msg === 'ftp upload' || readdirSync(path.join(u.sitesDir, 's.test')).some((n) => n.startsWith('.~mw-upload-'))), 2_000, 'the upload under way');
      await u.suite.stop(500); // the suite alone: the helper's stop() also removes its folder
      raw.close();
      data.destroy();
      const log = path.join(u.dataDir, 'logs', 's.test', 'ftp.log');
      expect(existsSync(log)).toBe(true);
      expect(readFileSync(log, 'utf8')).toMatch(/ sam@s\.test STOR \d+ \d+ aborted \/cut\.bin\n/);
      expect(readdirSync(path.join(u.sitesDir, 's.test'))).not.toContain('cut.bin');
    } finally {
      await u.stop(); // again, harmless, and the folder goes
    }
  });
});
