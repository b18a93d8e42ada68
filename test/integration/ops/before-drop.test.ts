import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
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

// A start as root binds each service in turn and drops to `user:` once all listen; each answers from its own listen
// on. SMTP starts first: mail taken in meanwhile is spooled by root, in <data>/spool, the service user's.
describe.skipIf(!isRoot)('a start as root, before the drop (as root)', () => {
  // Open: the services serve as root until the drop. This records what that allows; it fails (as expected) until
  // they wait for the drop before serving.
  it.fails('spools no mail into a folder a link names, put at spool/q while SMTP already listens', async () => {
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
      const r = spawnSync('swaks', ['--server', '127.0.0.1', '--port', port, '--from', 'x@remote.test', '--to', 'info@a.test', '--body', '* * * * * root touch /owned', '--silent', '2'], { encoding: 'utf8' });
      expect(r.status, r.stdout + r.stderr).toBe(0);
      writeFileSync(release, '');
      await waitFor(() => out.includes('running as nobody'), 20_000, 'the drop');
      const made = readdirSync(victim);
      expect(made.map((n) => readFileSync(path.join(victim, n), 'latin1')).join('')).not.toContain('root touch /owned');
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });
});
