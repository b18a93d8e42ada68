import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LauncherClient } from '../../../src/cgi/launched.ts';
import { boxMissing, call, startCgiSuite, type CgiTestSuite } from '../../helpers/cgi.ts';
import { waitFor, writeConfig } from '../../helpers/suite.ts';
import { createLogger } from '../../../src/core/log.ts';
import { startSuite } from '../../../src/main.ts';
import { startLauncher } from '../../../src/cgi/index.ts';

// Started as root, each tenant's handlers and scripts run as a uid of its
// own (cgi.uids), set by the root launcher, which checks every request
// against its own view of the config and refuses the rest.

const isRoot = process.getuid?.() === 0;
const ID_SH = '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s %s %s\\n" "$(id -u)" "$(id -g)" "$(id -G)"\n';
const UID_JS = "module.exports = function (cgi) { cgi.stdout.write('Content-Type: text/plain\\r\\n\\r\\n' + process.getuid() + ' ' + process.getgid() + '\\n'); };\n";
// Writes a secret in its own scratch folder (its cwd), or reads ?p= and says what happened.
const SCRATCH_JS = `const fs = require('node:fs');
module.exports = function (cgi) {
  const p = new URLSearchParams(cgi.env.QUERY_STRING).get('p');
  let out;
  if (!p) { fs.writeFileSync(process.cwd() + '/secret.txt', 'secret of ' + cgi.site.id); out = 'written'; }
  else { try { out = 'read: ' + fs.readFileSync(p, 'utf8'); } catch (e) { out = 'refused: ' + e.code; } }
  cgi.stdout.write('Content-Type: text/plain\\r\\n\\r\\n' + out);
};
`;
// A fork bomb whose children stay (each sleeps): as many as the kernel lets its uid have; then it says how many
// it got (the box ends them all with it).
const BOMB_PL = '#!/usr/bin/perl\nmy $n = 0;\nfor (1..500) { my $p = fork; last unless defined $p; if ($p == 0) { sleep 30; exit 0 } $n++ }\nsleep 2;\nprint "Content-Type: text/plain\\r\\n\\r\\nforked $n\\n";\n';
const NPROC = 24;

let s: CgiTestSuite;
beforeAll(async () => {
  s = await startCgiSuite({
    main: { cgi: { timeout: 4, uids: '231000-231009', tenantProcesses: NPROC } },
    tenants: {
      'a.test': { domains: ['a.test'], cgi: true },
      'b.test': { domains: ['b.test'], cgi: true },
      'bomb.test': { domains: ['bomb.test'], cgi: true },
      'held.test': { domains: ['held.test'], cgi: true, suspended: true },
      // Its uid runs nothing but the scripts of the scratch test: a.test's warm JavaScript handlers (a dozen threads
      // each, counted by cgi.tenantProcesses) would leave its scripts' forks to chance.
      'side.test': { domains: ['side.test'], cgi: true },
    },
    files: {
      'a.test/cgi-bin/id.sh': ID_SH,
      'a.test/cgi-bin/uid.js': UID_JS,
      'a.test/cgi-bin/scratch.js': SCRATCH_JS,
      'b.test/cgi-bin/id.sh': ID_SH,
      'b.test/cgi-bin/uid.js': UID_JS,
      'b.test/cgi-bin/scratch.js': SCRATCH_JS,
      'b.test/index.html': 'static page of b',
      'bomb.test/cgi-bin/bomb.pl': BOMB_PL,
      'held.test/cgi-bin/id.sh': ID_SH,
    },
  });
});
afterAll(async () => {
  await s?.stop();
});

async function text(host: string, p: string): Promise<[number, string]> {
  const r = await call(s.http, host, p);
  return [r.status, (await r.text()).trim()];
}

/** Processes and threads of `uid` on the host now. */
function tasksOf(uid: number): number {
  return namesOf(uid).length;
}

/** The program name of each process and thread of `uid` on the host now. */
function namesOf(uid: number): string[] {
  const names: string[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'latin1');
      if (Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) !== uid) continue;
      const name = /^Name:\s+(.*)$/m.exec(status)?.[1] ?? '?';
      for (let i = 0; i < Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 1); i++) names.push(name);
    } catch {
      // ended while we looked
    }
  }
  return names;
}

describe.skipIf(boxMissing || !isRoot)('a uid per tenant (started as root)', () => {
  it('runs two tenants\' scripts and JS handlers as two different uids of cgi.uids, no other groups', async () => {
    const [sa, ida] = await text('a.test', '/cgi-bin/id.sh');
    const [sb, idb] = await text('b.test', '/cgi-bin/id.sh');
    expect([sa, sb]).toEqual([200, 200]);
    const [ua, ga, groupsA] = ida.split(' ').map(Number);
    const [ub, gb] = idb.split(' ').map(Number);
    expect(ua).not.toBe(ub);
    for (const u of [ua!, ub!]) expect(u >= 231000 && u <= 231009).toBe(true);
    expect([ga, groupsA]).toEqual([ua, ua]);
    expect(gb).toBe(ub);
    expect(await text('a.test', '/cgi-bin/uid')).toEqual([200, `${ua} ${ua}`]);
    expect(await text('b.test', '/cgi-bin/uid')).toEqual([200, `${ub} ${ub}`]);
    expect(s.cgi.launcher()!.uids).toMatchObject({ 'a.test': ua, 'b.test': ub });
  });

  it('gives each tenant a scratch folder 0700 of its own uid, which another tenant cannot read', async () => {
    expect(await text('a.test', '/cgi-bin/scratch')).toEqual([200, 'written']);
    expect(await text('b.test', '/cgi-bin/scratch')).toEqual([200, 'written']);
    const uids = s.cgi.launcher()!.uids;
    const aDir = path.join(s.dataDir, 'cgi', 'a.test');
    const st = statSync(aDir);
    expect([st.uid, st.gid, (st.mode & 0o7777).toString(8)]).toEqual([uids['a.test'], uids['a.test'], '700']);
    expect(statSync(path.join(s.dataDir, 'cgi', 'b.test')).uid).toBe(uids['b.test']);
    // From b's box: a's folder is not there at all.
    const [, fromBox] = await text('b.test', `/cgi-bin/scratch?p=${encodeURIComponent(path.join(aDir, 'secret.txt'))}`);
    expect(fromBox).toMatch(/^refused: /);
    // And were it shown, b's uid could not read it: the kernel says no, outside any box.
    const asB = spawnSync('setpriv', [`--reuid=${uids['b.test']}`, `--regid=${uids['b.test']}`, '--clear-groups', 'cat', path.join(aDir, 'secret.txt')], { encoding: 'utf8' });
    expect(asB.status).not.toBe(0);
    expect(asB.stderr).toMatch(/Permission denied/);
    expect(readFileSync(path.join(aDir, 'secret.txt'), 'utf8')).toBe('secret of a.test');
  });

  it('leaves the scratch folder to the launcher: scripts run side by side all write it (the server never takes it back)', async () => {
    const dir = path.join(s.dataDir, 'cgi', 'side.test');
    // Writes a file of its own in the tenant's scratch folder (named by its query: each run is PID 1 of its box), with
    // the shell's builtins only: one process a run.
    mkdirSync(path.join(s.sitesDir, 'side.test', 'cgi-bin'), { mode: 0o755 });
    writeFileSync(
      path.join(s.sitesDir, 'side.test', 'cgi-bin', 'touch.sh'),
      `#!/bin/sh\nf=${dir}/t$QUERY_STRING\nif echo x > "$f"; then r=ok; else r=refused; fi\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s\\n" "$r"\n`,
      { mode: 0o755 },
    );
    const answers = await Promise.all(Array.from({ length: 24 }, (_, i) => text('side.test', `/cgi-bin/touch.sh?${i}`)));
    const failed = s.logs().filter((l) => l.tenant === 'side.test' && (l.level as number) >= 40 || l.msg === 'handler failed');
    expect(answers, JSON.stringify(failed)).toEqual(Array.from({ length: 24 }, () => [200, 'ok']));
    expect(readdirSync(dir).filter((f) => /^t\d+$/.test(f))).toHaveLength(24);
    const st = statSync(dir);
    expect([st.uid, (st.mode & 0o7777).toString(8)]).toEqual([s.cgi.launcher()!.uids['side.test'], '700']);
  });

  it('caps a fork bomb at cgi.tenantProcesses for its tenant; another tenant\'s static page and scripts still answer', async () => {
    const bombUid = s.cgi.launcher()!.uids['bomb.test']!;
    const bomb = call(s.http, 'bomb.test', '/cgi-bin/bomb.pl');
    let most = 0;
    let answered = 0;
    // Sample while the bomb runs: b's static page and its script answer each time.
    for (let i = 0; i < 20; i++) {
      most = Math.max(most, tasksOf(bombUid));
      const [st, body] = await text('b.test', '/index.html');
      expect([st, body]).toEqual([200, 'static page of b']);
      answered++;
      if (i % 5 === 0) expect((await text('b.test', '/cgi-bin/id.sh'))[0]).toBe(200);
    }
    const res = await bomb;
    expect(res.status).toBe(200);
    const forked = Number(/^forked (\d+)$/.exec((await res.text()).trim())?.[1]);
    // Its uid's processes: bwrap, the script, its children; the kernel refused the rest.
    expect(forked).toBeGreaterThan(NPROC / 2);
    expect(forked).toBeLessThan(NPROC);
    most = Math.max(most, tasksOf(bombUid));
    expect(answered).toBe(20);
    expect(most).toBeLessThanOrEqual(NPROC);
    console.log(`fork bomb: ${forked} children, at most ${most} tasks of its uid seen (cap ${NPROC})`);
    // Nothing of the bomb outlives its run: what its uid still has is its persistent box (bwrap and box-init
    // waiting in it) or, without box-init, the boxes started ahead (bwrap and the stub, two boxes); no Perl, no child.
    const left = namesOf(bombUid);
    expect(left.length).toBeLessThanOrEqual(4);
    expect(left.every((n) => n === 'bwrap' || n === 'sh' || n.startsWith('box-init'))).toBe(true);
  });

  it('refuses a suspended tenant\'s script in the launcher too', async () => {
    const refused = nextRefusal(s.cgi.launcher()!);
    const proc = s.cgi.launcher()!.start({ tenant: 'held.test', kind: 'script', name: 'id.sh', env: {} });
    const err = await new Promise<Error>((resolve) => proc.on('error', resolve));
    expect(err.message).toMatch(/held.test is suspended/);
    expect((await refused).why).toMatch(/suspended/);
  });
});

function nextRefusal(client: LauncherClient): Promise<{ why: string; id?: number }> {
  return new Promise((resolve) => client.events.once('refused', (why: string, id?: number) => resolve({ why, id })));
}

describe.skipIf(boxMissing || !isRoot)('the launcher refuses hostile requests, each with its reason', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['an unknown tenant', JSON.stringify({ op: 'run', id: 9001, tenant: 'nobody.test', kind: 'script', name: 'id.sh', env: {} }), /unknown tenant nobody.test/],
    ['path traversal in the name', JSON.stringify({ op: 'run', id: 9002, tenant: 'a.test', kind: 'script', name: '../../b.test/cgi-bin/id.sh', env: {} }), /name is not a script file name/],
    ['a traversal as a handler', JSON.stringify({ op: 'run', id: 9003, tenant: 'a.test', kind: 'own', name: '..', env: {} }), /name is not a handler name/],
    ['a uid in the request', JSON.stringify({ op: 'run', id: 9004, tenant: 'a.test', kind: 'script', name: 'id.sh', env: {}, uid: 0 }), /run takes exactly/],
    ['a command line in the request', JSON.stringify({ op: 'run', id: 9005, tenant: 'a.test', kind: 'script', name: 'id.sh', env: {}, argv: ['/bin/sh'] }), /run takes exactly/],
    ['LD_PRELOAD in env', JSON.stringify({ op: 'run', id: 9006, tenant: 'a.test', kind: 'script', name: 'id.sh', env: { LD_PRELOAD: '/tmp/x.so' } }), /LD_PRELOAD is not a CGI meta-variable/],
    ['a suite handler that does not exist', JSON.stringify({ op: 'run', id: 9007, tenant: 'a.test', kind: 'suite', name: 'shell', env: {} }), /no suite handler shell/],
    ['a script of a tenant that does not have it', JSON.stringify({ op: 'run', id: 9008, tenant: 'bomb.test', kind: 'script', name: 'id.sh', env: {} }), /no script id.sh/],
    ['oversized JSON', JSON.stringify({ op: 'run', id: 9009, tenant: 'a.test', kind: 'script', name: 'id.sh', env: { QUERY_STRING: 'x'.repeat(70_000) } }), /request over 65536/],
    ['malformed JSON', '{"op":"run","id":', /malformed JSON/],
    ['not an object', '[1,2,3]', /a JSON object/],
    ['an unknown op', JSON.stringify({ op: 'chown', id: 9010, path: '/etc/shadow' }), /op must be run, kill, scratch or reload/],
    ['a kill of a process it did not start', JSON.stringify({ op: 'kill', id: 424242 }), /no run 424242/],
  ];
  it.each(cases)('%s', async (_what, raw, why) => {
    const client = s.cgi.launcher()!;
    const refused = nextRefusal(client);
    client.sendRaw(raw);
    expect((await refused).why).toMatch(why);
    // Still serving after each.
    expect((await text('a.test', '/cgi-bin/id.sh'))[0]).toBe(200);
  });

  it('a script owned by another user than root or the suite\'s is refused (suEXEC)', async () => {
    const file = path.join(s.sitesDir, 'a.test', 'cgi-bin', 'theirs.sh');
    writeFileSync(file, ID_SH);
    spawnSync('chown', ['12345:12345', file]);
    const refused = nextRefusal(s.cgi.launcher()!);
    expect((await text('a.test', '/cgi-bin/theirs.sh'))[0]).toBe(502);
    expect((await refused).why).toMatch(/owned by uid 12345, not by root or the suite's user/);
  });
});

describe.skipIf(boxMissing || !isRoot)('the launcher holds to its own count of runs', () => {
  it('refuses runs beyond twice cgi.total, whatever the server asks', async () => {
    const t = await startCgiSuite({
      main: { cgi: { total: 1, timeout: 5 } },
      tenants: { 'a.test': { domains: ['a.test'], cgi: true } },
      files: { 'a.test/cgi-bin/wait.sh': '#!/bin/sh\nread line\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s\\n" "$line"\n' },
    });
    try {
      const client = t.cgi.launcher()!;
      // Three at once: the launcher checks them in parallel, so which one comes third is its to say.
      const refused = nextRefusal(client);
      const runs = [1, 2, 3].map(() => client.start({ tenant: 'a.test', kind: 'script', name: 'wait.sh', env: {} }));
      const fates = runs.map(
        (p) =>
          new Promise<{ p: typeof p; err?: Error }>((resolve) => {
            p.once('error', (err: Error) => resolve({ p, err }));
            p.once('spawn', () => resolve({ p }));
          }),
      );
      const settled = await Promise.all(fates);
      const failed = settled.filter((f) => f.err);
      expect(failed.map((f) => f.err!.message)).toEqual([expect.stringMatching(/2 runs alive already \(twice cgi.total\)/)]);
      expect((await refused).why).toMatch(/twice cgi.total/);
      const started = settled.filter((f) => !f.err).map((f) => f.p);
      // The two it started run to their end.
      const outs = await Promise.all(
        started.map(
          (p) =>
            new Promise<string>((resolve) => {
              let out = '';
              p.stdout!.on('data', (c: Buffer) => (out += c.toString()));
              p.stderr!.resume();
              p.on('close', () => resolve(out));
              p.stdin!.end('go\n');
            }),
        ),
      );
      expect(outs.map((o) => o.trim().split('\n').pop())).toEqual(['go', 'go']);
    } finally {
      await t.stop();
    }
  });

  it('a stop ends the launcher quietly: no "launcher gone" error for an end that was asked for', async () => {
    const t = await startCgiSuite({ tenants: { 'a.test': { domains: ['a.test'], cgi: true } } });
    expect(t.cgi.launcher()).toBeDefined();
    await t.stop();
    const ended = (l: Record<string, unknown>) => l.msg === 'handler launcher ended' || l.msg === 'handler launcher gone: every handler is refused until a restart';
    await waitFor(() => t.logs().some(ended), 5_000, "the launcher's end in the log");
    expect(t.logs().filter(ended).map((l) => l.msg)).toEqual(['handler launcher ended']);
  });
});

describe.skipIf(!isRoot || boxMissing)('the launcher started ahead of the server', () => {
  /** This process's children now (the launcher is one, forked by startSuite as root). */
  const children = () => new Set(readdirSync('/proc/self/task').flatMap((t) => readFileSync(`/proc/self/task/${t}/children`, 'utf8').split(' ').filter(Boolean)));
  it('is ended, quietly, when the start is refused after it was forked', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-early-'));
    try {
      // Refused after the config loaded (the launcher loads it fine): the user to run as does not exist.
      const { configDir } = writeConfig(dir, { main: { user: 'no-such-user-here', cgi: { uids: '232000-232009' } }, tenants: { 'a.test': { domains: ['a.test'], cgi: true } } });
      const lines: Array<Record<string, unknown>> = [];
      const log = createLogger({ level: 'debug', destination: { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) } });
      const before = children();
      await expect(startSuite({ configDir, log, watch: false })).rejects.toThrow(/no-such-user-here/);
      await waitFor(() => [...children()].every((c) => before.has(c)), 10_000, 'the launcher to end');
      expect(lines.filter((l) => (l.level as number) >= 50).map((l) => l.msg)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('a reload it refuses is told to the server: health names it until it takes one', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-reload-'));
    const suite = await startSuite({
      configDir: writeConfig(dir, { main: { cgi: { uids: '232010-232019' } }, tenants: { 'a.test': { domains: ['a.test'], cgi: true } } }).configDir,
      log: createLogger({ level: 'silent' }),
      watch: false,
    });
    try {
      const file = path.join(dir, 'config', 'tenants', 'c.test.yaml');
      const launcherProblems = () => suite.health.check().problems.filter((p) => p.key === 'launcher');
      const answer = () => new Promise<string | undefined>((resolve) => suite.launcher()!.events.once('reloaded', resolve));
      // What the launcher reads differs from what the server took (a file changed again between the two reads):
      // the file is broken when the launcher is asked, as the server's reload asks it.
      writeFileSync(file, 'domains: [c.test\n');
      let answered = answer();
      suite.launcher()!.reload();
      expect(await answered).toMatch(/c\.test\.yaml/);
      expect(launcherProblems()).toEqual([
        expect.objectContaining({ severity: 'degraded', message: expect.stringMatching(/^the handler launcher refused the new configuration \(.*c\.test\.yaml.*\) and runs handlers by the one it had/s) }),
      ]);
      writeFileSync(file, 'domains: [c.test]\ncgi: true\n');
      answered = answer();
      expect(suite.reload()).toBe(true);
      expect(await answered).toBeUndefined();
      expect(launcherProblems()).toEqual([]);
    } finally {
      await suite.stop(500);
      // The launcher may still be writing its cache as it ends.
      rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
    }
  });
  it('health names a launcher that ended (every handler is refused), and a reload after its end does not clear it', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-gone-'));
    let told: () => void = () => undefined;
    const goneLogged = new Promise<void>((resolve) => (told = resolve));
    const log = createLogger({
      level: 'error',
      destination: { write: (l: string) => void ((JSON.parse(l) as { msg?: string }).msg?.startsWith('handler launcher gone') && told()) },
    });
    const before = children();
    const suite = await startSuite({
      configDir: writeConfig(dir, { main: { cgi: { uids: '232020-232029' } }, tenants: { 'a.test': { domains: ['a.test'], cgi: true } } }).configDir,
      log,
      watch: false,
    });
    try {
      const launcherProblems = () => suite.health.check().problems.filter((p) => p.key === 'launcher');
      expect(launcherProblems()).toEqual([]);
      // The launcher this suite forked (this process's one new child), ended as an OOM kill or a crash would end it.
      const [pid] = [...children()].filter((c) => !before.has(c));
      process.kill(Number(pid), 'SIGKILL');
      await goneLogged;
      expect(launcherProblems()).toEqual([expect.objectContaining({ severity: 'degraded', message: expect.stringMatching(/handler launcher .*ended/) })]);
      // A reload asks an ended launcher nothing: it must not clear what health says of it.
      expect(suite.reload()).toBe(true);
      expect(launcherProblems()).toHaveLength(1);
    } finally {
      await suite.stop(500);
      rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
    }
  });
  it('says why it could not load the config, for the server to name', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-early-'));
    try {
      const { configDir } = writeConfig(dir, { tenants: {} });
      writeFileSync(path.join(configDir, 'tenants', 'broken.test.yaml'), 'domains: [broken.test\n');
      const client = startLauncher(configDir, createLogger({ level: 'silent' }));
      await expect(client.ready).rejects.toThrow(/the launcher could not start: configuration is invalid:.*broken\.test\.yaml/s);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
