import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostKeyFingerprints } from '../../../src/core/hostkeys.ts';
import { hashPassword } from '../../../src/lib/password.ts';
import { runCli } from '../../helpers/cli.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import { httpGet } from './helpers.ts';

const HAVE_SFTP = spawnSync('sftp', ['-V']).error === undefined && spawnSync('ssh-keygen', ['-?']).error === undefined;
const PASS = 'sftp-pass-7';

/** ssh2's SFTP client calls as promises, for the tests below. */
function calls(sftp: ssh2.SFTPWrapper) {
  const done = <T>(resolve: (v: T) => void, reject: (e: Error) => void) => (err: Error | null | undefined, v?: T) => (err ? reject(err) : resolve(v as T));
  return {
    put: (p: string, data: Buffer | string) => new Promise<void>((resolve, reject) => sftp.writeFile(p, data, done(resolve, reject))),
    openW: (p: string) => new Promise<Buffer>((resolve, reject) => sftp.open(p, 'w', done(resolve, reject))),
    write: (h: Buffer, data: Buffer, at = 0) => new Promise<void>((resolve, reject) => sftp.write(h, data, 0, data.length, at, done(resolve, reject))),
    close: (h: Buffer) => new Promise<void>((resolve, reject) => sftp.close(h, done(resolve, reject))),
    remove: (p: string) => new Promise<void>((resolve, reject) => sftp.unlink(p, done(resolve, reject))),
    stat: (p: string) => new Promise<ssh2.Stats>((resolve, reject) => sftp.stat(p, done(resolve, reject))),
    fsetsize: (h: Buffer, size: number) => new Promise<void>((resolve, reject) => sftp.fsetstat(h, { size }, done(resolve, reject))),
    setsize: (p: string, size: number) => new Promise<void>((resolve, reject) => sftp.setstat(p, { size }, done(resolve, reject))),
  };
}

let t: TestSuite;
let port: number;
let key: string;
let otherKey: string;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], input: string, env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
    p.stdin.end(input);
  });
}

const SSH_OPTS = ['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=10'];

/** OpenSSH's sftp in batch mode with a key: each line of `batch` a command; stops at the first failure. */
function sftpKey(batch: string, user = 'liz@f.test', identity = key): Promise<Result> {
  return run('sftp', ['-b', '-', '-P', String(port), '-i', identity, '-o', 'IdentitiesOnly=yes', '-o', 'PreferredAuthentications=publickey', ...SSH_OPTS, `${user}@127.0.0.1`], batch);
}

/** OpenSSH's sftp with a password, given through SSH_ASKPASS as a person would type it. */
function sftpPassword(commands: string, password: string): Promise<Result> {
  const askpass = path.join(t.dir, `askpass-${password.replace(/\W/g, '')}.sh`);
  writeFileSync(askpass, `#!/bin/sh\necho '${password}'\n`);
  chmodSync(askpass, 0o700);
  return run('sftp', ['-P', String(port), '-o', 'PreferredAuthentications=password', '-o', 'NumberOfPasswordPrompts=1', ...SSH_OPTS, 'liz@f.test@127.0.0.1'], commands, {
    SSH_ASKPASS: askpass,
    SSH_ASKPASS_REQUIRE: 'force',
    DISPLAY: ':0',
  });
}

function makeKey(name: string): string {
  const file = path.join(t.dir, name);
  const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', file]);
  if (r.status !== 0) throw new Error(r.stderr.toString());
  return file;
}

const site = () => path.join(t.sitesDir, 'f.test');

beforeAll(async () => {
  if (!HAVE_SFTP) return;
  t = await startTestSuite({
    tenants: {
      'f.test': { domains: ['f.test'], quota: '1MiB' },
      'g.test': { domains: ['g.test'] },
    },
    main: { ftp: {}, sftp: { listen: '127.0.0.1:0', maxHandles: 8 }, admin: { listen: '127.0.0.1:0' } },
    files: { 'f.test/index.html': 'old page', 'g.test/secret.txt': 'g secret' },
  });
  key = makeKey('liz-key');
  otherKey = makeKey('stranger-key');
  t.writeTenant('f.test', {
    domains: ['f.test'],
    quota: '1MiB',
    ftp: [{ user: 'liz', password: await hashPassword(PASS), keys: [readFileSync(`${key}.pub`, 'utf8').trim()] }],
  });
  await t.suite.reload();
  port = Number(new URL(t.suite.urls.ftp!.find((u) => u.startsWith('sftp://'))!).port);
});
afterAll(async () => {
  await t?.stop();
});

describe.skipIf(!HAVE_SFTP)('SFTP (OpenSSH sftp; Debian package openssh-client)', () => {
  it('uploads a tree with a key, keeps file times, and HTTP serves it at once', async () => {
    const local = path.join(t.dir, 'tree');
    mkdirSync(path.join(local, 'css'), { recursive: true });
    writeFileSync(path.join(local, 'page.html'), '<h1>over sftp</h1>');
    writeFileSync(path.join(local, 'css', 'site.css'), 'body{}');
    utimesSync(path.join(local, 'page.html'), new Date('2020-01-02T03:04:05Z'), new Date('2020-01-02T03:04:05Z'));
    const r = await sftpKey(`mkdir /blog\nput -p ${local}/page.html /blog/page.html\nput -r ${local}/css /css\nls -l /blog\n`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/page\.html/);
    expect(readFileSync(path.join(site(), 'css', 'site.css'), 'utf8')).toBe('body{}');
    expect(await httpGet(t.http, 'f.test', '/blog/page.html')).toEqual({ status: 200, body: '<h1>over sftp</h1>' });
    const { mtime } = (await import('node:fs')).statSync(path.join(site(), 'blog', 'page.html'));
    expect(mtime.toISOString()).toBe('2020-01-02T03:04:05.000Z');
    // Nothing but the files themselves: no upload temporaries left behind.
    expect(readdirSync(path.join(site(), 'blog'))).toEqual(['page.html']);
    // The transfer log is written in batches (every 250 ms).
    const xferLog = path.join(t.dataDir, 'logs', 'f.test', 'ftp.log');
    const line = / liz@f\.test SFTP-PUT 18 \d+ ok \/blog\/page\.html\n/;
    await waitFor(() => existsSync(xferLog) && line.test(readFileSync(xferLog, 'utf8')), 5_000, 'the SFTP-PUT line in ftp.log');
  });

  it('logs in with the password too, downloads, and renames over a served file in one step', async () => {
    const local = path.join(t.dir, 'new-index.html');
    writeFileSync(local, 'new page');
    const back = path.join(t.dir, 'got.html');
    const r = await sftpPassword(`put ${local} /index.new\nrename /index.new /index.html\nget /index.html ${back}\n`, PASS);
    expect(r.code).toBe(0);
    expect(readFileSync(back, 'utf8')).toBe('new page');
    expect(await httpGet(t.http, 'f.test', '/')).toEqual({ status: 200, body: 'new page' });
    expect(t.logs().some((l) => l.msg === 'sftp login' && l.method === 'password' && l.user === 'liz@f.test')).toBe(true);
  });

  it('resumes an upload (reput): the old part is kept, the rest appended, all in one replace', async () => {
    const full = Buffer.alloc(200_000);
    for (let i = 0; i < full.length; i++) full[i] = (i * 7) % 251;
    const half = path.join(t.dir, 'half.bin');
    const whole = path.join(t.dir, 'whole.bin');
    writeFileSync(half, full.subarray(0, 80_000));
    writeFileSync(whole, full);
    expect((await sftpKey(`put ${half} /resume.bin\n`)).code).toBe(0);
    const r = await sftpKey(`reput ${whole} /resume.bin\n`);
    expect(r.code).toBe(0);
    expect(readFileSync(path.join(site(), 'resume.bin')).equals(full)).toBe(true);
  });

  it('answers reads as OpenSSH asks for them at their largest (-B 262144): each answer fits its 256 KiB message limit', async () => {
    const big = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) big[i] = i % 251;
    writeFileSync(path.join(site(), 'big-get.bin'), big);
    const back = path.join(t.dir, 'big-back.bin');
    const r = await run('sftp', ['-b', '-', '-P', String(port), '-i', key, '-o', 'IdentitiesOnly=yes', '-R', '16', '-B', '262144', ...SSH_OPTS, 'liz@f.test@127.0.0.1'], `get /big-get.bin ${back}\n`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readFileSync(back).equals(big)).toBe(true);
  });

  it('works with lftp over sftp:// as well (password through its terminal)', async () => {
    const local = path.join(t.dir, 'lftp.html');
    writeFileSync(local, 'from lftp');
    const connect = `ssh -a -x ${SSH_OPTS.join(' ')} -o PreferredAuthentications=password`;
    const r = await run('lftp', ['-u', `liz@f.test,${PASS}`, '-e', `set net:max-retries 1; set net:timeout 10; set cmd:fail-exit yes; set sftp:connect-program "${connect}"; put ${local} -o /lftp.html; cls -1 /; bye`, `sftp://127.0.0.1:${port}`], '');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/lftp\.html/);
    expect(await httpGet(t.http, 'f.test', '/lftp.html')).toEqual({ status: 200, body: 'from lftp' });
  });

  it('caps connections from one address before any SSH work', async () => {
    // From 127.0.0.2 (Linux routes all of 127/8 to loopback): other tests' sessions from 127.0.0.1 may still be closing.
    const from = { port, host: '127.0.0.1', localAddress: '127.0.0.2' };
    const socks: Socket[] = [];
    try {
      const greeted = (s: Socket) => new Promise<string>((resolve) => {
        let got = '';
        s.on('data', (d: Buffer) => {
          got += d.toString();
          if (got.includes('\n')) resolve(got);
        });
        s.on('close', () => resolve(got));
      });
      for (let i = 0; i < 10; i++) {
        const s = connect(from);
        socks.push(s);
        expect(await greeted(s)).toMatch(/^SSH-2\.0-makewaves/);
      }
      const extra = connect(from);
      socks.push(extra);
      expect(await greeted(extra)).toBe('');
      expect(t.logs().some((l) => l.msg === 'sftp connection refused' && l.remote === '127.0.0.2' && l.why === 'per-IP connection limit')).toBe(true);
      // One ends (the server closes its side in answer): its slot is free, and only that one.
      const first = socks[0]!;
      await new Promise<void>((resolve) => {
        first.once('close', () => resolve());
        first.end();
      });
      const next = connect(from);
      socks.push(next);
      expect(await greeted(next)).toMatch(/^SSH-2\.0-makewaves/);
      const over = connect(from);
      socks.push(over);
      expect(await greeted(over)).toBe('');
    } finally {
      for (const s of socks) s.destroy();
    }
  });

  it('refuses an upload past the quota and leaves nothing of it', async () => {
    const big = path.join(t.dir, 'big.bin');
    writeFileSync(big, Buffer.alloc(2 * 1024 * 1024, 1));
    const before = readdirSync(site()).sort();
    const r = await sftpKey(`put ${big} /big.bin\n`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Failure/);
    expect(t.logs().some((l) => l.msg === 'sftp upload cut off: quota exceeded' && l.path === '/big.bin')).toBe(true);
    expect(readdirSync(site()).sort()).toEqual(before);
    expect(existsSync(path.join(site(), 'big.bin'))).toBe(false);
  });

  it.each([
    ['another tenant by ..', 'get /../g.test/secret.txt'],
    ['a host path', 'get /etc/passwd'],
    ['a relative climb', 'get ../../../etc/passwd'],
    ['a link made on disk that leads out', 'get /out-link'],
    ['a link made on disk to another tenant', 'get /g-link'],
    ['a hidden upload temporary', 'get /.~mw-upload-x'],
    ['making a link', 'symlink /index.html /made-link'],
    ['writing through a link that leads out', 'put /dev/null /out-link'],
  ])('keeps the jail: %s', async (_name, command) => {
    if (!existsSync(path.join(site(), 'out-link'))) {
      symlinkSync('/etc/passwd', path.join(site(), 'out-link'));
      symlinkSync('../g.test/secret.txt', path.join(site(), 'g-link'));
    }
    const target = path.join(t.dir, 'escaped');
    const r = await sftpKey(`${command.replace(/^get (\S+)$/, `get $1 ${target}`)}\n`);
    expect(r.code).not.toBe(0);
    expect(existsSync(target)).toBe(false);
    expect(existsSync(path.join(site(), 'made-link'))).toBe(false);
    expect(readFileSync('/etc/passwd', 'utf8').length).toBeGreaterThan(0);
  });

  it('refuses a wrong password and a key that is not listed, and logs who and why', async () => {
    const a = await sftpPassword('ls\n', 'wrong-password');
    expect(a.code).not.toBe(0);
    const b = await sftpKey('ls\n', 'liz@f.test', otherKey);
    expect(b.code).not.toBe(0);
    expect(b.stderr).toMatch(/Permission denied/);
    expect(t.logs().some((l) => l.msg === 'sftp login failed' && l.user === 'liz@f.test' && l.why === 'wrong password or key')).toBe(true);
  });

  it('refuses a shell, a command and port forwarding: SFTP only', async () => {
    const exec = await run('ssh', ['-p', String(port), '-i', key, '-o', 'IdentitiesOnly=yes', ...SSH_OPTS, 'liz@f.test@127.0.0.1', 'cat /etc/passwd'], '');
    expect(exec.code).not.toBe(0);
    expect(exec.stdout).toBe('');
    const fwd = await run('ssh', ['-p', String(port), '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'ExitOnForwardFailure=yes', '-N', '-L', '0:127.0.0.1:22', ...SSH_OPTS, 'liz@f.test@127.0.0.1'], '');
    expect(fwd.code).not.toBe(0);
    const why = t.logs().filter((l) => l.msg === 'sftp request refused').map((l) => String(l.why));
    expect(why).toEqual(expect.arrayContaining(['exec cat /etc/passwd']));
  });

  it('makes its host keys once; `makewaves sftp fingerprints` prints what ssh-keygen does', async () => {
    const fps = hostKeyFingerprints(t.dataDir);
    const cli = await runCli('sftp', 'fingerprints', '-c', t.configDir);
    expect(cli.code).toBe(0);
    expect(cli.out.trim().split('\n').sort()).toEqual(fps.map((f) => `${f.type}  ${f.fingerprint}`).sort());
    const status = await runCli('status', '-c', t.configDir);
    for (const f of fps) expect(status.out).toContain(`sftp host key: ${f.type} ${f.fingerprint}\n`);
    expect(fps.map((f) => f.type).sort()).toEqual(['ssh-ed25519', 'ssh-rsa']);
    for (const f of fps) {
      const r = spawnSync('ssh-keygen', ['-lf', `${f.file}.pub`]);
      expect(r.stdout.toString()).toContain(f.fingerprint);
    }
  });
});

describe.skipIf(!HAVE_SFTP)('SFTP limits (ssh2 as the client)', () => {
  let l: TestSuite;
  let lport: number;
  let privateKey: Buffer;
  let hal: Record<string, unknown>;

  beforeAll(async () => {
    l = await startTestSuite({
      tenants: { 'h.test': { domains: ['h.test'] } },
      main: { ftp: {}, sftp: { listen: '127.0.0.1:0', maxHandles: 2, maxSessionsPerAccount: 1, idleTimeout: 1, maxConnections: 3, loginGrace: 1 } },
      files: { 'h.test/a.txt': 'a', 'h.test/b.txt': 'b', 'h.test/c.txt': 'c' },
    });
    const file = path.join(l.dir, 'key');
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', file]);
    privateKey = readFileSync(file);
    hal = { domains: ['h.test'], ftp: [{ user: 'hal', password: await hashPassword('x'), keys: [readFileSync(`${file}.pub`, 'utf8').trim()] }] };
    l.writeTenant('h.test', hal);
    await l.suite.reload();
    lport = Number(new URL(l.suite.urls.ftp!.find((u) => u.startsWith('sftp://'))!).port);
  });
  afterAll(async () => {
    await l?.stop();
  });

  function open(): Promise<{ conn: ssh2.Client; sftp: ssh2.SFTPWrapper }> {
    return new Promise((resolve, reject) => {
      const conn = new ssh2.Client();
      conn.on('ready', () => conn.sftp((err, sftp) => (err ? reject(err) : resolve({ conn, sftp }))));
      conn.on('error', reject);
      conn.connect({ host: '127.0.0.1', port: lport, username: 'hal@h.test', privateKey });
    });
  }
  const openFile = (sftp: ssh2.SFTPWrapper, p: string) => new Promise<Buffer>((resolve, reject) => sftp.open(p, 'r', (err, h) => (err ? reject(err) : resolve(h))));

  it('holds a session to maxHandles open files, one session per account, and closes an idle one', async () => {
    const { conn, sftp } = await open();
    try {
      await openFile(sftp, '/a.txt');
      await openFile(sftp, '/b.txt');
      await expect(openFile(sftp, '/c.txt')).rejects.toThrow(/Too many open handles/);
      // The account's one session is this one: a second is refused at authentication.
      await expect(open()).rejects.toThrow(/authentication/i);
      expect(l.logs().some((x) => x.msg === 'sftp login refused' && x.why === 'sessions per account')).toBe(true);
      // Left alone, it is closed after idleTimeout (1 s) and says why.
      await new Promise<void>((resolve) => conn.on('close', () => resolve()));
      expect(l.logs().some((x) => x.msg === 'sftp session closed' && x.why === 'idle')).toBe(true);
    } finally {
      conn.end();
    }
  });

  /** A raw TCP connection from `from`: resolves with what the server sent before it closed or greeted. */
  function raw(from: string): Promise<{ sock: Socket; greeting: Promise<string> }> {
    const sock = connect({ port: lport, host: '127.0.0.1', localAddress: from });
    const greeting = new Promise<string>((resolve) => {
      let got = '';
      sock.on('data', (d: Buffer) => {
        got += d.toString();
        if (got.includes('\n')) resolve(got);
      });
      sock.on('close', () => resolve(got));
      sock.on('error', () => resolve(got));
    });
    return Promise.resolve({ sock, greeting });
  }

  it('caps connections in all, and closes one that does not log in within loginGrace', async () => {
    const held: Socket[] = [];
    try {
      for (const from of ['127.0.0.11', '127.0.0.12', '127.0.0.13']) {
        const c = await raw(from);
        held.push(c.sock);
        expect(await c.greeting).toMatch(/^SSH-2\.0-/);
      }
      const extra = await raw('127.0.0.14');
      held.push(extra.sock);
      expect(await extra.greeting).toBe('');
      expect(l.logs().some((x) => x.msg === 'sftp connection refused' && x.why === 'connection limit')).toBe(true);
      // The three that only greeted are closed after the grace second, so the cap frees itself.
      await Promise.all(held.slice(0, 3).map((s) => new Promise((r) => (s.destroyed ? r(undefined) : s.on('close', r)))));
    } finally {
      for (const s of held) s.destroy();
    }
  });

  it('refuses an address whose connections keep closing without a login (OpenSSH\'s PerSourcePenalties), and says why', async () => {
    // Each of these costs the server a greeting (a key exchange too, for a real client) and never logs in.
    let greeted = 0;
    let refused = false;
    for (let i = 0; i < 40 && !refused; i++) {
      const c = await raw('127.0.0.31');
      const closed = new Promise((r) => c.sock.once('close', r));
      const greeting = await c.greeting;
      c.sock.destroy();
      await closed;
      if (greeting === '') refused = true;
      else greeted++;
    }
    expect(refused).toBe(true);
    expect(greeted).toBeGreaterThanOrEqual(15);
    expect(l.logs().some((x) => x.msg === 'sftp connection refused' && x.remote === '127.0.0.31' && x.why === 'too many connections without a login')).toBe(true);
    // Another address is not held to it.
    const other = await raw('127.0.0.32');
    expect(await other.greeting).toMatch(/^SSH-2\.0-/);
    other.sock.destroy();
  });

  it('ends a session when its tenant is suspended or its key removed by a reload', async () => {
    for (const [change, why] of [
      [{ ...hal, suspended: true }, 'tenant suspended'],
      [{ ...hal, ftp: [{ ...(hal.ftp as object[])[0], keys: [] }] }, 'key removed'],
    ] as const) {
      const { conn } = await open();
      const closed = new Promise<void>((resolve) => conn.on('close', () => resolve()));
      l.writeTenant('h.test', change);
      expect(l.suite.reload()).toBe(true);
      await closed;
      expect(l.logs().some((x) => x.msg === 'sftp session closed' && x.why === why)).toBe(true);
      l.writeTenant('h.test', hal);
      expect(l.suite.reload()).toBe(true);
    }
  });

  it('drops a client that asks on without reading the answers (its window kept shut), and says why', async () => {
    const { conn, sftp } = await open();
    const closed = new Promise<void>((resolve) => conn.on('close', () => resolve()));
    conn.on('error', () => undefined);
    // The client never grants more window: past the first 2 MiB every answer waits in the server's memory.
    (sftp as unknown as { incoming: { window: number } }).incoming.window = Number.MAX_SAFE_INTEGER;
    // REALPATH of a long name: a 1 KiB request, a 2 KiB answer; 6,000 of them would hold 12 MiB for this client.
    const long = `/${Array.from({ length: 4 }, (_, i) => String(i).repeat(240)).join('/')}`;
    for (let i = 0; i < 6000; i++) sftp.realpath(long, () => undefined);
    await closed;
    // Dropped for what it did, not left to the idle timer.
    expect(l.logs().some((x) => x.msg === 'sftp session closed' && x.user === 'hal@h.test' && /without reading the answers|requests unanswered/.test(String(x.why)))).toBe(true);
  });

  it('lists a folder once per handle: READDIRs sent together get each entry once, then EOF (not the first batch again and again)', async () => {
    const dir = path.join(l.sitesDir, 'h.test', 'many');
    mkdirSync(dir, { recursive: true });
    for (let i = 0; i < 3000; i++) writeFileSync(path.join(dir, `f${i}.txt`), '');
    const { conn, sftp } = await open();
    try {
      const handle = await new Promise<Buffer>((resolve, reject) => sftp.opendir('/many', (err, h) => (err ? reject(err) : resolve(h))));
      // Sent together, before any is answered (what a pipelining client does).
      const batches = await Promise.all(
        Array.from({ length: 31 }, () => new Promise<string[] | 'eof'>((resolve, reject) => sftp.readdir(handle, (err, list) => (err ? ((err as { code?: number }).code === 1 ? resolve('eof') : reject(err)) : resolve(list.map((e) => e.filename)))))),
      );
      const names = batches.flatMap((b) => (b === 'eof' ? [] : b));
      expect(names.length).toBe(3000);
      expect(new Set(names).size).toBe(3000);
      expect(batches.filter((b) => b === 'eof')).toHaveLength(1);
    } finally {
      conn.end();
    }
  });

  it('counts a file being replaced as freed only while it is there: removed meanwhile, it frees nothing (no growth past the quota round by round)', async () => {
    l.writeTenant('h.test', { ...hal, quota: '512KiB' });
    expect(l.suite.reload()).toBe(true);
    const { conn, sftp } = await open();
    try {
      const { put, openW, write, remove, close } = calls(sftp);
      await put('/r.bin', Buffer.alloc(400 * 1024, 1));
      const h = await openW('/r.bin');
      // The old file goes (its 400 KiB given back); the upload replacing it may no longer count them as freed.
      await remove('/r.bin');
      const chunk = Buffer.alloc(32 * 1024, 2);
      let refused: Error | undefined;
      for (let at = 0; at < 800 * 1024 && !refused; at += chunk.length) await write(h, chunk, at).catch((err: Error) => (refused = err));
      expect(refused?.message).toMatch(/Quota exceeded/);
      await close(h).catch(() => undefined /* refused: the upload is dropped */);
      expect(existsSync(path.join(l.sitesDir, 'h.test', 'r.bin'))).toBe(false);
    } finally {
      conn.end();
      l.writeTenant('h.test', hal);
      l.suite.reload();
    }
  });

  it('takes a relative name as it is: "-v.txt" is that file, not an ls option (FTP LIST\'s rule is not SFTP\'s)', async () => {
    const { conn, sftp } = await open();
    try {
      const { put, stat, remove } = calls(sftp);
      await put('-v.txt', Buffer.from('dash'));
      expect(readFileSync(path.join(l.sitesDir, 'h.test', '-v.txt'), 'utf8')).toBe('dash');
      const st = await stat('-v.txt');
      expect(st.isFile()).toBe(true);
      expect(st.size).toBe(4);
      // "-la" names no file here: not the root folder.
      await expect(stat('-la')).rejects.toThrow(/no such file/i);
      await remove('-v.txt');
      expect(existsSync(path.join(l.sitesDir, 'h.test', '-v.txt'))).toBe(false);
    } finally {
      conn.end();
    }
  });

  it('holds a connection to 4 channels; one refused takes no place, so a channel closed frees one', async () => {
    // open() holds the first channel.
    const { conn } = await open();
    try {
      const channel = () => new Promise<ssh2.SFTPWrapper>((resolve, reject) => conn.sftp((err, s) => (err ? reject(err) : resolve(s))));
      const more = [await channel(), await channel(), await channel()];
      await expect(channel()).rejects.toThrow();
      expect(l.logs().some((x) => x.msg === 'sftp request refused' && x.why === 'more than 4 channels on one connection')).toBe(true);
      const closed = new Promise<void>((resolve) => more[0]!.on('close', () => resolve()));
      more[0]!.end();
      await closed;
      const again = await channel();
      expect(await new Promise<string>((resolve, reject) => again.realpath('.', (err, p) => (err ? reject(err) : resolve(p))))).toBe('/');
    } finally {
      conn.end();
    }
  });

  /** Starts a key exchange again on `conn` (ssh2's client has no public call for it: a hostile client's move). */
  const rekey = (conn: ssh2.Client) => (conn as unknown as { _protocol: { rekey(): void } })._protocol.rekey();

  it('drops a connection that exchanges keys again before logging in, and says why', async () => {
    const conn = new ssh2.Client();
    conn.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => conn.on('close', () => resolve()));
    let handshakes = 0;
    conn.on('handshake', () => {
      // Each exchange costs the server a key agreement and a signature: before a login, one is all it needs.
      if (++handshakes <= 3) rekey(conn);
    });
    // Never answers the authentication step: everything happens before a login.
    conn.connect({ host: '127.0.0.1', port: lport, username: 'hal@h.test', authHandler: () => undefined });
    await closed;
    expect(handshakes).toBe(2);
    expect(l.logs().some((x) => x.msg === 'sftp connection closed' && x.why === 'key exchange again before login')).toBe(true);
  });

  it('drops a session that exchanges keys again and again after its login (past a burst, one per 10 s)', async () => {
    const { conn } = await open();
    conn.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => conn.on('close', () => resolve()));
    let handshakes = 0;
    conn.on('handshake', () => {
      if (++handshakes <= 50) rekey(conn);
    });
    rekey(conn);
    await closed;
    expect(handshakes).toBeLessThan(50);
    expect(l.logs().some((x) => x.msg === 'sftp session closed' && x.user === 'hal@h.test' && /key exchanges/.test(String(x.why)))).toBe(true);
  });

  it('offers only key exchanges that cost little (no 4096- to 8192-bit Diffie-Hellman)', async () => {
    for (const kex of ['diffie-hellman-group16-sha512', 'diffie-hellman-group18-sha512', 'diffie-hellman-group-exchange-sha256']) {
      const refused = await new Promise<Error | undefined>((resolve) => {
        const conn = new ssh2.Client();
        conn.on('error', (err) => resolve(err));
        conn.on('ready', () => {
          conn.end();
          resolve(undefined);
        });
        conn.connect({ host: '127.0.0.1', port: lport, username: 'hal@h.test', privateKey, algorithms: { kex: [kex] as never } });
      });
      expect(refused?.message, kex).toMatch(/no matching key exchange/i);
    }
  });

  it('never renames a link, nor a folder holding one (checked paths stay what they were checked to be)', async () => {
    // An operator's links: one relative (inside here, outside one level up), one that leads out.
    const site = path.join(l.sitesDir, 'h.test');
    mkdirSync(path.join(site, 'deep', 'er'), { recursive: true });
    mkdirSync(path.join(site, 'shared'), { recursive: true });
    symlinkSync('../..', path.join(site, 'deep', 'er', 'top'));
    symlinkSync('/etc', path.join(site, 'shared', 'etc'));
    const { conn, sftp } = await open();
    try {
      const mv = (a: string, b: string) => new Promise<void>((resolve, reject) => sftp.rename(a, b, (err) => (err ? reject(err) : resolve())));
      // Renamed, each could take the name of a real folder a path was checked through, between the check and the open:
      // the open would then follow the link (to /etc, or out of the site by a relative one moved up).
      await expect(mv('/deep/er/top', '/top')).rejects.toThrow(/links are renamed only by/i);
      await expect(mv('/deep/er/top', '/deep/er/top2')).rejects.toThrow(/links are renamed only by/i);
      await expect(mv('/deep', '/moved')).rejects.toThrow(/holds a link/i);
      await expect(mv('/shared', '/x')).rejects.toThrow(/holds a link/i);
      expect(readlinkSync(path.join(site, 'deep', 'er', 'top'))).toBe('../..');
      expect(readlinkSync(path.join(site, 'shared', 'etc'))).toBe('/etc');
      expect(l.logs().some((x) => x.msg === 'ftp path refused' && x.why === 'moves a link' && x.path === '/deep')).toBe(true);
      // Folders without links still move, files too.
      mkdirSync(path.join(site, 'plain', 'sub'), { recursive: true });
      await mv('/plain', '/deep/plain');
      expect(existsSync(path.join(site, 'deep', 'plain', 'sub'))).toBe(true);
    } finally {
      conn.end();
      rmSync(path.join(site, 'deep'), { recursive: true, force: true });
      rmSync(path.join(site, 'shared'), { recursive: true, force: true });
    }
  });

  it('closes a connection after 6 failed logins, and logs an overlong login name cut short', async () => {
    const before = l.logs().length;
    let tries = 0;
    const conn = new ssh2.Client();
    conn.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => conn.on('close', () => resolve()));
    // 20 KB of name, tried again and again on one connection (each refusal a log line naming the user).
    const name = `${'x'.repeat(20_000)}@h.test`;
    conn.connect({ host: '127.0.0.1', port: lport, username: name, authHandler: (_m, _p, next) => (++tries <= 40 ? next({ type: 'password', username: name, password: 'nope' } as never) : next(false as never)) });
    await closed;
    const lines = l.logs().slice(before);
    expect(lines.filter((x) => x.msg === 'sftp login failed').length).toBeLessThanOrEqual(6);
    expect(lines.some((x) => x.msg === 'sftp connection closed' && x.why === 'more than 6 failed login attempts on one connection')).toBe(true);
    expect(lines.some((x) => x.msg === 'sftp login failed' && x.why === 'login name too long' && x.length === name.length)).toBe(true);
    expect(Math.max(...lines.map((x) => String(x.user ?? '').length))).toBeLessThan(100);
    expect(tries).toBeLessThan(40);
  });

  it('refuses names with control characters (a line break would forge lines in FTP listings and terminals), and logs it', async () => {
    const { conn, sftp } = await open();
    try {
      const put = (p: string) => new Promise<void>((resolve, reject) => sftp.writeFile(p, 'x', (err) => (err ? reject(err) : resolve())));
      const mkdir = (p: string) => new Promise<void>((resolve, reject) => sftp.mkdir(p, (err) => (err ? reject(err) : resolve())));
      const mv = (a: string, b: string) => new Promise<void>((resolve, reject) => sftp.rename(a, b, (err) => (err ? reject(err) : resolve())));
      await expect(put('/a\r\n-rw-r--r-- 1 owner group 0 Jan 1 00:00 forged.html')).rejects.toThrow(/File name not allowed/);
      await expect(mkdir('/tab\there')).rejects.toThrow(/File name not allowed/);
      await expect(mkdir('/esc\x1b[31mred')).rejects.toThrow(/File name not allowed/);
      await put('/plain-name.txt');
      await expect(mv('/plain-name.txt', '/del\x7f')).rejects.toThrow(/File name not allowed/);
      expect(readdirSync(path.join(l.sitesDir, 'h.test')).filter((n) => /[\x00-\x1f\x7f]/.test(n))).toEqual([]);
      expect(l.logs().some((x) => x.msg === 'ftp path refused' && x.why === 'control character')).toBe(true);
      // One made on disk by other means is left out of listings.
      writeFileSync(path.join(l.sitesDir, 'h.test', 'made\nby-hand'), '');
      const names = await new Promise<string[]>((resolve, reject) => sftp.readdir('/', (err, list) => (err ? reject(err) : resolve(list.map((e) => e.filename)))));
      expect(names).toContain('plain-name.txt');
      expect(names.filter((n) => n.includes('\n'))).toEqual([]);
      rmSync(path.join(l.sitesDir, 'h.test', 'made\nby-hand'));
    } finally {
      conn.end();
    }
  });

  it('frees a replaced file once: writes on several handles of one file cannot empty the quota count', async () => {
    l.writeTenant('h.test', { ...hal, quota: '512KiB' });
    expect(l.suite.reload()).toBe(true);
    const { conn, sftp } = await open();
    try {
      const { put, openW, write, close } = calls(sftp);
      await put('/f.bin', Buffer.alloc(200 * 1024, 1));
      for (let round = 0; round < 3; round++) {
        const a = await openW('/f.bin');
        const b = await openW('/f.bin');
        await write(a, Buffer.alloc(200 * 1024, 2));
        await close(b); // commits f unchanged: the 200 KiB it replaces are freed once
        await close(a); // replaces what b committed: nothing is freed twice
      }
      // 200 KiB are stored: 400 KiB more would pass 512 KiB and must be refused.
      await expect(put('/g.bin', Buffer.alloc(400 * 1024, 3))).rejects.toThrow(/Quota exceeded|Failure/);
      expect(existsSync(path.join(l.sitesDir, 'h.test', 'g.bin'))).toBe(false);
    } finally {
      conn.end();
      l.writeTenant('h.test', hal);
      l.suite.reload();
    }
  });
  it('resizes only an upload under way, within the quota; a stored file\'s size change is refused, not ignored', async () => {
    l.writeTenant('h.test', { ...hal, quota: '512KiB' });
    expect(l.suite.reload()).toBe(true);
    const { conn, sftp } = await open();
    try {
      const { put, openW, write, fsetsize, setsize, close } = calls(sftp);
      const stored = path.join(l.sitesDir, 'h.test', 's.bin');
      await put('/s.bin', Buffer.alloc(1000, 1));
      // sshfs's truncate of a stored file: refused in SFTP's words, logged, the file as it was.
      await expect(setsize('/s.bin', 10)).rejects.toThrow(/not supported; upload it again/);
      expect(readFileSync(stored)).toHaveLength(1000);
      expect(l.logs().some((x) => x.msg === 'sftp size change refused: only an upload under way may be resized' && x.path === '/s.bin')).toBe(true);
      // What the tenant's site holds now (earlier tests leave files), so what is free of its 512 KiB.
      const site = path.join(l.sitesDir, 'h.test');
      let held = 0;
      for (const dirs = [site]; dirs.length > 0; ) {
        const d = dirs.pop()!;
        for (const e of readdirSync(d, { withFileTypes: true })) {
          if (e.isDirectory()) dirs.push(path.join(d, e.name));
          else if (e.isFile()) held += lstatSync(path.join(d, e.name)).size;
        }
      }
      const free = 512 * 1024 - held + 1000; // s.bin's 1000 bytes are replaced by the upload below
      // An upload under way: nearly all that is free written, shrunk, then grown (zeros), then refused past the quota.
      const h = await openW('/s.bin');
      await write(h, Buffer.alloc(free - 40 * 1024, 2));
      await fsetsize(h, 10);
      await fsetsize(h, 20);
      await expect(fsetsize(h, 600 * 1024)).rejects.toThrow(/Quota exceeded/);
      await close(h);
      expect(readFileSync(stored)).toEqual(Buffer.concat([Buffer.alloc(10, 2), Buffer.alloc(10, 0)]));
      // What was shrunk away is free again: 60 KiB more fit (only 40 would have, had it still counted).
      await put('/t.bin', Buffer.alloc(60 * 1024, 3));
    } finally {
      conn.end();
      l.writeTenant('h.test', hal);
      l.suite.reload();
    }
  });
});

describe.skipIf(!HAVE_SFTP)('SFTP at the stop', () => {
  it('drops the uploads left open, and those still being opened, before the stop ends: nothing is left in the site after it', async () => {
    const s = await startTestSuite({
      tenants: { 'k.test': { domains: ['k.test'], ftp: [{ user: 'kim', password: await hashPassword('pw') }] } },
      main: { ftp: {}, sftp: { listen: '127.0.0.1:0', maxHandles: 64 } },
      files: { 'k.test/index.html': 'home' },
    });
    const sport = Number(new URL(s.suite.urls.ftp!.find((u) => u.startsWith('sftp://'))!).port);
    const conn = new ssh2.Client();
    conn.on('error', () => undefined /* the stop ends it */);
    const sftp = await new Promise<ssh2.SFTPWrapper>((resolve, reject) => {
      conn.on('ready', () => conn.sftp((err, w) => (err ? reject(err) : resolve(w))));
      conn.connect({ host: '127.0.0.1', port: sport, username: 'kim@k.test', password: 'pw' });
    });
    const { openW, write } = calls(sftp);
    const h = await openW('/open.bin');
    await write(h, Buffer.alloc(64 * 1024, 1));
    // More uploads asked for and not waited on: some are still being opened when the stop comes.
    for (let i = 0; i < 20; i++) sftp.open(`/late${i}.bin`, 'w', () => undefined);
    const site = path.join(s.sitesDir, 'k.test');
    try {
      await s.suite.stop(500);
      expect(readdirSync(site)).toEqual(['index.html']);
    } finally {
      rmSync(s.dir, { recursive: true, force: true, maxRetries: 5 });
    }
  });
});
