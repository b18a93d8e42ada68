import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boxMissing, call, startCgiSuite, type CgiTestSuite } from '../../helpers/cgi.ts';
import { waitFor } from '../../helpers/suite.ts';

const fixture = (name: string) => readFileSync(path.join(import.meta.dirname, '../../fixtures/cgi', name));
const isRoot = process.getuid?.() === 0;

let s: CgiTestSuite;

beforeAll(async () => {
  process.env.MAKEWAVES_TEST_SECRET = 'hunter2-in-the-suite-environment';
  s = await startCgiSuite({
    main: { cgi: { timeout: 2, memory: '96MiB', maxOutput: '1MiB', maxBody: '64KiB', perTenant: 2, queue: 1, scratchFileMax: '1MiB' } },
    tenants: {
      'evil.test': { domains: ['evil.test'], cgi: true },
      'victim.test': { domains: ['victim.test'], cgi: true },
      'plain.test': { domains: ['plain.test'] },
    },
    files: {
      'evil.test/cgi-bin/hostile.js': fixture('hostile.js'),
      'evil.test/cgi-bin/echo.js': fixture('echo.js'),
      'victim.test/index.html': '<p>victim</p>',
      'victim.test/cgi-bin/echo.js': fixture('echo.js'),
      'plain.test/index.html': '<p>plain</p>',
      'plain.test/cgi-bin/echo.js': fixture('echo.js'),
    },
  });
});
afterAll(async () => {
  delete process.env.MAKEWAVES_TEST_SECRET;
  await s?.stop();
});

function get(host: string, p: string, init: { method?: string; body?: string; headers?: Record<string, string> } = {}) {
  return call(s.http, host, p, init);
}

async function attack(name: string, extra = ''): Promise<{ ok: boolean; code?: string; value?: unknown }> {
  const res = await get('evil.test', `/cgi-bin/hostile?attack=${name}${extra}`);
  expect(res.status).toBe(200);
  return (await res.json()) as { ok: boolean; code?: string; value?: unknown };
}

function logged(msg: string, match: (l: Record<string, unknown>) => boolean = () => true) {
  return s.logs().filter((l) => l.msg === msg && match(l));
}

describe.skipIf(boxMissing)('CGI gateway: meta-variables, body and response', () => {
  it('passes RFC 3875 meta-variables and the body, and nothing of the suite environment', async () => {
    const res = await get('evil.test', '/cgi-bin/echo/some/path?a=1&b=%20', {
      method: 'POST',
      body: 'hello=world',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        proxy: 'http://attacker.example:3128',
        authorization: 'Basic c2VjcmV0',
        'x-with_underscore': 'smuggled',
        'x-custom': 'one',
        cookie: 'a=1',
      },
    });
    expect(res.status).toBe(200);
    expect(res.headers['x-handler']).toBe('echo');
    const out = (await res.json()) as { env: Record<string, string>; body: string; processEnv: Record<string, string>; uid: number };
    expect(out.body).toBe('hello=world');
    expect(out.env).toMatchObject({
      GATEWAY_INTERFACE: 'CGI/1.1',
      SERVER_NAME: 'evil.test',
      SERVER_PORT: String(s.port),
      SERVER_PROTOCOL: 'HTTP/1.1',
      REQUEST_METHOD: 'POST',
      QUERY_STRING: 'a=1&b=%20',
      CONTENT_TYPE: 'application/x-www-form-urlencoded',
      CONTENT_LENGTH: '11',
      REMOTE_ADDR: '127.0.0.1',
      SCRIPT_NAME: '/cgi-bin/echo',
      PATH_INFO: '/some/path',
      HTTP_X_CUSTOM: 'one',
      HTTP_COOKIE: 'a=1',
      HTTP_HOST: 'evil.test',
    });
    // httpoxy, credentials, and a header name with "_" never arrive.
    expect(out.env.HTTP_PROXY).toBeUndefined();
    expect(out.env.HTTP_AUTHORIZATION).toBeUndefined();
    expect(Object.keys(out.env).filter((k) => k.includes('UNDERSCORE'))).toEqual([]);
    expect(JSON.stringify(out)).not.toContain('hunter2');
    expect(out.processEnv).toEqual({});
    if (isRoot) expect(out.uid).not.toBe(0);
  });

  it('answers 404 for tenants without cgi: true and for unknown names; never serves handler source', async () => {
    expect((await get('plain.test', '/cgi-bin/echo')).status).toBe(404);
    expect((await get('evil.test', '/cgi-bin/nothing-here')).status).toBe(404);
    const src = await get('evil.test', '/cgi-bin/echo.js');
    expect(src.status).toBe(404);
    expect(await src.text()).not.toContain('module.exports');
  });

  it('refuses a body over cgi.maxBody with 413', async () => {
    const res = await get('evil.test', '/cgi-bin/echo', { method: 'POST', body: 'x'.repeat(65 * 1024) });
    expect(res.status).toBe(413);
    expect(logged('handler request refused', (l) => String(l.why).includes('maxBody')).length).toBeGreaterThan(0);
  });

  it('answers 500 with a reference when a handler throws, 502 for an unusable answer', async () => {
    const thrown = await get('evil.test', '/cgi-bin/hostile?attack=throw');
    expect(thrown.status).toBe(500);
    const ref = /Reference: (\w+)/.exec(await thrown.text())?.[1];
    expect(logged('handler threw', (l) => l.ref === ref && String(l.error).includes('handler bug'))).toHaveLength(1);
    expect((await get('evil.test', '/cgi-bin/hostile?attack=garbage')).status).toBe(502);
    expect((await get('evil.test', '/cgi-bin/hostile?attack=timer-throw')).status).toBe(500);
  });
});

describe.skipIf(boxMissing)('CGI sandbox: hostile handlers are contained', () => {
  it('cannot read /etc/passwd', async () => {
    expect(await attack('passwd')).toEqual({ ok: false, code: 'ERR_ACCESS_DENIED' });
  });

  it("cannot read or write another tenant's files, nor its scratch folder", async () => {
    expect(await attack('read-neighbour')).toEqual({ ok: false, code: 'ERR_ACCESS_DENIED' });
    expect(await attack('write-neighbour')).toEqual({ ok: false, code: 'ERR_ACCESS_DENIED' });
    expect(await readFile(path.join(s.sitesDir, 'victim.test/index.html'), 'utf8')).toBe('<p>victim</p>');
    // The neighbour's scratch exists once it ran a handler.
    expect((await get('victim.test', '/cgi-bin/echo')).status).toBe(200);
    expect(await attack('neighbour-scratch')).toEqual({ ok: false, code: 'ERR_ACCESS_DENIED' });
  });

  it('cannot keep its scratch folder open to others: the suite sets 0700 again before the next run', async () => {
    const dir = path.join(s.dataDir, 'cgi', 'evil.test');
    expect(await attack('chmod-scratch')).toEqual({ ok: true, value: '777' });
    expect(await attack('own-scratch')).toEqual({ ok: true, value: 'kept' });
    expect((statSync(dir).mode & 0o7777).toString(8)).toBe('700');
    expect(logged('handler scratch folder mode set again', (l) => l.tenant === 'evil.test' && l.was === '777')).toHaveLength(1);
  });

  it('writes only its own scratch folder, not even its own web root; reads no suite state', async () => {
    expect(await attack('own-scratch')).toEqual({ ok: true, value: 'kept' });
    expect(await readFile(path.join(s.dataDir, 'cgi/evil.test/note.txt'), 'utf8')).toBe('kept');
    expect(await attack('write-own-root')).toEqual({ ok: false, code: 'ERR_ACCESS_DENIED' });
    expect(await attack('suite-db')).toEqual({ ok: false, code: 'ERR_ACCESS_DENIED' });
    expect(await attack('symlink')).toEqual({ ok: false, code: 'ERR_ACCESS_DENIED' });
    // cgi.scratchFileMax, through RLIMIT_FSIZE
    expect(await attack('bigfile')).toEqual({ ok: false, code: 'EFBIG' });
  });

  it('cannot start processes, workers or native addons', async () => {
    expect(await attack('spawn')).toEqual({ ok: false, code: 'ERR_ACCESS_DENIED' });
    expect(await attack('worker')).toEqual({ ok: false, code: 'ERR_ACCESS_DENIED' });
    expect(await attack('addon')).toEqual({ ok: false, code: 'ERR_DLOPEN_DISABLED' });
  });

  it('cannot signal processes outside its own: not the suite, not other handlers', async () => {
    // A process of the handlers' own user (nobody when root, else the suite's user), which a plain kill could reach.
    const victim = isRoot
      ? spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'sleep', '60'], { stdio: 'ignore' })
      : spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      expect((await get('victim.test', '/cgi-bin/echo')).status).toBe(200);
      expect(await attack('kill', `&pid=${victim.pid}`)).toEqual({ ok: false, code: 'ESRCH ESRCH' });
      expect(victim.exitCode).toBeNull();
      expect(victim.signalCode).toBeNull();
      expect((await get('victim.test', '/cgi-bin/echo')).status).toBe(200);
    } finally {
      victim.kill('SIGKILL');
    }
  });

  it('cannot open sockets, not even to the suite itself', async () => {
    const r = await attack('socket', `&port=${s.port}`);
    expect(r.ok).toBe(false);
    expect(['ENETUNREACH', 'ECONNREFUSED']).toContain(r.code);
  });

  it('is killed after cgi.timeout (504) while static pages of other tenants keep answering', async () => {
    const spinning = get('evil.test', '/cgi-bin/hostile?attack=loop').then(async (r) => ({ status: r.status, at: Date.now() }));
    const statics: number[] = [];
    let spinDone = false;
    void spinning.then(() => (spinDone = true));
    // Static requests while the handler spins; bounded count.
    for (let i = 0; i < 20 && !spinDone; i++) {
      const r = await get('victim.test', '/index.html');
      expect(r.status).toBe(200);
      await r.text();
      statics.push(Date.now());
    }
    const spin = await spinning;
    expect(spin.status).toBe(504);
    // The static pages were answered while the handler was still spinning.
    expect(statics.length).toBe(20);
    expect(statics[19]!).toBeLessThan(spin.at);
    expect(logged('handler failed', (l) => String(l.why).includes('cgi.timeout')).length).toBeGreaterThan(0);
  });

  it('is killed when it allocates without bound (502), in the heap or in buffers', async () => {
    const before = logged('handler failed').length;
    expect((await get('evil.test', '/cgi-bin/hostile?attack=alloc')).status).toBe(502);
    expect((await get('evil.test', '/cgi-bin/hostile?attack=buffers')).status).toBe(502);
    // Mostly "over cgi.memory"; the kernel's own limit can also end it by a signal.
    expect(logged('handler failed').length).toBe(before + 2);
  });

  it('is killed when it prints without end (502)', async () => {
    expect((await get('evil.test', '/cgi-bin/hostile?attack=print')).status).toBe(502);
    expect(logged('handler failed', (l) => String(l.why).includes('maxOutput')).length, JSON.stringify(logged('handler failed').slice(-3))).toBe(1);
  });

  it('is killed when it floods stderr or asks for mail without end (502)', async () => {
    expect((await get('evil.test', '/cgi-bin/hostile?attack=stderr-flood')).status).toBe(502);
    expect((await get('evil.test', '/cgi-bin/hostile?attack=mail-flood')).status).toBe(502);
  });

  it('is killed when it keeps the CPU busy after answering', async () => {
    expect(await attack('background-spin')).toEqual({ ok: true, value: 'answered' });
    await waitFor(() => logged('idle handler process kept using the CPU; killed').length > 0, 10_000, 'the idle spinner to be killed');
  });

  it('gets 503 beyond its concurrency limits while other tenants still run', async () => {
    // perTenant 2 and queue 1: the fourth concurrent request of one tenant is refused.
    const spins = [1, 2, 3, 4].map(() => get('evil.test', '/cgi-bin/hostile?attack=loop').then((r) => r.status));
    const other = await get('victim.test', '/cgi-bin/echo');
    expect(other.status).toBe(200);
    const statuses = await Promise.all(spins);
    expect(statuses.filter((x) => x === 503)).toHaveLength(1);
    expect(statuses.filter((x) => x === 504)).toHaveLength(3);
    expect(logged('handler request refused', (l) => String(l.why).includes('concurrency')).length).toBeGreaterThan(0);
  });

  it("counts the suite's handlers and the tenant's own together against cgi.perTenant", async () => {
    const order: string[] = [];
    const spins = [1, 2].map(() => get('evil.test', '/cgi-bin/hostile?attack=loop').then((r) => order.push(`spin ${r.status}`)));
    // Both of the tenant's processes spin: FormMail waits in the queue until one is killed.
    await waitFor(() => s.cgi.running('evil.test') === 2, 5_000, 'two spinning processes');
    const fm = get('evil.test', '/cgi-bin/formmail').then((r) => order.push(`formmail ${r.status}`));
    await Promise.all([...spins, fm]);
    // FormMail only ran once a spinning process was killed: it cannot answer first. (The second
    // spin may time out a moment after FormMail answers: they were started at slightly different times.)
    expect(order[0]).toBe('spin 504');
    expect([...order].sort()).toEqual(['formmail 405', 'spin 504', 'spin 504']);
  });

  it('the suite still serves everyone after all of this', async () => {
    expect((await get('victim.test', '/cgi-bin/echo')).status).toBe(200);
    expect((await get('plain.test', '/')).status).toBe(200);
  });
});

describe.skipIf(boxMissing)('CGI gateway: the overall limit', () => {
  it('refuses with 503 when cgi.total processes are busy across tenants, and serves again after', async () => {
    const t = await startCgiSuite({
      main: { cgi: { timeout: 1, total: 2, queue: 0 } },
      tenants: { 'a.test': { domains: ['a.test'], cgi: true }, 'b.test': { domains: ['b.test'], cgi: true } },
      files: {
        'a.test/cgi-bin/spin.js': 'module.exports = () => { for (;;); };\n',
        'b.test/cgi-bin/hi.js': "module.exports = (c) => c.stdout.write('Content-Type: text/plain\\r\\n\\r\\nhi');\n",
      },
    });
    try {
      const spins = [1, 2].map(() => call(t.http, 'a.test', '/cgi-bin/spin').then((r) => r.status));
      await waitFor(() => t.cgi.running('a.test') === 2, 5_000, 'two spinning processes');
      const refused = await call(t.http, 'b.test', '/cgi-bin/hi');
      expect(refused.status).toBe(503);
      expect(refused.headers['retry-after']).toBe('1');
      expect(await Promise.all(spins)).toEqual([504, 504]);
      expect((await call(t.http, 'b.test', '/cgi-bin/hi')).status).toBe(200);
      expect(t.logs().some((l) => l.msg === 'handler request refused' && l.tenant === 'b.test')).toBe(true);
    } finally {
      await t.stop();
    }
  });
});

describe('CGI gateway: a machine without bubblewrap', () => {
  const files = { 'own.test/cgi-bin/hi.js': "module.exports = (c) => c.stdout.write('Content-Type: text/plain\\r\\n\\r\\nhi');\n" };
  const tenants = { 'own.test': { domains: ['own.test'], cgi: true } };
  // Commands looked for in a folder that holds the other tools but not bwrap: what a machine without the package finds.
  const withoutBwrap = async () => {
    const { detectSandbox: detect } = await import('../../../src/cgi/sandbox.ts');
    const bin = mkdtempSync(path.join(os.tmpdir(), 'makewaves-nobwrap-'));
    for (const tool of ['setpriv', 'prlimit', 'nice']) {
      const found = ['/usr/bin', '/bin', '/usr/sbin'].map((d) => path.join(d, tool)).find((f) => existsSync(f));
      if (found) symlinkSync(found, path.join(bin, tool));
    }
    return (user: string) => detect(user, undefined, bin);
  };

  it("refuses every handler, the tenant's and the suite's (503), says so at start naming the package, and serves pages", async () => {
    const t = await startCgiSuite({ tenants, files: { ...files, 'own.test/index.html': '<p>own</p>' }, sandbox: await withoutBwrap() });
    try {
      const start = t.logs().find((l) => String(l.msg).includes('no box for handlers: every'));
      expect(String(start?.why)).toMatch(/bwrap not found.*Debian package bubblewrap/);
      expect((await call(t.http, 'own.test', '/cgi-bin/hi')).status).toBe(503);
      expect((await call(t.http, 'own.test', '/cgi-bin/formmail', { method: 'POST', body: 'a=b' })).status).toBe(503);
      expect(t.logs().some((l) => l.msg === 'handler refused: no box for handlers' && l.tenant === 'own.test')).toBe(true);
      expect(t.cgi.processes()).toBe(0);
      expect((await call(t.http, 'own.test', '/')).status).toBe(200);
    } finally {
      await t.stop();
    }
  });
});

describe.skipIf(boxMissing)('CGI gateway: methods, redirects, reload, wiring', () => {
  it('answers HEAD without a body and turns a local Location into a redirect on the same site', async () => {
    const t = await startCgiSuite({
      tenants: { 'own.test': { domains: ['own.test'], cgi: true } },
      files: {
        'own.test/cgi-bin/go.js': "module.exports = (c) => c.stdout.write('Location: /elsewhere.html\\r\\n\\r\\n');\n",
        'own.test/cgi-bin/hi.js': "module.exports = (c) => c.stdout.write('Content-Type: text/plain\\r\\n\\r\\nhello ' + c.env.REQUEST_METHOD);\n",
      },
    });
    try {
      const head = await call(t.http, 'own.test', '/cgi-bin/hi', { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(head.headers['content-length']).toBe('10');
      expect(await head.text()).toBe('');
      const go = await call(t.http, 'own.test', '/cgi-bin/go');
      expect(go.status).toBe(302);
      expect(go.headers.location).toBe('/elsewhere.html');
    } finally {
      await t.stop();
    }
  });

  it("runs a tenant's replaced handler file at once, not the module its warm process loaded", async () => {
    const t = await startCgiSuite({
      tenants: { 'own.test': { domains: ['own.test'], cgi: true } },
      files: { 'own.test/cgi-bin/v.js': "module.exports = (c) => c.stdout.write('Content-Type: text/plain\\r\\n\\r\\none');\n" },
    });
    try {
      expect(await (await call(t.http, 'own.test', '/cgi-bin/v')).text()).toBe('one');
      writeFileSync(path.join(t.sitesDir, 'own.test/cgi-bin/v.js'), "module.exports = (c) => c.stdout.write('Content-Type: text/plain\\r\\n\\r\\ntwo, longer');\n");
      expect(await (await call(t.http, 'own.test', '/cgi-bin/v')).text()).toBe('two, longer');
    } finally {
      await t.stop();
    }
  });

  it('takes a reload: a tenant whose cgi is switched off gets 404', async () => {
    const { startTestSuite } = await import('../../helpers/suite.ts');
    const t = await startTestSuite({
      privateDir: true,
      tenants: { 'own.test': { domains: ['own.test'], cgi: true, forms: { recipients: ['a@example.net'] } } },
      files: { 'own.test/cgi-bin/hi.js': "module.exports = (c) => c.stdout.write('Content-Type: text/plain\\r\\n\\r\\nhi');\n" },
    });
    try {
      // The suite warned that the 0700 temp folder keeps the handlers' user out; open it as an operator would.
      if (isRoot) expect(t.logs().some((l) => l.dir === t.dir && String(l.msg).includes('cannot pass through'))).toBe(true);
      chmodSync(t.dir, 0o755);
      // The real composition root wires the gateway (and no queue yet: FormMail says so).
      const fm = await call(t.http, 'own.test', '/cgi-bin/formmail', { method: 'POST', body: 'm=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      expect(fm.status).toBe(503);
      expect((await call(t.http, 'own.test', '/cgi-bin/hi')).status).toBe(200);
      t.writeTenant('own.test', { domains: ['own.test'], cgi: false });
      await waitFor(() => t.logs().some((l) => l.msg === 'configuration reloaded'), 10_000, 'reload');
      expect((await call(t.http, 'own.test', '/cgi-bin/hi')).status).toBe(404);
    } finally {
      await t.stop();
    }
  });
});
