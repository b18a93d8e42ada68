import { chmodSync, existsSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boxMissing, call, startCgiSuite, startOutsideListeners, type CgiTestSuite, type OutsideListeners } from '../../helpers/cgi.ts';

// Classic CGI scripts (RFC 3875) in Perl, Python and sh: a tenant's file in
// its cgi-bin/ with a #! line runs in the same box as JavaScript handlers,
// with the meta-variables as its environment and the body on its stdin.
// suEXEC's checks refuse what must not run; attacked from inside, the box
// holds in every language.

const script = (name: string) => readFileSync(path.join(import.meta.dirname, '../../fixtures/cgi/classic', name));
const SECRET = 'victim secret 51c2';
let s: CgiTestSuite;
let outside: OutsideListeners;

beforeAll(async () => {
  s = await startCgiSuite({
    main: { cgi: { timeout: 2, maxOutput: '256KiB' } },
    tenants: {
      'evil.test': { domains: ['evil.test'], cgi: true },
      'victim.test': { domains: ['victim.test'] },
      'lax.test': { domains: ['lax.test'], cgi: true },
      'plain.test': { domains: ['plain.test'] },
    },
    files: {
      'evil.test/cgi-bin/hostile.pl': script('hostile.pl'),
      'evil.test/cgi-bin/hostile.py': script('hostile.py'),
      'evil.test/cgi-bin/hostile.sh': script('hostile.sh'),
      'evil.test/cgi-bin/env.sh': script('env.sh'),
      'evil.test/cgi-bin/hello.py': script('hello.py'),
      'evil.test/cgi-bin/hello.pl': script('hello.pl'),
      'evil.test/cgi-bin/nph-hello.pl': script('hello.pl'),
      'evil.test/cgi-bin/open.pl': script('hello.pl'),
      'evil.test/cgi-bin/suid.pl': script('hello.pl'),
      'evil.test/cgi-bin/noshebang.pl': 'print "Content-Type: text/plain\\r\\n\\r\\nhi";\n',
      'evil.test/cgi-bin/elsewhere.pl': '#!/opt/evil/perl\nprint "hi";\n',
      'evil.test/cgi-bin/linger.sh': '#!/bin/sh\n(exec sleep 37.25) >/dev/null 2>&1 &\nprintf "Content-Type: text/plain\\r\\n\\r\\nanswered\\n"\n',
      'evil.test/cgi-bin/slow.sh': '#!/bin/sh\nexec sleep 30\n',
      'evil.test/cgi-bin/flood.sh': '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n"\nexec yes\n',
      'evil.test/cgi-bin/hello.js.txt': script('hello.pl'),
      'evil.test/cgi-bin/fresh.sh': '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n"\nif [ -e /tmp/used ]; then echo reused; else echo fresh; fi\n: > /tmp/used\n',
      'victim.test/secret.txt': SECRET,
      'lax.test/cgi-bin/hello.pl': script('hello.pl'),
      'plain.test/cgi-bin/hello.pl': script('hello.pl'),
    },
  });
  const bin = path.join(s.sitesDir, 'evil.test', 'cgi-bin');
  chmodSync(path.join(bin, 'open.pl'), 0o666);
  chmodSync(path.join(bin, 'suid.pl'), 0o4755);
  chmodSync(path.join(s.sitesDir, 'lax.test', 'cgi-bin'), 0o777);
  symlinkSync('/etc/passwd', path.join(s.sitesDir, 'evil.test', 'passwd.txt'));
  symlinkSync(path.join(s.sitesDir, 'victim.test', 'secret.txt'), path.join(s.sitesDir, 'evil.test', 'neighbour.txt'));
  outside = await startOutsideListeners(s.dir);
});
afterAll(async () => {
  outside?.close();
  await s?.stop();
});

async function attempt(lang: 'pl' | 'py' | 'sh', a: string, p: string): Promise<string> {
  // Raw, not encoded: the shell script reads the query as it is (paths here are plain).
  const res = await call(s.http, 'evil.test', `/cgi-bin/hostile.${lang}?a=${a}&p=${p}`);
  expect(res.status).toBe(200);
  return (await res.text()).trim();
}

const LANGS = ['pl', 'py', 'sh'] as const;

describe.skipIf(boxMissing)('classic CGI scripts', () => {
  it('gets the RFC 3875 meta-variables as its environment and the body on stdin (sh), and nothing of the suite', async () => {
    process.env.MAKEWAVES_TEST_SECRET = 'hunter2-in-the-suite-environment';
    try {
      const res = await call(s.http, 'evil.test', '/cgi-bin/env.sh/extra/path?x=1&y=%20', {
        method: 'POST',
        body: 'hello=world',
        headers: { 'content-type': 'application/x-www-form-urlencoded', proxy: 'http://attacker.example:3128', 'x-test': 'yes', 'x-quote': "it's $(id) `id` \"q\" \\ ; exit 3" },
      });
      expect(res.status).toBe(201);
      expect(res.headers['x-script']).toBe('sh');
      const text = await res.text();
      const [envText, body] = text.split('-- body:\n');
      const env = Object.fromEntries(envText!.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
      expect(env).toMatchObject({
        GATEWAY_INTERFACE: 'CGI/1.1',
        SERVER_SOFTWARE: 'makewaves',
        SERVER_NAME: 'evil.test',
        SERVER_PORT: String(s.port),
        REQUEST_METHOD: 'POST',
        QUERY_STRING: 'x=1&y=%20',
        SCRIPT_NAME: '/cgi-bin/env.sh',
        PATH_INFO: '/extra/path',
        CONTENT_TYPE: 'application/x-www-form-urlencoded',
        CONTENT_LENGTH: '11',
        REMOTE_ADDR: '127.0.0.1',
        HTTP_X_TEST: 'yes',
        // Handed to a box started ahead as shell text: it arrives as it was sent, never run.
        HTTP_X_QUOTE: "it's $(id) `id` \"q\" \\ ; exit 3",
        PATH: '/usr/local/bin:/usr/bin:/bin',
      });
      expect(env.SCRIPT_FILENAME).toBe(path.join(s.sitesDir, 'evil.test', 'cgi-bin', 'env.sh'));
      expect(env.HTTP_PROXY).toBeUndefined();
      expect(text).not.toContain('hunter2');
      expect(body).toBe('hello=world');
    } finally {
      delete process.env.MAKEWAVES_TEST_SECRET;
    }
  });

  it('runs each request in a box of its own, even with boxes started ahead (nothing of one run is seen by the next)', async () => {
    for (let i = 0; i < 4; i++) {
      const res = await call(s.http, 'evil.test', '/cgi-bin/fresh.sh');
      expect([res.status, (await res.text()).trim()]).toEqual([200, 'fresh']);
    }
  });

  it('runs Perl and Python by their #! line, with PATH_INFO, the query and the body', async () => {
    const py = await call(s.http, 'evil.test', '/cgi-bin/hello.py/p', { method: 'POST', body: 'from-py' });
    expect([py.status, await py.text()]).toEqual([200, 'POST evil.test /p from-py']);
    const pl = await call(s.http, 'evil.test', '/cgi-bin/hello.pl?q=1', { method: 'POST', body: 'from-pl' });
    expect([pl.status, await pl.text()]).toEqual([200, 'POST q=1 from-pl']);
  });

  it.each([
    ['nph-hello.pl', 'evil.test', /non-parsed-header/],
    ['open.pl', 'evil.test', /writable by others than its owner \(mode 0666\)/],
    ['suid.pl', 'evil.test', /setuid or setgid/],
    ['hello.pl', 'lax.test', /its folder is writable by others/],
    ['noshebang.pl', 'evil.test', /no #! line/],
    ['elsewhere.pl', 'evil.test', /not an installed interpreter/],
  ])('refuses %s on %s (500, and the log says why)', async (name, host, why) => {
    const res = await call(s.http, host, `/cgi-bin/${name}`);
    expect(res.status).toBe(500);
    expect(await res.text()).not.toContain('Content-Type: text/plain');
    expect(s.logs().some((l) => l.msg === 'handler refused' && l.handler === name && why.test(String(l.why)))).toBe(true);
  });

  it('runs nothing for a tenant without cgi: true, nor a script addressed as .js', async () => {
    expect((await call(s.http, 'plain.test', '/cgi-bin/hello.pl')).status).toBe(404);
    expect((await call(s.http, 'evil.test', '/cgi-bin/hello.js')).status).toBe(404);
    expect((await call(s.http, 'evil.test', '/cgi-bin/no-such.pl')).status).toBe(404);
  });

  it.each(LANGS)('(%s) cannot read what is not its own', async (lang) => {
    const targets = [
      '/etc/shadow',
      '/etc/passwd',
      path.join(s.dataDir, 'makewaves.db'),
      path.join(s.dir, 'config', 'makewaves.yaml'),
      path.join(s.sitesDir, 'victim.test', 'secret.txt'),
      path.join(s.sitesDir, 'evil.test', '..', 'victim.test', 'secret.txt'),
      path.join(s.sitesDir, 'evil.test', 'passwd.txt'),
      path.join(s.sitesDir, 'evil.test', 'neighbour.txt'),
      `/proc/1/root${path.join(s.sitesDir, 'victim.test', 'secret.txt')}`,
      '/proc/1/root/etc/passwd',
    ];
    for (const p of targets) {
      const r = await attempt(lang, 'read', p);
      expect(r, p).toMatch(/^fail /);
      expect(r).not.toContain(SECRET);
    }
    // Its own web root it reads.
    expect(await attempt(lang, 'read', path.join(s.sitesDir, 'evil.test', 'cgi-bin', 'hello.pl'))).toMatch(/^ok #!\/usr\/bin\/perl/);
  });

  it.each(LANGS)('(%s) writes its scratch folder and /tmp of its box, nothing else', async (lang) => {
    const outside = [
      path.join(s.sitesDir, 'evil.test', `dropped-${lang}`),
      path.join(s.sitesDir, 'victim.test', `dropped-${lang}`),
      path.join(s.dataDir, `dropped-${lang}`),
      path.join(s.dataDir, 'cgi', 'evil.test', '..', `dropped-${lang}`),
    ];
    for (const [i, p] of outside.entries()) {
      const r = await attempt(lang, 'write', p);
      // Web roots are read-only or absent in the box. The test folder lies under /tmp, so data/ here is
      // only a folder in the box's own /tmp (a tmpfs gone with it); in no case does the write reach the host.
      if (i < 2) expect(r, p).toMatch(/^fail /);
      expect(existsSync(path.normalize(p)), p).toBe(false);
    }
    expect(await attempt(lang, 'write', path.join(s.dataDir, 'cgi', 'evil.test', `kept-${lang}`))).toBe('ok');
    expect(readFileSync(path.join(s.dataDir, 'cgi', 'evil.test', `kept-${lang}`), 'utf8')).toMatch(/^written by /);
    // Nothing of the box's own that has no size cap: its / and /dev (/dev/shm included) are read-only.
    for (const p of ['/dropped', '/dev/dropped', '/dev/shm/dropped']) expect(await attempt(lang, 'write', p), p).toMatch(/^fail /);
    expect(await attempt(lang, 'write', '/dev/null')).toBe('ok');
    // The box's /tmp is its own: nothing reaches the host's.
    expect(await attempt(lang, 'write', `/tmp/makewaves-box-${lang}-${process.pid}`)).toBe('ok');
    expect(existsSync(`/tmp/makewaves-box-${lang}-${process.pid}`)).toBe(false);
  });

  it('(sh) sees no other tenant, no data and no config when it lists folders', async () => {
    expect(await attempt('sh', 'list', s.sitesDir)).toBe('ok evil.test');
    expect(await attempt('sh', 'list', path.join(s.dataDir, 'cgi'))).toBe('ok evil.test');
    expect(await attempt('sh', 'list', s.dir)).not.toMatch(/config/);
    expect(await attempt('sh', 'list', '/etc')).toMatch(/^ok (ld\.so\.cache\s*)?(localtime)?$/);
    expect(await attempt('sh', 'list', '/home')).toMatch(/^fail /);
  });

  it('(sh) cannot make a user namespace of its own inside the box (no full set of capabilities anywhere)', async () => {
    expect(await attempt('sh', 'userns', '')).toMatch(/^fail /);
  });

  it.each(['pl', 'py'] as const)('(%s) reaches no TCP port, UDP port or Unix socket by path', async (lang) => {
    expect(await attempt(lang, 'tcp', String(s.port))).toMatch(/^fail /);
    expect(await attempt(lang, 'udp', String(outside.udpPort))).toMatch(/^fail /);
    expect(await attempt(lang, 'unix', outside.socket)).toMatch(/^fail /);
  });

  it('leaves nothing running after its answer: what it started ends with it', async () => {
    const res = await call(s.http, 'evil.test', '/cgi-bin/linger.sh');
    expect([res.status, await res.text()]).toEqual([200, 'answered\n']);
    const lingering = readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .filter((d) => {
        try {
          return readFileSync(`/proc/${d}/cmdline`, 'utf8') === 'sleep\u000037.25\u0000';
        } catch {
          return false; // ended meanwhile
        }
      });
    expect(lingering).toEqual([]);
  });

  it('is killed after cgi.timeout (504) and when it prints without end (502)', async () => {
    expect((await call(s.http, 'evil.test', '/cgi-bin/slow.sh')).status).toBe(504);
    expect((await call(s.http, 'evil.test', '/cgi-bin/flood.sh')).status).toBe(502);
    expect(s.cgi.running('evil.test')).toBe(0);
  });
});

describe.skipIf(boxMissing)('classic CGI scripts under the concurrency limits', () => {
  it('wait for room like warm handlers (cgi.perTenant, cgi.queue) instead of being refused', async () => {
    const t = await startCgiSuite({
      main: { cgi: { perTenant: 1, queue: 4 } },
      tenants: { 'busy.test': { domains: ['busy.test'], cgi: true } },
      files: {
        'busy.test/cgi-bin/nap.sh': '#!/bin/sh\nsleep 0.3\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s\\n" "$QUERY_STRING"\n',
        'busy.test/cgi-bin/hi.js': "module.exports = (c) => c.stdout.write('Content-Type: text/plain\\r\\n\\r\\njs');\n",
      },
    });
    try {
      // A warm JS process holds the tenant's only slot while idle: the scripts make it give way.
      expect((await call(t.http, 'busy.test', '/cgi-bin/hi')).status).toBe(200);
      const answers = await Promise.all([1, 2, 3].map(async (i) => {
        const res = await call(t.http, 'busy.test', `/cgi-bin/nap.sh?${i}`);
        return [res.status, (await res.text()).trim()];
      }));
      expect(answers).toEqual([[200, '1'], [200, '2'], [200, '3']]);
      expect(t.logs().some((l) => l.msg === 'handler request refused')).toBe(false);
      expect(t.cgi.running('busy.test')).toBe(0);
      expect(t.cgi.processes()).toBe(0);
    } finally {
      await t.stop();
    }
  });
});
