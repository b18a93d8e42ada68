import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BoxPool } from '../../../src/cgi/boxes.ts';
import { goScript, STUB, type SpawnSpec } from '../../../src/cgi/sandbox.ts';

// The stub a script's box waits in, and the pool of boxes started ahead,
// with the real shell (no bwrap: the box itself is proven over HTTP in
// test/integration/cgi/). What a request puts in a meta-variable must reach
// the script byte for byte and never be read as shell syntax.

/** A run of `argv` through the stub and the pool, as a script's box would do it: what it printed, how it ended. */
function run(pool: BoxPool, argv: string[], env: Record<string, string>, body = ''): Promise<{ out: string; code: number | null }> {
  const spec: SpawnSpec = { command: STUB[0]!, args: STUB.slice(1), cwd: '/', forks: false, go: goScript(argv, env, '/tmp') };
  const p = pool.start(spec);
  let out = '';
  p.stdout!.on('data', (c: Buffer) => (out += c.toString('latin1')));
  p.stdin!.on('error', () => undefined); // a program that does not read its stdin
  p.stdin!.end(body);
  return new Promise((resolve) => p.on('close', (code) => resolve({ out, code })));
}

/** Processes whose command line is the stub's, now. */
function stubs(): number {
  let n = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'latin1') === `${STUB.join('\0')}\0` && Number(readFileSync(`/proc/${pid}/stat`, 'latin1').split(') ')[1]!.split(' ')[1]) === process.pid) n++;
    } catch {
      // ended while we looked
    }
  }
  return n;
}

const HOSTILE = [
  "it's",
  '$(touch /tmp/pwned-by-a-header)',
  '`id`',
  '"double" \\ back\\slash ; & | > < *',
  "'; exit 3; '",
  'line one\nline two\r\n',
  '$n $go ${IFS}',
  'ünïcödé',
  '',
];

describe('goScript and the stub: a run handed to a box started ahead', () => {
  it('gives the script exactly the meta-variables, whatever they hold, and the body on stdin', async () => {
    const pool = new BoxPool({ depth: 0, max: 0, idleMs: 1000 });
    const env = Object.fromEntries(HOSTILE.map((v, i) => [`HTTP_X_${i}`, v]));
    const r = await run(pool, ['/usr/bin/env', '-0'], env);
    expect(r.code).toBe(0);
    const got = Object.fromEntries(
      r.out
        .split('\0')
        .filter(Boolean)
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    // Byte for byte (the stub's own n and go are not exported; PWD is the script's folder, as before).
    expect(got).toEqual({ ...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, Buffer.from(v).toString('latin1')])), PWD: '/tmp' });
    const cat = await run(pool, ['/bin/cat'], {}, 'the body\n');
    expect(cat.out).toBe('the body\n');
  });

  it('passes arguments as they are and refuses a name that is not a variable name or a NUL', async () => {
    const pool = new BoxPool({ depth: 0, max: 0, idleMs: 1000 });
    const r = await run(pool, ['/usr/bin/printf', '%s|', ...HOSTILE], {});
    expect(r.out).toBe(`${HOSTILE.map((v) => Buffer.from(v).toString('latin1')).join('|')}|`);
    expect(() => goScript(['/bin/true'], { 'A;B': 'x' }, '/')).toThrow(/not an environment variable name/);
    expect(() => goScript(['/bin/true'], { A: 'x\0y' }, '/')).toThrow(/NUL/);
  });
});

describe('BoxPool', () => {
  it('starts the next boxes ahead, gives each exactly one run, and ends the unused ones on discard', async () => {
    const pool = new BoxPool({ depth: 2, max: 8, idleMs: 60_000 });
    const pids = new Set<string>();
    for (let i = 0; i < 4; i++) {
      // $$ is the shell's pid: the process that ran this request, which never runs another.
      const r = await run(pool, ['/bin/sh', '-c', 'echo $$'], {});
      pids.add(r.out.trim());
    }
    expect(pids.size).toBe(4);
    expect(pool.size).toBe(2);
    expect(stubs()).toBe(2);
    pool.discard();
    expect(pool.size).toBe(0);
    // Their fd 4 closed: each stub reads no run and exits (killed besides).
    await expect.poll(stubs, { timeout: 5000 }).toBe(0);
  });

  it('keeps at most `max` boxes ahead in all, and ends one nobody took after idleMs', async () => {
    const pool = new BoxPool({ depth: 2, max: 1, idleMs: 200 });
    await run(pool, ['/bin/true'], {});
    expect(pool.size).toBe(1);
    await expect.poll(() => pool.size, { timeout: 5000 }).toBe(0);
    await expect.poll(stubs, { timeout: 5000 }).toBe(0);
  });
});
