import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { accountKey } from '../../../src/acme/index.ts';
import { acmeDir } from '../../../src/core/acme.ts';
import { openKey } from '../../../src/lists/kit.ts';
import { Srs } from '../../../src/mail/srs.ts';
import { tempDirs } from '../../helpers/tmp.ts';

const tmp = tempDirs('makewaves-key-links-');

// A start as root reads these keys in <data>, which is the service user's: a link there must not make root read a
// file of its own choosing (one only root may read, or one whose content the linker knows) and use it as a key.
const keys: [string, (data: string) => string, (data: string) => unknown][] = [
  ['srs.key', (d) => path.join(d, 'srs.key'), (d) => Srs.open(d, 'mx.a.test')],
  ['lists.key', (d) => path.join(d, 'lists.key'), (d) => openKey(d)],
  ['acme/account.key', (d) => path.join(acmeDir(d), 'account.key'), (d) => accountKey(d)],
];

// The same keys opened in a process of their own (a FIFO would stop the test's own process, not only the call).
const opener: Record<string, string> = {
  'srs.key': `import('${path.resolve('src/mail/srs.ts')}').then((m) => m.Srs.open(process.argv[1], 'mx.a.test'))`,
  'lists.key': `import('${path.resolve('src/lists/kit.ts')}').then((m) => m.openKey(process.argv[1]))`,
  'acme/account.key': `import('${path.resolve('src/acme/index.ts')}').then((m) => m.accountKey(process.argv[1]))`,
};

describe('keys read at the start', () => {
  // The service user may put a FIFO where a key goes: the open for reading waited for a writer, for ever, and the
  // start as root with it (config-cache.json is opened O_NONBLOCK, and only as a regular file, for the same reason).
  it.each(keys)('%s is refused when it is a FIFO, at once', (name, where) => {
    const data = tmp();
    const file = where(data);
    mkdirSync(path.dirname(file), { recursive: true });
    execFileSync('mkfifo', [file]);
    const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', `${opener[name]}.catch((e) => { console.error(e.message); process.exit(3); })`, data], { encoding: 'utf8', timeout: 20_000 });
    expect(r.signal, 'killed waiting on the FIFO').toBeNull();
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/not a regular file/);
  });


  it.each(keys)('%s is refused when it is a symbolic link, and the file it leads to is left as it was', async (_name, where, open) => {
    const data = tmp();
    const victim = path.join(tmp(), 'root-only');
    const secret = 'ab'.repeat(32) + '\n';
    writeFileSync(victim, secret, { mode: 0o600 });
    const file = where(data);
    mkdirSync(path.dirname(file), { recursive: true });
    symlinkSync(victim, file);
    await expect(Promise.resolve().then(() => open(data))).rejects.toThrow(/symbolic link/);
    expect(readFileSync(victim, 'utf8')).toBe(secret);
    expect(statSync(victim).mode & 0o777).toBe(0o600);
  });

  it.each(keys)('%s is made on the first start and read back the same on the next', async (_name, where, open) => {
    const data = tmp();
    await open(data);
    const first = readFileSync(where(data));
    expect(statSync(where(data)).mode & 0o777).toBe(0o600);
    await open(data);
    expect(readFileSync(where(data))).toEqual(first);
  });

  it.each(['', 'short', '0123456789abcdef', 'zz'.repeat(16)])('an srs.key of %j (guessable, or no hex) is refused with what to do', (text) => {
    const data = tmp();
    writeFileSync(path.join(data, 'srs.key'), `${text}\n`, { mode: 0o600 });
    expect(() => Srs.open(data, 'mx.a.test')).toThrow(/not a key of at least 16 bytes in hex; remove it/);
  });
});
