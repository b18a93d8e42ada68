import { chmodSync, chownSync, linkSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { describe, expect, it } from 'vitest';
import { LAUNCHER_CACHE_FILE, Launcher, MAX_REQUEST, parseRequest } from '../../../src/cgi/launcher.ts';
import type { SandboxCapabilities } from '../../../src/cgi/sandbox.ts';
import { createLogger } from '../../../src/core/log.ts';
import { loadConfig } from '../../../src/core/config/load.ts';
import { ParseCache } from '../../../src/core/config/parsecache.ts';
import { CgiUids, cgiUidMigrations } from '../../../src/state/cgiuids.ts';
import { openDb } from '../../../src/state/db.ts';
import { writeConfig } from '../../helpers/suite.ts';
import { tempDirs } from '../../helpers/tmp.ts';

const tmp = tempDirs('makewaves-launcher-');

describe('parseRequest: the launcher reads only its three requests', () => {
  const run = { op: 'run', id: 1, tenant: 'a.test', kind: 'script', name: 'id.sh', env: { QUERY_STRING: 'x=1', HTTP_X_TEST: 'y' } };
  it('takes a well-formed run, kill, scratch and reload', () => {
    expect(parseRequest(JSON.stringify(run))).toMatchObject({ ok: true, req: run });
    expect(parseRequest('{"op":"kill","id":3}')).toEqual({ ok: true, req: { op: 'kill', id: 3 } });
    expect(parseRequest('{"op":"scratch","id":3,"tenant":"a.test"}')).toEqual({ ok: true, req: { op: 'scratch', id: 3, tenant: 'a.test' } });
    expect(parseRequest('{"op":"reload"}')).toEqual({ ok: true, req: { op: 'reload' } });
  });
  it.each<[string, unknown, RegExp]>([
    ['not a text', { op: 'reload' }, /a JSON text/],
    ['malformed', '{"op":', /malformed JSON/],
    ['oversized', JSON.stringify({ ...run, env: { QUERY_STRING: 'x'.repeat(MAX_REQUEST) } }), /request over/],
    ['an array', '[]', /JSON object/],
    ['a uid', JSON.stringify({ ...run, uid: 0 }), /run takes exactly/],
    ['a gid', JSON.stringify({ ...run, gid: 0 }), /run takes exactly/],
    ['a path for the tenant', JSON.stringify({ ...run, tenant: '../etc' }), /tenant is not a tenant name/],
    ['a traversal in the script', JSON.stringify({ ...run, name: '../x.sh' }), /not a script file name/],
    ['an absolute script', JSON.stringify({ ...run, name: '/bin/sh' }), /not a script file name/],
    ['a .js as a script', JSON.stringify({ ...run, name: 'x.js' }), /not a script file name/],
    ['a dotted handler', JSON.stringify({ ...run, kind: 'own', name: 'a.b', env: {} }), /not a handler name/],
    ['an unknown kind', JSON.stringify({ ...run, kind: 'root' }), /kind must be/],
    ['a zero id', JSON.stringify({ ...run, id: 0 }), /id must be/],
    ['LD_PRELOAD', JSON.stringify({ ...run, env: { LD_PRELOAD: '/x.so' } }), /not a CGI meta-variable/],
    ['PATH', JSON.stringify({ ...run, env: { PATH: '/tmp' } }), /not a CGI meta-variable/],
    ['a NUL in a value', JSON.stringify({ ...run, env: { QUERY_STRING: 'a\0b' } }), /without NUL/],
    ['env for a JS handler', JSON.stringify({ ...run, kind: 'own', name: 'x', env: { QUERY_STRING: '' } }), /only scripts take env/],
    ['a kill with more', '{"op":"kill","id":3,"pid":1}', /kill takes only an id/],
    ['an unknown op', '{"op":"exec","argv":["sh"]}', /op must be/],
  ])('refuses %s', (_what, raw, why) => {
    const r = parseRequest(raw);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.why).toMatch(why);
  });
});

describe('CgiUids: a stable uid per tenant', () => {
  const range = { first: 300000, last: 300002 };
  it('keeps each uid across reopenings, keeps a removed tenant\'s while its files exist, and reuses it only when gone', () => {
    const dir = tmp();
    let db = openDb(dir, cgiUidMigrations);
    expect(new CgiUids(db).assign(['b', 'a'], range, new Set(), () => false)).toEqual([]);
    const first = new CgiUids(db).all();
    expect([first.get('b'), first.get('a')]).toEqual([300000, 300001]);
    db.close();
    // A restart: the same uids, a new tenant gets the next.
    db = openDb(dir, cgiUidMigrations);
    const store = new CgiUids(db);
    expect(store.assign(['a', 'b', 'c'], range, new Set(), () => false)).toEqual([]);
    expect(Object.fromEntries(store.all())).toEqual({ b: 300000, a: 300001, c: 300002 });
    // a removed, its files still there: d gets nothing (range exhausted), a's uid stays reserved.
    expect(store.assign(['b', 'c', 'd'], range, new Set(), (t) => t === 'a')).toEqual(['d']);
    expect(store.all().get('a')).toBe(300001);
    // a's files gone: its uid goes to d.
    expect(store.assign(['b', 'c', 'd'], range, new Set(), () => false)).toEqual([]);
    expect(store.all().get('d')).toBe(300001);
    expect(store.all().has('a')).toBe(false);
    db.close();
  });
  // The launcher and the server open the same database; each writes it (the launcher its uids at a start or a
  // reload). A transaction that read first and wrote after another process had written was refused at once
  // ("database is locked": SQLite's busy wait does not cover a read lock turned write lock), failing the launcher's
  // start. It takes the write lock when it begins: the other process waits its turn.
  it('holds the write lock from its start: another connection writing meanwhile waits, the assignment is not refused', () => {
    const dir = tmp();
    const db = openDb(dir, cgiUidMigrations);
    new CgiUids(db).assign(['a', 'b', 'c'], range, new Set(), () => false);
    const other = openDb(dir, cgiUidMigrations);
    other.pragma('busy_timeout = 50');
    let otherWrite = 'not tried';
    // The range is exhausted, so assign asks whether a's files are still there, after it has read the table: the
    // other connection writes then.
    const left = new CgiUids(db).assign(['b', 'c', 'd'], range, new Set(), () => {
      try {
        other.prepare("INSERT INTO cgi_uids (uid, tenant, assigned_at) VALUES (400000, 'x', datetime('now'))").run();
        otherWrite = 'written';
      } catch (err) {
        otherWrite = (err as Error).message;
      }
      return false;
    });
    expect(left).toEqual([]);
    expect(otherWrite).toBe('database is locked');
    expect(new CgiUids(db).all().get('d')).toBe(300000);
    other.close();
    db.close();
  });
  it('skips the uids it must avoid', () => {
    const db = openDb(tmp(), cgiUidMigrations);
    new CgiUids(db).assign(['a'], range, new Set([300000]), () => false);
    expect(new CgiUids(db).all().get('a')).toBe(300001);
    db.close();
  });
});

describe('Launcher: its own view of the config', () => {
  const caps: SandboxCapabilities = { permissionFlag: '--permission', box: undefined, refusal: 'no box in this test', nice: undefined, drop: undefined, prlimit: undefined };
  const log = createLogger({ level: 'silent' });
  it('gives uids at start, keeps them over a reload and a restart, gives a new tenant the next', () => {
    const dir = tmp();
    const { configDir } = writeConfig(dir, { main: { cgi: { uids: '240000-240099' } }, tenants: { 'a.test': { domains: ['a.test'] }, 'b.test': { domains: ['b.test'] } } });
    const suiteDir = path.join(dir, 'suite');
    mkdirSync(suiteDir);
    const one = new Launcher({ configDir, suiteDir, log, sandbox: () => caps });
    const uids = one.uidMap();
    expect(Object.keys(uids).sort()).toEqual(['a.test', 'b.test']);
    writeFileSync(path.join(configDir, 'tenants', 'c.test.yaml'), stringify({ domains: ['c.test'] }));
    one.load();
    expect(one.uidMap()).toMatchObject(uids);
    expect(one.uidOf('c.test')).toBe(240002);
    const two = new Launcher({ configDir, suiteDir, log, sandbox: () => caps });
    expect(two.uidMap()).toEqual(one.uidMap());
  });
  // A reload that fails where it writes the uid store (a state file that is no database) keeps the whole config it
  // had: no tenant added (none without a uid, refused as "cgi.uids exhausted"), none removed.
  it('keeps its config whole when a reload fails at the uid store', async () => {
    const dir = tmp();
    const { configDir } = writeConfig(dir, { main: { cgi: { uids: '241000-241099' } }, tenants: { 'a.test': { domains: ['a.test'] }, 'b.test': { domains: ['b.test'] } } });
    const suiteDir = path.join(dir, 'suite');
    mkdirSync(suiteDir);
    const launcher = new Launcher({ configDir, suiteDir, log, sandbox: () => caps });
    const uids = launcher.uidMap();
    writeFileSync(path.join(configDir, 'tenants', 'c.test.yaml'), stringify({ domains: ['c.test'] }));
    rmSync(path.join(configDir, 'tenants', 'b.test.yaml'));
    const dataDir = loadConfig(configDir).main.dataDir;
    for (const f of ['makewaves.db-wal', 'makewaves.db-shm']) rmSync(path.join(dataDir, f), { force: true });
    writeFileSync(path.join(dataDir, 'makewaves.db'), 'not a database, '.repeat(512));
    expect(() => launcher.load()).toThrow();
    expect(launcher.uidMap()).toEqual(uids);
    const run = (tenant: string) => launcher.check({ op: 'run', id: 1, tenant, kind: 'suite', name: 'formmail', env: {} });
    expect(await run('c.test')).toEqual({ ok: false, why: 'unknown tenant c.test' });
    // b.test is still a tenant of the config it keeps: refused here for this test's lack of a box, not as unknown.
    expect(await run('b.test')).toEqual({ ok: false, why: 'no box in this test' });
  });
  // <data> is the service user's: a link it puts at <data>/cgi (root's folder, replaceable while it is empty) had the
  // launcher, root for good, chmod and chown a folder of the tenant's name wherever the link pointed.
  it.skipIf(process.getuid?.() !== 0)('refuses a link at <data>/cgi: no folder it names is changed (as root)', () => {
    const dir = tmp();
    const { configDir, dataDir } = writeConfig(dir, { main: { cgi: { uids: '243000-243099' } }, tenants: { 'a.test': { domains: ['a.test'] } } });
    const suiteDir = path.join(dir, 'suite');
    mkdirSync(suiteDir);
    const launcher = new Launcher({ configDir, suiteDir, log, sandbox: () => caps });
    const elsewhere = path.join(dir, 'elsewhere');
    mkdirSync(path.join(elsewhere, 'a.test'), { recursive: true, mode: 0o755 });
    chmodSync(path.join(elsewhere, 'a.test'), 0o755);
    rmSync(path.join(dataDir, 'cgi'), { recursive: true, force: true });
    symlinkSync(elsewhere, path.join(dataDir, 'cgi'));
    expect(() => launcher.repairScratch('a.test')).toThrow(/symbolic link/);
    const st = statSync(path.join(elsewhere, 'a.test'));
    expect([st.uid, st.mode & 0o7777]).toEqual([0, 0o755]);
  });
  it('refuses a cgi.uids that is not a range of ordinary uids', () => {
    const dir = tmp();
    for (const bad of ['0-100', '300000-200000', 'lots', '200000-4294967295']) {
      const { configDir } = writeConfig(dir, { main: { cgi: { uids: bad } }, tenants: {} });
      expect(() => loadConfig(configDir)).toThrow(/cgi.uids|uids/);
    }
  });
});

describe('Launcher: a script run, with and without box-init', () => {
  const caps: SandboxCapabilities = { permissionFlag: '--permission', box: { bwrap: '/usr/bin/bwrap', noNestedUserns: true }, nice: undefined, drop: undefined, prlimit: undefined };
  const log = createLogger({ level: 'silent' });
  function setup(): { configDir: string; suiteDir: string } {
    const dir = tmp();
    const { configDir } = writeConfig(dir, {
      main: { cgi: { uids: '242000-242099', timeout: 7 } },
      tenants: { 'a.test': { domains: ['a.test'], cgi: true } },
      files: { 'a.test/cgi-bin/hi.sh': '#!/bin/sh\necho hi\n' },
    });
    return { configDir, suiteDir: tmp() };
  }
  const ask = { op: 'run' as const, id: 1, tenant: 'a.test', kind: 'script' as const, name: 'hi.sh', env: { QUERY_STRING: 'x=1' } };

  it('with box-init: a run for the tenant\'s persistent box (its env, cwd, limits), the box\'s command line ending with box-init', async () => {
    const launcher = new Launcher({ ...setup(), log, sandbox: () => caps, boxInit: { ok: true, path: '/opt/box-init-test' } });
    const checked = await launcher.check(ask);
    expect(checked.ok).toBe(true);
    if (!checked.ok) return;
    const fork = checked.run.fork!;
    expect(fork.run.argv).toEqual(['/bin/sh', expect.stringMatching(/\/a\.test\/cgi-bin\/hi\.sh$/)]);
    expect(fork.run.cwd).toMatch(/\/a\.test\/cgi-bin$/);
    expect(fork.run.env).toMatchObject({ QUERY_STRING: 'x=1', SERVER_SOFTWARE: 'makewaves', PATH: '/usr/local/bin:/usr/bin:/bin' });
    expect(fork.run.limits).toMatchObject({ cpu: 8, nofile: 256 });
    const box = fork.box();
    expect(box.args.at(-1)).toBe('/opt/box-init-test');
    expect(box.args).toEqual(expect.arrayContaining(['--cap-add', 'CAP_SYS_ADMIN', '--ro-bind', '/opt/box-init-test']));
    // Nothing of the run (no meta-variable) is in the box's command line: it is the same for every run of the tenant.
    expect(box.args.join(' ')).not.toContain('x=1');
  });

  it('without box-init (no compiler): one fresh box per run, the stub reading the run on fd 4, as before', async () => {
    const launcher = new Launcher({ ...setup(), log, sandbox: () => caps, boxInit: { ok: false, why: 'no C compiler (cc) to build box-init' } });
    const checked = await launcher.check(ask);
    expect(checked.ok).toBe(true);
    if (!checked.ok) return;
    expect(checked.run.fork).toBeUndefined();
    expect(checked.run.spec.go).toContain("export QUERY_STRING='x=1'");
    expect(checked.run.spec.args).not.toContain('--cap-add');
  });
});

describe("Launcher: a cache of parsed tenant files only root can have written", () => {
  const caps: SandboxCapabilities = { permissionFlag: '--permission', box: undefined, refusal: 'no box in this test', nice: undefined, drop: undefined, prlimit: undefined };
  const me = process.getuid!();
  const asRoot = me === 0;
  const run = { op: 'run' as const, id: 1, tenant: 'a.test', kind: 'suite' as const, name: 'x', env: {} };
  /** A config with a.test, and a cache that says a.test's file (unchanged) reads `suspended: true`: what a forger would write. */
  function setup() {
    const dir = tmp();
    const { configDir, dataDir } = writeConfig(dir, { main: { cgi: { uids: '240000-240099' } }, tenants: { 'a.test': { domains: ['a.test'] } } });
    const suiteDir = path.join(dir, 'suite');
    mkdirSync(suiteDir);
    const tenantFile = path.join(configDir, 'tenants', 'a.test.yaml');
    const forged = new ParseCache();
    forged.set(tenantFile, ParseCache.identity(readFileSync(tenantFile, 'utf8')), { domains: ['a.test'], suspended: true });
    const cgiDir = path.join(dataDir, 'cgi');
    const cacheFile = path.join(cgiDir, LAUNCHER_CACHE_FILE);
    mkdirSync(cgiDir, { recursive: true, mode: 0o711 });
    const forge = (file = cacheFile) => expect(forged.save(file)).toBeUndefined();
    const lines: string[] = [];
    const log = createLogger({ level: 'warn', destination: { write: (l: string) => void lines.push(l) } });
    const start = () => new Launcher({ configDir, suiteDir, log, sandbox: () => caps });
    return { dir, cgiDir, cacheFile, tenantFile, forge, start, lines };
  }
  /** What the launcher believes of a.test: suspended only if it took the forged cache's word. */
  const believes = async (l: Launcher) => {
    const r = await l.check(run);
    return r.ok ? 'ran' : r.why;
  };

  it('writes its cache 0600 in root\'s folder, and reads back one it wrote itself', async () => {
    const { cgiDir, cacheFile, tenantFile, forge, start, lines } = setup();
    const first = start();
    expect(first.saveCache()).toBeUndefined();
    const st = statSync(cacheFile);
    expect([st.uid, st.mode & 0o7777]).toEqual([me, 0o600]);
    expect(statSync(cgiDir).mode & 0o7777).toBe(0o711);
    expect(Object.keys(JSON.parse(readFileSync(cacheFile, 'utf8')).entries)).toEqual([tenantFile]);
    // A file with every mark of its own is used as it stands (which is why the forged ones below must be refused).
    forge();
    expect(await believes(start())).toBe('tenant a.test is suspended');
    expect(lines).toEqual([]);
  });

  it.each<[string, (s: ReturnType<typeof setup>) => void, RegExp]>([
    ['world-writable', (s) => (s.forge(), chmodSync(s.cacheFile, 0o666)), /open to others \(mode 666/],
    ['group-readable', (s) => (s.forge(), chmodSync(s.cacheFile, 0o640)), /open to others \(mode 640/],
    ['a symbolic link to a file of the right owner and mode', (s) => (s.forge(path.join(s.dir, 'elsewhere.json')), symlinkSync(path.join(s.dir, 'elsewhere.json'), s.cacheFile)), /symbolic link/],
    ['a second name of a file of the right owner and mode', (s) => (s.forge(path.join(s.dir, 'elsewhere.json')), linkSync(path.join(s.dir, 'elsewhere.json'), s.cacheFile)), /2 names/],
    ['in a folder others can write', (s) => (s.forge(), chmodSync(s.cgiDir, 0o733)), /writable by others/],
    ['in a folder that is a symbolic link', (s) => (rmSync(s.cgiDir, { recursive: true }), mkdirSync(path.join(s.dir, 'other'), { mode: 0o711 }), symlinkSync(path.join(s.dir, 'other'), s.cgiDir), s.forge()), /symbolic link/],
  ])('refuses a cache %s, and writes its own anew where it can', async (what, make, why) => {
    const s = setup();
    make(s);
    const l = s.start();
    expect(await believes(l)).toBe('no box in this test');
    expect(s.lines.join('')).toMatch(why);
    if (/folder/.test(what)) {
      expect(l.saveCache()).toMatch(/writable by others|symbolic link/);
      return;
    }
    expect(l.saveCache()).toBeUndefined();
    expect(statSync(s.cacheFile).mode & 0o7777).toBe(0o600);
    s.lines.length = 0;
    expect(await believes(s.start())).toBe('no box in this test');
    expect(s.lines).toEqual([]);
  });

  it.skipIf(!asRoot)('refuses a cache, or a folder, owned by another user (the server\'s, once it dropped root)', async () => {
    let s = setup();
    s.forge();
    chownSync(s.cacheFile, 65534, 65534);
    expect(await believes(s.start())).toBe('no box in this test');
    expect(s.lines.join('')).toMatch(/owned by uid 65534, not 0/);
    s = setup();
    s.forge();
    chownSync(s.cgiDir, 65534, 65534);
    const l = s.start();
    expect(await believes(l)).toBe('no box in this test');
    expect(s.lines.join('')).toMatch(/cgi is owned by uid 65534, not 0/);
    expect(l.saveCache()).toMatch(/owned by uid 65534/);
  });
});
