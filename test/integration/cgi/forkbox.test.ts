import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boxMissing, call, startCgiSuite, type CgiTestSuite } from '../../helpers/cgi.ts';

// A tenant's scripts share one persistent box (box-init as its PID 1, as
// root); each run is a clone in fresh PID, mount, IPC and UTS namespaces.
// What one run leaves or sees must still be its own: its leftovers end
// with it, its /tmp is its own, it sees no other run's processes, holds no
// capability and no fd of box-init's, and a run killed at the wall time
// takes its children with it.

const CT = 'printf "Content-Type: text/plain\\r\\n\\r\\n"\n';
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

describe.skipIf(boxMissing || process.getuid?.() !== 0)('classic CGI in a persistent box per tenant', () => {
  it('runs in box-init\'s box (the launcher says so)', () => {
    expect(s.cgi.launcher()?.forkBox).toBe(true);
  });

  it('answers at the script\'s end, and what it left running in the background ends with it', async () => {
    const res = await call(s.http, 'box.test', '/cgi-bin/bg.sh');
    expect([res.status, await res.text()]).toEqual([200, 'answered\n']);
    expect(running(['sleep', '41.5'])).toEqual([]);
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

  it('is killed at the wall time (504) with every process it started', async () => {
    const res = await call(s.http, 'box.test', '/cgi-bin/stuck.sh');
    expect(res.status).toBe(504);
    expect(running(['sleep', '43.5'])).toEqual([]);
    expect(running(['sleep', '30'])).toEqual([]);
    expect(s.cgi.running('box.test')).toBe(0);
  });

  it('keeps one box for the tenant\'s runs, and starts a fresh one after a reload', async () => {
    const uid = s.cgi.launcher()!.uids['box.test'];
    const boxes = () => readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((d) => {
      try {
        return readFileSync(`/proc/${d}/comm`, 'utf8').startsWith('box-init') && new RegExp(`^Uid:\\s+${uid}\\s`, 'm').test(readFileSync(`/proc/${d}/status`, 'utf8'));
      } catch {
        return false; // ended meanwhile
      }
    });
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
