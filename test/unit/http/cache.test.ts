import { mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CachedFile, FileCache } from '../../../src/http/cache.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'cache-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function load(file: string): CachedFile {
  const st = statSync(file);
  return new CachedFile(file, { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs }, Buffer.from(''), path.basename(file));
}

describe('FileCache', () => {
  it('trusts an entry within the revalidation window, then checks the disk', () => {
    const file = path.join(dir, 'a.html');
    writeFileSync(file, 'one');
    const cache = new FileCache(1024, 1 << 20, 1000);
    const entry = load(file);
    cache.set('t\0/a.html', entry);
    writeFileSync(path.join(dir, 'tmp'), 'two!');
    renameSync(path.join(dir, 'tmp'), file);
    const t0 = entry.checkedAt;
    expect(cache.get('t\0/a.html', t0 + 500)).toBe(entry); // inside the window: not checked
    expect(cache.get('t\0/a.html', t0 + 1000)).toBeUndefined(); // checked: inode changed
  });

  it('keeps an unchanged entry after checking it, and forgets a tenant on dropTenant', () => {
    const file = path.join(dir, 'b.html');
    writeFileSync(file, 'same');
    const cache = new FileCache(1024, 1 << 20, 0);
    const entry = load(file);
    cache.set('t\0/b.html', entry);
    cache.set('u\0/b.html', load(file));
    expect(cache.get('t\0/b.html')).toBe(entry);
    cache.dropTenant('t');
    expect(cache.get('t\0/b.html')).toBeUndefined();
    expect(cache.get('u\0/b.html')).toBeDefined();
  });

  it('dropTenant forgets only that tenant (not one whose id it prefixes), also after evictions and replacements', () => {
    const file = path.join(dir, 'c.html');
    writeFileSync(file, 'c');
    const weight = load(file).weight;
    const cache = new FileCache(1024, weight * 3, 0);
    cache.set('t\0/1', load(file));
    cache.set('t\0/2', load(file));
    cache.set('t2\0/1', load(file));
    cache.set('t\0/2', load(file)); // replaced
    cache.set('t2\0/2', load(file)); // evicts t/1, the oldest
    expect(cache.get('t\0/1')).toBeUndefined();
    cache.dropTenant('t');
    expect(cache.get('t\0/2')).toBeUndefined();
    expect(cache.size).toBe(2);
    cache.dropTenant('t2');
    expect(cache.size).toBe(0);
    cache.set('t\0/1', load(file));
    expect(cache.get('t\0/1')).toBeDefined();
  });

  it('evicts the oldest entries to stay within its budget and refuses files over the limit', () => {
    const files = ['1', '2', '3'].map((n) => {
      const f = path.join(dir, n);
      writeFileSync(f, n);
      return f;
    });
    const weight = load(files[0]!).weight;
    const cache = new FileCache(1024, weight * 2, 0);
    for (const f of files) cache.set(f, load(f));
    expect(cache.size).toBe(2);
    expect(cache.get(files[0]!)).toBeUndefined();
    const big = path.join(dir, 'big');
    writeFileSync(big, Buffer.alloc(2048));
    const st = statSync(big);
    cache.set(big, new CachedFile(big, { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs }, Buffer.alloc(2048), 'big'));
    expect(cache.get(big)).toBeUndefined();
  });
});
