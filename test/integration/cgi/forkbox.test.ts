import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileBoxInit, ForkBox, frame, frameReader, runFrame } from '../../../src/cgi/forkbox.ts';
import { BoxPool } from '../../../src/cgi/boxes.ts';
import { detectSandbox, feedFilter, FILTER_FD, forkBoxSpec, scriptSpec } from '../../../src/cgi/sandbox.ts';
import { findExecutable } from '../../../src/lib/box.ts';
import { nativeDir } from '../../../src/lib/paths.ts';
import { boxMissing, call, startCgiSuite, type CgiTestSuite } from '../../helpers/cgi.ts';

// A tenant's scripts share one persistent box (box-init as its PID 1, as
// root); each run is a clone in fresh PID, mount, IPC and UTS namespaces.
// What one run leaves or sees must still be its own: its leftovers end
// with it, its /tmp is its own, it sees no other run's processes, holds no
// capability and no fd of box-init's, and a run killed at the wall time
// takes its children with it.

const CT = 'printf "Content-Type: text/plain\\r\\n\\r\\n"\n';
// x86_64 numbers: io_uring_setup 425, add_key 248, keyctl 250, userfaultfd 323 (user-mode only), perf_event_open 298.
const CALLS_PL = `#!/usr/bin/perl
use POSIX ();
my ($params, $type, $name, $value, $attr) = ("\\0" x 120, 'user', 'k', 'v', pack('LLQQQQQ', 1, 112, 0, 0, 0, 0, 0x60) . ("\\0" x 56));
print "Content-Type: text/plain\\r\\n\\r\\n";
print 'vsock ', (socket(my $v, 40, 1, 0) ? 'allowed' : 'refused'), "\\n";
print 'inet ', (socket(my $i, 2, 1, 0) ? 'allowed' : 'refused'), "\\n";
print 'setsid ', (POSIX::setsid() > 0 ? 'allowed' : 'refused'), "\\n";
for ([io_uring => 425, 8, $params], [add_key => 248, $type, $name, $value, 1, -4], [keyctl => 250, 0, -4, 0], [userfaultfd => 323, 0x80001], [perf_event_open => 298, $attr, 0, -1, -1, 0]) {
  my ($what, @call) = @$_;
  print "$what ", (syscall(@call) >= 0 ? 'allowed' : 'refused'), "\\n";
}
`;
const REFUSED = ['vsock refused', 'inet allowed', 'setsid refused', 'io_uring refused', 'add_key refused', 'keyctl refused', 'userfaultfd refused', 'perf_event_open refused'];
let s: CgiTestSuite;

beforeAll(async () => {
  s = await startCgiSuite({
    main: { cgi: { timeout: 2 } },
    tenants: { 'box.test': { domains: ['box.test'], cgi: true } },
    files: {
      // The background sleep keeps stdout open: the answer still ends with the script.
      'box.test/cgi-bin/bg.sh': `#!/bin/sh\nsleep 41.5 &\n${CT}echo answered\n`,
      'box.test/cgi-bin/tmp.sh': `#!/bin/sh\n${CT}: > "/tmp/run-$QUERY_STRING"\nsleep 0.5\nls /tmp | grep '^run-'\n`,
      'box.test/cgi-bin/stuck.sh': '#!/bin/sh\n(exec sleep 43.5) &\nexec sleep 30\n',
      'box.test/cgi-bin/calls.pl': CALLS_PL,
      'box.test/cgi-bin/oom.sh': `#!/bin/sh\n${CT}cat /proc/self/oom_score_adj\n(echo 0 > /proc/self/oom_score_adj) 2>/dev/null && echo lowered || echo kept\n`,
      // Any process may set its own scheduling group's nice anywhere from 0 to 19: a run undid its box's nice 10 (the
      // kernel takes one change per 100 ms in the whole system, so it tries five times, 200 ms apart).
      'box.test/cgi-bin/regroup.sh': `#!/bin/sh\n${CT}r=kept\nfor i in 1 2 3 4 5; do (echo 0 > /proc/self/autogroup) 2>/dev/null && { r=raised; break; }; sleep 0.2; done\necho $r\necho "to stdout" > /dev/stdout\n`,
      'box.test/cgi-bin/group.sh': `#!/bin/sh\n${CT}cat /proc/self/autogroup\n`,
      'box.test/cgi-bin/look.sh': `#!/bin/sh\n${CT}echo "pids $(ls /proc | grep -c '^[0-9]')"\ngrep CapEff /proc/self/status\nfor f in /proc/$$/fd/*; do echo "fd \${f##*/} $(readlink $f)"; done\n`,
    },
  });
});
afterAll(async () => {
  await s?.stop();
});

/** Processes whose command line is exactly `argv`. */
function running(argv: string[]): string[] {
  const want = `${argv.join('\0')}\0`;
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/cmdline`, 'utf8') === want;
      } catch {
        return false; // ended meanwhile
      }
    });
}

/** The pids of box-init under a bwrap that shows `sitesDir`'s folders: one suite's boxes (uids repeat across suites). */
function boxesOf(sitesDir: string): string[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        const ppid = /^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${d}/status`, 'utf8'))![1];
        return readFileSync(`/proc/${d}/comm`, 'utf8').startsWith('box-init') && readFileSync(`/proc/${ppid}/cmdline`, 'utf8').includes(sitesDir);
      } catch {
        return false; // ended meanwhile
      }
    });
}

describe.skipIf(boxMissing || process.getuid?.() !== 0)('classic CGI in a persistent box per tenant', () => {
  it('runs in box-init\'s box (the launcher says so)', () => {
    expect(s.cgi.launcher()?.forkBox).toBe(true);
  });

  it('answers at the script\'s end, and what it left running in the background ends with it', async () => {
    const res = await call(s.http, 'box.test', '/cgi-bin/bg.sh');
    expect([res.status, await res.text()]).toEqual([200, 'answered\n']);
    expect(running(['sleep', '41.5'])).toEqual([]);
    // Where the run's time went, one debug line per run: every hand-over from the request to the answer.
    const line = s.logs().filter((l) => l.msg === 'script timeline' && l.handler === 'bg.sh').pop();
    expect(Object.keys((line?.ms ?? {}) as object).sort()).toEqual(['answered', 'asked', 'closed', 'exited', 'found', 'mailed', 'output', 'read', 'started']);
  });

  it('gives each run a /tmp of its own: two runs at once do not see each other\'s files', async () => {
    const answers = await Promise.all(['a', 'b'].map(async (q) => {
      const res = await call(s.http, 'box.test', `/cgi-bin/tmp.sh?${q}`);
      return [res.status, (await res.text()).trim()];
    }));
    expect(answers).toEqual([[200, 'run-a'], [200, 'run-b']]);
    // Nor does the next run see what they left.
    const again = await call(s.http, 'box.test', '/cgi-bin/tmp.sh?c');
    expect((await again.text()).trim()).toBe('run-c');
  });

  it('sees only its own processes, holds no capability and no fd beyond its stdio and mail channel', async () => {
    const res = await call(s.http, 'box.test', '/cgi-bin/look.sh');
    const text = await res.text();
    // sh, its subshell, ls and grep at most: neither box-init nor another run.
    expect(Number(/pids (\d+)/.exec(text)?.[1])).toBeLessThanOrEqual(4);
    expect(text).toMatch(/CapEff:\s+0000000000000000/);
    // Its stdio and mail channel (pipes); the shell's own pipe for $(…) aside, nothing: no socket of box-init's, no fd of bwrap's.
    const fds = [...text.matchAll(/^fd (\d+) (.*)$/gm)].map((m) => [Number(m[1]), m[2]!] as const).sort((a, b) => a[0] - b[0]);
    expect(fds.slice(0, 4).map(([n, to]) => [n, to.startsWith('pipe:')])).toEqual([[0, true], [1, true], [2, true], [3, true]]);
    expect(fds.filter(([, to]) => to.startsWith('socket:'))).toEqual([]);
    expect(fds.filter(([n]) => n >= 100)).toEqual([]);
  });

  it.skipIf(process.arch !== 'x64')('cannot make vsock sockets (no network namespace holds them), a session of its own (a scheduling group as heavy as the server\'s), io_uring, keys, perf events or userfaultfd', async () => {
    const res = await call(s.http, 'box.test', '/cgi-bin/calls.pl');
    expect((await res.text()).trim().split('\n')).toEqual(REFUSED);
  });

  it.skipIf(!findExecutable('choom'))('is the first the kernel kills when memory runs out (OOM score adjustment 1000), and cannot lower that', async () => {
    const res = await call(s.http, 'box.test', '/cgi-bin/oom.sh');
    const [score, lowered] = (await res.text()).trim().split('\n');
    expect(score).toBe('1000');
    // Only root with CAP_SYS_RESOURCE sets the floor a process may not go below (some containers' root lacks it).
    const capEff = BigInt(`0x${/^CapEff:\s+([0-9a-f]+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]}`);
    if ((capEff >> 24n) & 1n) expect(lowered).toBe('kept');
  });

  it.skipIf(!existsSync('/proc/self/autogroup'))('runs in a scheduling group (autogroup) at nice 10, not one as heavy as the server\'s session', async () => {
    // The kernel takes one autogroup change per 100 ms in the whole system: box-init tries again at each run until it is taken.
    let seen = '';
    for (let i = 0; i < 20 && !/ nice 10$/.test(seen); i++) seen = (await (await call(s.http, 'box.test', '/cgi-bin/group.sh')).text()).trim();
    expect(seen).toMatch(/^\/autogroup-\d+ nice 10$/);
  });

  it.skipIf(!existsSync('/proc/self/autogroup'))('cannot set its scheduling group back to nice 0 (its /proc is read-only), and still writes to /dev/stdout', async () => {
    const res = await call(s.http, 'box.test', '/cgi-bin/regroup.sh');
    expect((await res.text()).trim().split('\n')).toEqual(['kept', 'to stdout']);
    let seen = '';
    for (let i = 0; i < 20 && !/ nice 10$/.test(seen); i++) seen = (await (await call(s.http, 'box.test', '/cgi-bin/group.sh')).text()).trim();
    expect(seen).toMatch(/^\/autogroup-\d+ nice 10$/);
  });

  it('is killed at the wall time (504) with every process it started', async () => {
    const res = await call(s.http, 'box.test', '/cgi-bin/stuck.sh');
    expect(res.status).toBe(504);
    // Killed when the 504 is sent; the kernel ends a PID namespace's processes a moment later (seen once in CI:
    // one still in /proc right after the answer).
    for (let i = 0; i < 100 && running(['sleep', '43.5']).length + running(['sleep', '30']).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(running(['sleep', '43.5'])).toEqual([]);
    expect(running(['sleep', '30'])).toEqual([]);
    expect(s.cgi.running('box.test')).toBe(0);
  });

  it('keeps one box for the tenant\'s runs, and starts a fresh one after a reload', async () => {
    const boxes = () => boxesOf(s.sitesDir);
    const before = boxes();
    expect(before.length).toBe(1);
    await call(s.http, 'box.test', '/cgi-bin/bg.sh');
    expect(boxes()).toEqual(before);
    s.cgi.launcher()!.reload();
    const res = await call(s.http, 'box.test', '/cgi-bin/bg.sh');
    expect(res.status).toBe(200);
    // The old box, retired with no run left, is ended (killed: its end is the kernel's, a moment later).
    for (let i = 0; i < 100 && boxes().includes(before[0]!); i++) await new Promise((r) => setTimeout(r, 20));
    const after = boxes();
    expect(after.length).toBe(1);
    expect(after).not.toEqual(before);
  });
});

/** The command line of a box-init box as the nobody user, with no web root and a scratch folder in a new temporary `dir`. */
function nobodyBox(memory: number) {
  const init = compileBoxInit(nativeDir());
  if (!init.ok) throw new Error(init.why);
  const caps = detectSandbox('nobody');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-forkbox-'));
  chmodSync(dir, 0o755);
  const scratch = path.join(dir, 'scratch');
  mkdirSync(scratch);
  chownSync(scratch, 65534, 65534);
  const drop = { user: 'nobody', uid: 65534, gid: 65534, setpriv: caps.drop?.setpriv ?? 'setpriv' };
  return { dir, spec: forkBoxSpec({ ...caps, drop }, { folders: [], scratch, memory, fileMax: 1024 * 1024, init: init.path }) };
}

describe.skipIf(boxMissing || process.getuid?.() !== 0)('box-init\'s two sockets', () => {
  it('starts a run only when asked on its control socket (the launcher\'s); the server\'s data socket can feed and kill runs, not start them', async () => {
    const { dir, spec } = nobodyBox(64 * 1024 * 1024);
    const started: number[] = [];
    const ended = new Map<number, number | undefined>();
    let endedNow: (id: number) => void = () => undefined;
    let startedNow: () => void = () => undefined;
    let exitedOnData: () => void = () => undefined;
    const box = new ForkBox(spec, 60_000, {
      ended: (id, status) => {
        ended.set(id, status);
        endedNow(id);
      },
    });
    const frames: Array<[number, string, string]> = [];
    // What the launcher hears: never a run's start.
    frameReader((box as unknown as { control: typeof box.data }).control, (id, type) => type === 'S' && frames.push([id, 'S on control', '']));
    frameReader(box.data, (id, type, payload) => {
      frames.push([id, type, payload.toString('latin1')]);
      if (type === 'X') exitedOnData();
      if (type !== 'S') return;
      started.push(id);
      startedNow();
    });
    const limits = { cpu: 5, data: 64 * 1024 * 1024, fsize: 1024 * 1024, nofile: 64, tmp: 1024 * 1024 };
    try {
      // On the data socket: a run request, a kill and stdin for runs that do not exist, garbage types. Nothing starts.
      box.data.write(runFrame(7, { cwd: '/', argv: ['/bin/echo', 'from data'], env: {}, limits }));
      box.data.write(Buffer.concat([frame(7, 'K'), frame(8, 'I', Buffer.from('x')), frame(9, 'E'), frame(10, 'Z', Buffer.from('??'))]));
      // Then a run asked the right way: it starts, and its stdin comes over the data socket.
      const done = new Promise<number>((resolve) => (endedNow = resolve));
      // The exit on the data socket comes after the run's output there (the control socket's may come before it).
      const drained = new Promise<void>((resolve) => (exitedOnData = resolve));
      const running = new Promise<void>((resolve) => (startedNow = resolve));
      box.run(11, { cwd: '/', argv: ['/bin/cat'], env: {}, limits });
      // Told on the data socket only (not on control) once box-init has the run (so it takes the run's stdin from then on).
      await running;
      box.data.write(Buffer.concat([frame(11, 'I', Buffer.from('hello')), frame(11, 'E')]));
      expect(await done).toBe(11);
      await drained;
      expect(ended.get(11)).toBe(0);
      expect(started).toEqual([11]);
      expect(frames.filter(([id]) => id !== 11)).toEqual([]);
      expect(frames.filter(([, type]) => type === 'S on control')).toEqual([]);
      expect(frames.filter(([, type]) => type === 'O').map(([, , p]) => p).join('')).toBe('hello');
    } finally {
      box.end();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(boxMissing || process.getuid?.() !== 0)('an idle persistent box', () => {
  it('ends after cgi.idleTimeout without a run; the next run starts a new one', async () => {
    const t = await startCgiSuite({
      main: { cgi: { idleTimeout: 0.3 } },
      tenants: { 'idle.test': { domains: ['idle.test'], cgi: true } },
      files: { 'idle.test/cgi-bin/hi.sh': `#!/bin/sh\n${CT}echo hi\n` },
    });
    try {
      const boxes = () => boxesOf(t.sitesDir);
      expect((await call(t.http, 'idle.test', '/cgi-bin/hi.sh')).status).toBe(200);
      const first = boxes();
      expect(first.length).toBe(1);
      // Its end is a timer's, then the kernel's: looked for until it is gone (5 s at most).
      for (let i = 0; i < 250 && boxes().length > 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(boxes()).toEqual([]);
      expect((await call(t.http, 'idle.test', '/cgi-bin/hi.sh')).status).toBe(200);
      const second = boxes();
      expect(second.length).toBe(1);
      expect(second).not.toEqual(first);
    } finally {
      await t.stop();
    }
  });
});

describe.skipIf(boxMissing)('persistent boxes the suite starts itself (no launcher: one uid for all)', () => {
  let t: CgiTestSuite;
  beforeAll(async () => {
    t = await startCgiSuite({
      launcher: false,
      main: { cgi: { timeout: 2 } },
      tenants: { 'own.test': { domains: ['own.test'], cgi: true } },
      files: {
        'own.test/cgi-bin/bg.sh': `#!/bin/sh\nsleep 44.5 &\n${CT}echo answered\n`,
        'own.test/cgi-bin/tmp.sh': `#!/bin/sh\n${CT}: > "/tmp/run-$QUERY_STRING"\nsleep 0.5\nls /tmp | grep '^run-'\n`,
        'own.test/cgi-bin/stuck.sh': '#!/bin/sh\n(exec sleep 45.5) &\nexec sleep 30\n',
        'own.test/cgi-bin/mail.sh': `#!/bin/sh\nprintf 'To: nobody@own.test\\nSubject: hi\\n\\nhello\\n' | /usr/sbin/sendmail -t\n${CT}echo sent\n`,
      },
    });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('runs scripts in a persistent box there too, with the same guarantees', async () => {
    expect(t.cgi.launcher()).toBeUndefined();
    expect(t.logs().find((l) => l.msg === 'form handler sandbox ready')?.scripts).toMatch(/^one persistent box per tenant/);
    const res = await call(t.http, 'own.test', '/cgi-bin/bg.sh');
    expect([res.status, await res.text()]).toEqual([200, 'answered\n']);
    expect(running(['sleep', '44.5'])).toEqual([]);
    expect(boxesOf(t.sitesDir).length).toBe(1);
    const answers = await Promise.all(['a', 'b'].map(async (q) => {
      const r = await call(t.http, 'own.test', `/cgi-bin/tmp.sh?${q}`);
      return [r.status, (await r.text()).trim()];
    }));
    expect(answers).toEqual([[200, 'run-a'], [200, 'run-b']]);
    expect((await call(t.http, 'own.test', '/cgi-bin/stuck.sh')).status).toBe(504);
    expect(running(['sleep', '45.5'])).toEqual([]);
    // The mail channel (fd 3) reaches the suite: the message is judged (no forms.recipients here: refused, and logged).
    expect((await call(t.http, 'own.test', '/cgi-bin/mail.sh')).status).toBe(200);
    expect(t.logs().some((l) => l.msg === 'handler mail refused' && l.tenant === 'own.test')).toBe(true);
    expect(t.cgi.running('own.test')).toBe(0);
  });
});

/** Runs `/bin/echo text` as run `id` in `b`, and proves it ran whole: exit 0, its output ended, the line came back. */
async function echoes(b: ReturnType<typeof hostileBox>, id: number, text: string): Promise<void> {
  b.box.run(id, { cwd: '/', argv: ['/bin/echo', text], env: {}, limits: b.limits });
  expect(await b.when(`X${id}`)).toBe(0);
  await b.when(`C${id}.1`);
  expect(b.out.get(id)).toBe(`${text}\n`);
}

/** A box of box-init's own as the nobody user (no suite): its ForkBox, the frames it sends the server, and its end. */
function hostileBox(memory: number) {
  const { dir, spec } = nobodyBox(memory);
  const waiting = new Map<string, (v: unknown) => void>();
  const seen = new Map<string, unknown>();
  const note = (key: string, v: unknown) => {
    seen.set(key, v);
    waiting.get(key)?.(v);
  };
  const box = new ForkBox(spec, 60_000, {
    ended: (id, status, why) => note(`X${id}`, status ?? why),
  });
  const out = new Map<number, string>();
  box.data.on('error', () => undefined); // a box that dies under a write: its end fails the runs, which the test sees
  const bytes = new Map<number, number>();
  frameReader(box.data, (id, type, payload) => {
    if (type === 'S') note(`S${id}`, true);
    if (type === 'C') note(`C${id}.${payload.readUInt8(0)}`, true);
    if (type !== 'O') return;
    bytes.set(id, (bytes.get(id) ?? 0) + payload.length);
    if (bytes.get(id)! > 1024 * 1024) note(`O${id}.1M`, true);
    if ((out.get(id)?.length ?? 0) < 4096) out.set(id, (out.get(id) ?? '') + payload.toString('latin1'));
  });
  /** The first value of `key` (S<id>: started; X<id>: its wait status, or why it failed; C<id>.1: its stdout ended; O<id>.1M: a MiB of it relayed). */
  const when = (key: string) => (seen.has(key) ? Promise.resolve(seen.get(key)) : new Promise((resolve) => waiting.set(key, resolve)));
  const limits = { cpu: 5, data: 16 * 1024 * 1024, fsize: 1024 * 1024, nofile: 64, tmp: 1024 * 1024 };
  const done = () => {
    box.end();
    rmSync(dir, { recursive: true, force: true });
  };
  return { box, out, bytes, when, seen: (key: string) => seen.has(key), limits, done };
}

/** Runs `test` against a {@link hostileBox} of `memory` bytes, and ends the box whatever it finds. */
async function inHostileBox(memory: number, test: (b: ReturnType<typeof hostileBox>) => Promise<void>): Promise<void> {
  const b = hostileBox(memory);
  try {
    await test(b);
  } finally {
    b.done();
  }
}

describe.skipIf(boxMissing || process.getuid?.() !== 0)('box-init against hostile frames and runs', () => {
  it('answers malformed run requests on its control socket with F, and stays up', () =>
    inHostileBox(64 * 1024 * 1024, async (b) => {
      const fails: Array<[number, string]> = [];
      frameReader(b.box.proc.stdio[3] as never, (id, type, payload) => type === 'F' && fails.push([id, payload.toString('latin1')]));
      const lim = (argc: number, envc: number) => {
        const l = Buffer.alloc(48);
        l.writeUInt32LE(argc, 40);
        l.writeUInt32LE(envc, 44);
        return l;
      };
      const control = b.box.proc.stdio[3] as unknown as NodeJS.WritableStream;
      control.write(Buffer.concat([
        frame(1, 'R'),
        frame(2, 'R', Buffer.from('short')),
        frame(3, 'R', Buffer.concat([lim(0, 0), Buffer.from('/\0')])),
        frame(4, 'R', Buffer.concat([lim(0xffffffff, 1), Buffer.from('/\0x\0')])), // argc + envc + 1 wraps to 1
        frame(5, 'R', Buffer.concat([lim(1, 0xffffffff), Buffer.from('/\0/bin/true\0')])),
        frame(6, 'R', Buffer.concat([lim(1, 0), Buffer.from('/\0/bin/true')])), // its last string without its NUL
        frame(7, 'R', Buffer.concat([lim(3, 0), Buffer.from('/\0a\0')])), // fewer strings than it says
        frame(0, 'R', Buffer.concat([lim(1, 0), Buffer.from('/\0/bin/true\0')])),
      ]));
      await echoes(b, 8, 'still here');
      expect(fails.map(([id]) => id)).toEqual([1, 2, 3, 4, 5, 6, 7, 0]);
      expect(fails[5]![1]).toBe('string without its NUL');
    }));

  it('takes in no more stdin than its memory allows for a script that does not read it: that run\'s stdin ends, not the box', () =>
    inHostileBox(48 * 1024 * 1024, async (b) => {
      b.box.run(1, { cwd: '/', argv: ['/bin/sleep', '30'], env: {}, limits: b.limits });
      await b.when('S1');
      // 60 MiB the script never reads (below box-init's cap on stdin, above the box's memory), then a kill: in order.
      const chunk = Buffer.alloc(240 * 1024, 0x61);
      for (let i = 0; i < 256; i++) b.box.data.write(frame(1, 'I', chunk));
      b.box.data.write(frame(1, 'K'));
      expect(await b.when('X1')).toBe(9); // SIGKILL: the box outlived the flood
      await echoes(b, 2, 'next');
    }));

  it('relays a flooding run\'s output at the server\'s pace without holding back another run of the box', () =>
    inHostileBox(64 * 1024 * 1024, async (b) => {
      b.box.run(1, { cwd: '/', argv: ['/usr/bin/yes', 'flood'], env: {}, limits: b.limits });
      await b.when('O1.1M');
      const before = b.bytes.get(1)!;
      await echoes(b, 2, 'beside it');
      // Still flooding meanwhile: answered beside it, not after it.
      expect(b.seen('X1')).toBe(false);
      expect(b.bytes.get(1)!).toBeGreaterThan(before);
      b.box.kill(1);
      expect(await b.when('X1')).toBe(9);
    }));

  it('goes on starting and ending runs while the server does not read its data socket, and hands over the output whole once it does', () =>
    inHostileBox(64 * 1024 * 1024, async (b) => {
      b.box.data.pause();
      // More than the socket holds: box-init's writes of it would wait for the server.
      b.box.run(1, { cwd: '/', argv: ['/usr/bin/head', '-c', String(4 * 1024 * 1024), '/dev/zero'], env: {}, limits: b.limits });
      // (Its S frame waits on the unread data socket too; box-init takes R frames in order, so run 1 is started first.)
      // The launcher's side meanwhile: a run started, done and reaped (its end said on the control socket).
      b.box.run(2, { cwd: '/', argv: ['/bin/sleep', '0.3'], env: {}, limits: b.limits });
      expect(await b.when('X2')).toBe(0);
      b.box.data.resume();
      expect(await b.when('X1')).toBe(0);
      await b.when('C1.1');
      expect(b.bytes.get(1)).toBe(4 * 1024 * 1024);
    }));

  it('takes its runs, and every process they started, with it when it dies mid-run; the runs are failed', () =>
    inHostileBox(64 * 1024 * 1024, async (b) => {
      b.box.run(1, { cwd: '/', argv: ['/bin/sh', '-c', '/bin/sleep 46.5 & exec /bin/sleep 47.5'], env: {}, limits: b.limits });
      await b.when('S1');
      for (let i = 0; i < 100 && running(['/bin/sleep', '46.5']).length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(running(['/bin/sleep', '46.5']).length).toBe(1);
      // box-init: the one process of the box whose name says so, below the box's own process.
      const init = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).find((d) => {
        try {
          return readFileSync(`/proc/${d}/comm`, 'utf8').startsWith('box-init') && Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${d}/status`, 'utf8'))![1]) === b.box.proc.pid;
        } catch {
          return false; // ended meanwhile
        }
      });
      expect(init).toBeDefined();
      process.kill(Number(init), 'SIGKILL');
      expect(await b.when('X1')).toBe('the script box ended');
      for (let i = 0; i < 100 && running(['/bin/sleep', '46.5']).length + running(['/bin/sleep', '47.5']).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect([...running(['/bin/sleep', '46.5']), ...running(['/bin/sleep', '47.5'])]).toEqual([]);
    }));

  it('bounds a run\'s own /tmp in files as well as in bytes (empty files and short links take no bytes of it)', () =>
    inHostileBox(64 * 1024 * 1024, async (b) => {
      const count = 'i=0; while [ $i -lt 2000 ] && true 2>/dev/null > /tmp/f$i; do i=$((i+1)); done; echo $i';
      b.box.run(1, { cwd: '/', argv: ['/bin/sh', '-c', count], env: {}, limits: { ...b.limits, tmp: 256 * 1024 } });
      expect(await b.when('X1')).toBe(0);
      await b.when('C1.1');
      // 256 KiB: 256 files, the box's own files below /tmp (its mount points) among them.
      expect(Number(b.out.get(1))).toBeLessThanOrEqual(256);
      // A size of 0 is a small /tmp, not a boundless one.
      b.box.run(2, { cwd: '/', argv: ['/bin/sh', '-c', count], env: {}, limits: { ...b.limits, tmp: 0, fsize: 0 } });
      expect(await b.when('X2')).toBe(0);
      await b.when('C2.1');
      expect(Number(b.out.get(2))).toBeLessThanOrEqual(64);
    }));

  it('makes the next run\'s process ahead holding nothing of the runs beside it: their stdin ends when the server ends it, and it starts clean', () =>
    inHostileBox(64 * 1024 * 1024, async (b) => {
      // cat ends at its stdin's end only: a process made ahead that kept a copy of that pipe would hold it open.
      b.box.run(1, { cwd: '/', argv: ['/bin/cat'], env: {}, limits: b.limits });
      await b.when('S1');
      await echoes(b, 2, 'made ahead');
      b.box.data.write(frame(1, 'I', Buffer.from('typed in')));
      b.box.data.write(frame(1, 'E'));
      expect(await b.when('X1')).toBe(0);
      await b.when('C1.1');
      expect(b.out.get(1)).toBe('typed in');
      // A run taken by the process made ahead: its stdio, the mail channel and ls's own folder; a /tmp nobody wrote to; PID 1.
      b.box.run(3, { cwd: '/', argv: ['/bin/sh', '-c', 'touch /tmp/left; ls /proc/self/fd; echo pid $$'], env: {}, limits: b.limits });
      expect(await b.when('X3')).toBe(0);
      await b.when('C3.1');
      expect(b.out.get(3)).toBe('0\n1\n2\n3\n4\npid 1\n');
      b.box.run(4, { cwd: '/', argv: ['/bin/ls', '-A', '/tmp'], env: {}, limits: b.limits });
      expect(await b.when('X4')).toBe(0);
      await b.when('C4.1');
      expect(b.out.get(4) ?? '').not.toMatch(/left/);
      // Another size of /tmp than the one made ahead: a process of its own, as asked.
      b.box.run(5, { cwd: '/', argv: ['/bin/sh', '-c', 'df -k /tmp | tail -1'], env: {}, limits: { ...b.limits, tmp: 2 * 1024 * 1024 } });
      expect(await b.when('X5')).toBe(0);
      await b.when('C5.1');
      expect(b.out.get(5)!.trim().split(/\s+/)[1]).toBe('2048');
    }));

  it('passes a run no fd of its own, however high its number (an fd above 1023 left open by whoever started it)', async () => {
    const init = compileBoxInit(nativeDir());
    if (!init.ok) throw new Error(init.why);
    const caps = detectSandbox('nobody');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-forkbox-'));
    chmodSync(dir, 0o755);
    chownSync(dir, 65534, 65534);
    const spec = forkBoxSpec({ ...caps, drop: { user: 'nobody', uid: 65534, gid: 65534, setpriv: caps.drop?.setpriv ?? 'setpriv' } }, {
      folders: [],
      scratch: dir,
      memory: 64 * 1024 * 1024,
      fileMax: 1024 * 1024,
      init: init.path,
    });
    const high = 1100;
    // fd 5: the box's system call filter, when it has one (FILTER_FD)
    const stdio = Array.from({ length: high + 1 }, (_, i) => (i >= 2 && i <= 4) || i === high || (i === FILTER_FD && spec.filter) ? 'pipe' : 'ignore') as Array<'pipe' | 'ignore'>;
    const proc = spawn(spec.command, spec.args, { cwd: spec.cwd, env: {}, stdio });
    feedFilter(spec, proc);
    try {
      let out = '';
      const exited = new Promise<void>((resolve) =>
        frameReader(proc.stdio[4] as never, (id, type, payload) => {
          if (type === 'O') out += payload.toString('latin1');
          if (type === 'C' && payload.readUInt8(0) === 1) resolve();
        }),
      );
      (proc.stdio[3] as unknown as NodeJS.WritableStream).write(runFrame(1, { cwd: '/', argv: ['/bin/ls', '/proc/self/fd'], env: {}, limits: { cpu: 5, data: 16 * 1024 * 1024, fsize: 1024 * 1024, nofile: 64, tmp: 1024 * 1024 } }));
      await exited;
      // ls's own: its stdio, the mail channel, the folder it lists.
      expect(out.split('\n').filter(Boolean).map(Number).sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4]);
    } finally {
      proc.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(boxMissing || process.getuid?.() !== 0 || process.arch !== 'x64')('a box started ahead (no box-init: no C compiler)', () => {
  it('gets the same system call filter, from bwrap: no vsock, setsid, io_uring, keys, perf events or userfaultfd', async () => {
    const caps = detectSandbox('nobody');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-ahead-'));
    chmodSync(dir, 0o755);
    const scratch = path.join(dir, 'scratch');
    mkdirSync(scratch);
    chownSync(scratch, 65534, 65534);
    writeFileSync(path.join(dir, 'calls.pl'), CALLS_PL);
    const drop = { user: 'nobody', uid: 65534, gid: 65534, setpriv: caps.drop?.setpriv ?? 'setpriv' };
    const spec = scriptSpec({ ...caps, drop }, { folders: [dir], scratch, memory: 64 * 1024 * 1024, fileMax: 1024 * 1024, argv: ['/usr/bin/perl', path.join(dir, 'calls.pl')], env: {} });
    const pool = new BoxPool({ depth: 0, max: 0, idleMs: 1000 });
    try {
      const p = pool.start(spec);
      let out = '';
      p.stdout!.on('data', (c: Buffer) => (out += c.toString('latin1')));
      p.stdin!.end();
      await new Promise((resolve) => p.on('close', resolve));
      expect(out.split('\r\n\r\n')[1]?.trim().split('\n')).toEqual(REFUSED);
    } finally {
      pool.discard();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
