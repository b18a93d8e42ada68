import { chmodSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../../src/core/config/load.ts';
import { jsonSafe, ParseCache, sharedParseCache } from '../../../src/core/config/parsecache.ts';
import { startSuite } from '../../../src/main.ts';
import { createLogger } from '../../../src/core/log.ts';

const MAIN = `hostname: mx.test\ndata: ../data\nsites: ../sites\nhttp:\n  listen: ["127.0.0.1:0"]\n`;
let dir: string;
let cfg: string;
let cacheFile: string;

function tenant(id: string, text: string): string {
  const f = path.join(cfg, 'tenants', `${id}.yaml`);
  writeFileSync(f, text);
  return f;
}
const domainsOf = (c: ReturnType<typeof loadConfig>) => Object.fromEntries(c.tenants.map((t) => [t.id, t.config.domains]));

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'pcache-'));
  cfg = path.join(dir, 'config');
  mkdirSync(path.join(cfg, 'tenants'), { recursive: true });
  writeFileSync(path.join(cfg, 'makewaves.yaml'), MAIN);
  cacheFile = path.join(dir, 'data', 'config-cache.json');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('the cache of parsed tenant files', () => {
  it('is never written through a link put where its temporary file goes (a start as root writes it in the service user\'s <data>)', () => {
    tenant('a.test', 'domains: [a.test]\n');
    const cache = new ParseCache(cacheFile);
    loadConfig(cfg, undefined, cache);
    mkdirSync(path.dirname(cacheFile), { recursive: true });
    const victim = path.join(dir, 'victim');
    writeFileSync(victim, 'not yours\n');
    // The name it used to write under: predictable by anyone who can guess the pid.
    symlinkSync(victim, `${cacheFile}.${process.pid}.tmp`);
    expect(cache.save()).toBeUndefined();
    expect(readFileSync(victim, 'utf8')).toBe('not yours\n');
    expect(Object.keys(JSON.parse(readFileSync(cacheFile, 'utf8')).entries)).toHaveLength(1);
  });

  it('is written after a load and read by the next start: an unchanged file is not parsed again', () => {
    tenant('a.test', 'domains: [a.test]\n');
    const first = new ParseCache(cacheFile);
    loadConfig(cfg, undefined, first);
    expect(first.save()).toBeUndefined();
    const saved = JSON.parse(readFileSync(cacheFile, 'utf8'));
    expect(Object.keys(saved.entries)).toEqual([path.join(cfg, 'tenants', 'a.test.yaml')]);
    expect(statSync(cacheFile).mode & 0o777).toBe(0o600);
    // Proof that the next start takes the cached parse: the cache (not the file) is doctored, and that is what loads.
    saved.entries[path.join(cfg, 'tenants', 'a.test.yaml')].value = { domains: ['from-the-cache.test'] };
    writeFileSync(cacheFile, JSON.stringify(saved));
    expect(domainsOf(loadConfig(cfg, undefined, new ParseCache(cacheFile)))).toEqual({ 'a.test': ['from-the-cache.test'] });
  });

  // Every way a file can change under an unchanged name is a miss: the cache never serves an old parse.
  const changes: [string, (f: string) => void][] = [
    ['edited in place, another size', (f) => writeFileSync(f, 'domains: [b.test, www.b.test]\n')],
    ['edited in place, same size, modification time put back', (f) => {
      const { atime, mtime } = statSync(f);
      writeFileSync(f, 'domains: [b.test]\n'.replace('b.test', 'c.test'));
      utimesSync(f, atime, mtime);
    }],
    ['replaced by rename (a new inode), same size and times', (f) => {
      const { atime, mtime } = statSync(f);
      writeFileSync(`${f}.new`, 'domains: [d.test]\n');
      utimesSync(`${f}.new`, atime, mtime);
      renameSync(`${f}.new`, f);
    }],
    ['made unreadable', (f) => chmodSync(f, 0)],
  ];
  for (const [how, change] of changes) {
    it(`a file ${how} is read again`, () => {
      const f = tenant('a.test', 'domains: [b.test]\n');
      const cache = new ParseCache(cacheFile);
      loadConfig(cfg, undefined, cache);
      cache.save();
      change(f);
      const fresh = () => loadConfig(cfg);
      const cached = () => loadConfig(cfg, undefined, new ParseCache(cacheFile));
      if (how === 'made unreadable' && process.getuid?.() === 0) {
        // Root reads it anyway: then it must still be what the file says.
        expect(domainsOf(cached())).toEqual(domainsOf(fresh()));
        return;
      }
      let expected: unknown;
      try {
        expected = domainsOf(fresh());
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        expect(cached).toThrow(ConfigError);
        return;
      }
      expect(domainsOf(cached())).toEqual(expected);
    });
  }

  describe('known by its stat, not read again', () => {
    const RACY = 50;
    /** Until the file's change time is over `RACY` ms old: a condition of the file system's clock, not an event to await. */
    async function aged(f: string): Promise<void> {
      const changed = statSync(f).ctimeMs;
      while (Date.now() - changed <= RACY + 5) await new Promise((r) => setTimeout(r, 5));
    }
    /** Loads with a cache saved to `cacheFile`, then doctors the saved entry: a key no text has, and another value. */
    function loadThenDoctor(): void {
      const cache = new ParseCache(cacheFile, RACY);
      loadConfig(cfg, undefined, cache);
      expect(cache.save()).toBeUndefined();
      const saved = JSON.parse(readFileSync(cacheFile, 'utf8'));
      const e = saved.entries[path.join(cfg, 'tenants', 'a.test.yaml')];
      expect(e.stat).toMatch(/^\d+:\d+:\d+:\d+:\d+$/);
      Object.assign(e, { id: 'no text has this key', value: { domains: ['from-the-cache.test'] } });
      writeFileSync(cacheFile, JSON.stringify(saved));
    }
    const cached = () => domainsOf(loadConfig(cfg, undefined, new ParseCache(cacheFile, RACY)));

    it('a file unchanged since well before it was read is not read again: the cached parse loads, whatever its text key', async () => {
      await aged(tenant('a.test', 'domains: [b.test]\n'));
      loadThenDoctor();
      expect(cached()).toEqual({ 'a.test': ['from-the-cache.test'] });
    });

    it('a file edited in place with its size and modification time put back is read again (its change time moved)', async () => {
      const f = tenant('a.test', 'domains: [b.test]\n');
      await aged(f);
      loadThenDoctor();
      const { atime, mtime } = statSync(f);
      writeFileSync(f, 'domains: [c.test]\n');
      utimesSync(f, atime, mtime);
      expect(cached()).toEqual({ 'a.test': ['c.test'] });
    });

    it('a file changed just before it was read (within one tick of a coarse clock, say) is read again at every load', () => {
      tenant('a.test', 'domains: [b.test]\n');
      loadThenDoctor();
      expect(cached()).toEqual({ 'a.test': ['b.test'] });
    });
  });

  it('a removed tenant file is forgotten, and the cache of a server in memory follows each reload', () => {
    tenant('a.test', 'domains: [a.test]\n');
    const b = tenant('b.test', 'domains: [b.test]\n');
    const cache = new ParseCache(cacheFile);
    loadConfig(cfg, undefined, cache);
    rmSync(b);
    tenant('a.test', 'domains: [a.test, www.a.test]\n');
    expect(domainsOf(loadConfig(cfg, undefined, cache))).toEqual({ 'a.test': ['a.test', 'www.a.test'] });
    cache.save();
    expect(Object.keys(JSON.parse(readFileSync(cacheFile, 'utf8')).entries)).toEqual([path.join(cfg, 'tenants', 'a.test.yaml')]);
  });

  it('validation and the cross-checks run on cached parses too', () => {
    tenant('a.test', 'domains: [same.test]\n');
    tenant('b.test', 'domains: [other.test]\n');
    const cache = new ParseCache(cacheFile);
    loadConfig(cfg, undefined, cache);
    cache.save();
    // The clash comes from a file that changed; the other file's parse comes from the cache, and the clash is still found.
    tenant('b.test', 'domains: [same.test]\n');
    expect(() => loadConfig(cfg, undefined, new ParseCache(cacheFile))).toThrow(/"same\.test" is already claimed by tenant "a\.test"/);
  });

  it('a cache file that is cut short, of another format, or not JSON is a miss, never an error', () => {
    tenant('a.test', 'domains: [a.test]\n');
    mkdirSync(path.dirname(cacheFile), { recursive: true });
    for (const bad of ['{"format":1,"entries":{', '{"format":999,"entries":{}}', 'not json', '[]', 'null']) {
      writeFileSync(cacheFile, bad);
      expect(domainsOf(loadConfig(cfg, undefined, new ParseCache(cacheFile)))).toEqual({ 'a.test': ['a.test'] });
    }
  });

  it('a cache that cannot be written says why (the next start parses every file)', () => {
    tenant('a.test', 'domains: [a.test]\n');
    writeFileSync(path.join(dir, 'data'), 'a file where the folder should be');
    const cache = new ParseCache(cacheFile);
    loadConfig(cfg, undefined, cache);
    expect(cache.save()).toMatch(/^E/);
  });

  it('keeps only what JSON gives back unchanged', () => {
    const table: [unknown, boolean][] = [
      [{ a: [1, 'x', true, null, { b: 2.5 }] }, true],
      [{ n: Infinity }, false],
      [{ n: Number.NaN }, false],
      [{ n: -0 }, false],
      [{ d: new Date(0) }, false],
      [{ m: new Map() }, false],
      [JSON.parse('{"__proto__": {"x": 1}}'), false],
      [{ u: undefined }, false],
    ];
    for (const [v, safe] of table) expect([v, jsonSafe(v)]).toEqual([v, safe]);
  });

  it('a YAML value JSON cannot carry (.inf) is parsed from the file every time', () => {
    const f = tenant('a.test', 'domains: [a.test]\nnote: .inf\n');
    const cache = new ParseCache(cacheFile);
    expect(() => loadConfig(cfg, undefined, cache)).toThrow(ConfigError);
    expect(cache.get(f, ParseCache.identity(readFileSync(f, 'utf8')))).toBeUndefined();
  });

  it("is the process's own unless another is given: a check with one file changed (a panel or CLI edit) parses that file alone", () => {
    const a = tenant('a.test', 'domains: [a.test]\n');
    tenant('b.test', 'domains: [b.test]\n');
    loadConfig(cfg);
    const entry = sharedParseCache().get(a, ParseCache.identity('domains: [a.test]\n'));
    expect(entry?.value).toEqual({ domains: ['a.test'] });
    // The same object comes back from the next load: not parsed again.
    loadConfig(cfg, new Map([['b.test', 'domains: [b.test, www.b.test]\n']]));
    expect(sharedParseCache().get(a, ParseCache.identity('domains: [a.test]\n'))?.value).toBe(entry!.value);
  });

  it('a start with makewaves.yaml and a tenant file both refused names every problem (the cache file is not looked for then)', async () => {
    writeFileSync(path.join(cfg, 'makewaves.yaml'), `${MAIN}colour: blue\n`);
    tenant('a.test', 'domains: [a.test]\nquota: lots\n');
    const err = await startSuite({ configDir: cfg, log: createLogger({ level: 'silent' }), watch: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems.join('\n');
    expect(problems).toMatch(/makewaves\.yaml: colour: unknown key/);
    expect(problems).toMatch(/a\.test\.yaml: quota/);
  });
});

// A start as root reads <data>/config-cache.json before the drop; <data> is the service user's.
describe('the parse cache file read at the start', () => {
  it('is never read through a link: a cache of root\'s (the handler launcher\'s, say) a link names holds nothing for it', () => {
    const d = mkdtempSync(path.join(os.tmpdir(), 'pcache-link-'));
    try {
      const theirs = path.join(d, 'launcher-cache.json');
      const one = new ParseCache();
      one.set('/etc/makewaves/tenants/a.test.yaml', 'id-1', { domains: ['a.test'] });
      expect(one.save(theirs)).toBeUndefined();
      const link = path.join(d, 'config-cache.json');
      symlinkSync(theirs, link);
      const two = new ParseCache();
      two.load(link);
      expect(two.get('/etc/makewaves/tenants/a.test.yaml', 'id-1')).toBeUndefined();
      const three = new ParseCache();
      three.load(theirs);
      expect(three.get('/etc/makewaves/tenants/a.test.yaml', 'id-1')).toEqual({ value: { domains: ['a.test'] } });
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
