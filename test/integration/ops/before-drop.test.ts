import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MailSink, startSink } from '../../helpers/mailsink.ts';
import { BIN } from '../../helpers/serve.ts';
import { waitFor, writeConfig } from '../../helpers/suite.ts';

const isRoot = process.getuid?.() === 0;
const HOOK = path.resolve('test/fixtures/hooks/hold-admin-listen.mjs');
let dir: string;
let sink: MailSink;
beforeAll(async () => {
  sink = await startSink();
  dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-before-drop-'));
  chmodSync(dir, 0o755);
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await sink?.close();
});

// A start as root binds each service in turn and drops to `user:` once all listen. SMTP starts first: had it answered
// from its own listen on, mail taken in meanwhile would have been spooled by root, in <data>/spool, the service user's.
describe.skipIf(!isRoot)('a start as root, before the drop (as root)', () => {
  // Each listener is bound as root, but what connects before the drop is held until it (src/lib/holdconn.ts): the
  // mail is taken in by the service user, who cannot write through a link into root's folder.
  it('spools no mail into a folder a link names, put at spool/q while SMTP already listens', async () => {
    const { configDir, dataDir } = writeConfig(dir, {
      main: { user: 'nobody', group: 'nogroup', smtp: { listen: ['127.0.0.1:0'], relay: sink.url }, admin: { listen: '127.0.0.1:0' } },
      tenants: { 'a.test': { domains: ['a.test'], mail: { forward: { info: ['owner@remote.test'] } } } },
    });
    const release = path.join(dir, 'release');
    const victim = path.join(dir, 'cron.d');
    mkdirSync(victim);
    const child = spawn(process.execPath, ['--import', HOOK, BIN, 'serve', '--config', configDir], {
      env: { ...process.env, MAKEWAVES_TEST_RELEASE: release },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (c) => (out += c));
    child.stderr!.on('data', (c) => (out += c));
    try {
      const port = await waitFor(() => /smtp listening on smtp:\/\/[\d.]+:(\d+)/.exec(out)?.[1], 20_000, 'the SMTP listener');
      expect(out).not.toContain('running as nobody');
      // The service user's move: spool/q (checked at the start) becomes a link to a folder of root's.
      const q = path.join(dataDir, 'spool', 'q');
      renameSync(q, `${q}.old`);
      symlinkSync(victim, q);
      // The sender connects while the start is still root's; its greeting comes only after the drop.
      const swaks = spawn('swaks', ['--server', '127.0.0.1', '--port', port, '--from', 'x@remote.test', '--to', 'info@a.test', '--body', '* * * * * root touch /owned'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let said = '';
      swaks.stdout!.on('data', (c) => (said += c));
      swaks.stderr!.on('data', (c) => (said += c));
      const exited = new Promise<number | null>((r) => swaks.once('exit', r));
      await waitFor(() => said.includes('Connected to'), 20_000, 'the sender connected');
      expect(said).not.toMatch(/<- +220/);
      writeFileSync(release, '');
      await waitFor(() => out.includes('running as nobody'), 20_000, 'the drop');
      expect(/"held":(\d+)/.exec(out)?.[1]).toBe('1');
      await exited;
      // Greeted only after the drop, by the service user: the mail is refused for now (4xx, the sender keeps it), never written as root.
      expect(said).toMatch(/<- +220/);
      expect(said).toMatch(/<\*\* +452 /);
      const made = readdirSync(victim);
      expect(made.map((n) => readFileSync(path.join(victim, n), 'latin1')).join('')).not.toContain('root touch /owned');
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });
  // A start that fails after some listeners are bound stops them, and a listener's close waits for every connection
  // it accepted, the held ones too, which no service knew of: the held ones must end first, or the failed start
  // waits on a client that says nothing, for ever.
  it('ends the held connections when a later listener fails, and exits', async () => {
    const taken = net.createServer();
    taken.listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const { configDir } = writeConfig(dir, {
      main: { user: 'nobody', group: 'nogroup', http: { listen: ['127.0.0.1:0'] }, admin: { listen: `127.0.0.1:${(taken.address() as AddressInfo).port}` } },
      tenants: { 'a.test': { domains: ['a.test'] } },
    });
    const release = path.join(dir, 'release-failed');
    const child = spawn(process.execPath, ['--import', HOOK, BIN, 'serve', '--config', configDir], {
      env: { ...process.env, MAKEWAVES_TEST_RELEASE: release },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((r) => child.once('exit', r));
    let out = '';
    child.stdout!.on('data', (c) => (out += c));
    child.stderr!.on('data', (c) => (out += c));
    try {
      const port = await waitFor(() => /http listening on http:\/\/[\d.]+:(\d+)/.exec(out)?.[1], 20_000, 'the HTTP listener');
      // A client that connects and waits (a request begun, never finished): held, as nobody is served before the drop.
      const client = net.connect(Number(port), '127.0.0.1');
      await once(client, 'connect');
      client.write('GET / HTTP/1.1\r\nHost: a.test\r\n');
      client.on('error', () => undefined); // ended by the failed start: a reset is as good as a close here
      const closed = new Promise((r) => client.once('close', r));
      // Accepted by the server (held), not only waiting in the kernel's backlog: ss names the process holding it.
      const accepted = () => execFileSync('ss', ['-Htnp', 'state', 'established', `( sport = :${port} )`], { encoding: 'utf8' }).includes(`pid=${child.pid},`);
      await waitFor(accepted, 20_000, 'the connection accepted');
      writeFileSync(release, '');
      await waitFor(() => out.includes('admin failed to start'), 20_000, 'the admin listener failing');
      expect(await exited).not.toBe(0);
      await closed;
      expect(out).not.toContain('running as nobody');
    } finally {
      child.kill('SIGKILL');
      rmSync(release, { force: true });
      taken.close();
    }
  }, 60_000);
});
