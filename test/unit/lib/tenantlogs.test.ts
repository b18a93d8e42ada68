import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { logFileDay, TenantLogFiles } from '../../../src/lib/tenantlogs.ts';
import { transferLine } from '../../../src/ftp/xferlog.ts';

describe('TenantLogFiles', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'tlog-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  // HTTP and FTP answer from their listen on, and a start as root drops to the service user only once every service
  // listens: a line written meanwhile is appended as root, in <data>/logs, which the service user owns.
  it('appends nothing through a link at a tenant\'s log file: the line is refused and logged, the file it names left as it was', async () => {
    const victim = path.join(dir, 'authorized_keys');
    writeFileSync(victim, 'ssh-ed25519 AAAA root@host\n');
    mkdirSync(path.join(dir, 'a.test'));
    symlinkSync(victim, path.join(dir, 'a.test', 'access.log'));
    const errors: string[] = [];
    const log = pino({ level: 'error' }, { write: (s: string) => void errors.push(s) });
    const logs = new TenantLogFiles(dir, 'access.log', log);
    logs.write('a.test', 'ssh-ed25519 BBBB attacker\n');
    await logs.flush();
    expect(readFileSync(victim, 'utf8')).toBe('ssh-ed25519 AAAA root@host\n');
    expect(errors.join('')).toContain('cannot write a tenant log');
  });

  for (const name of ['access.log', 'ftp.log']) {
    it(`${name}: appends per tenant and rotates daily, keeping keepDays of old logs, and touches no other log`, async () => {
      const other = name === 'access.log' ? 'ftp.log' : 'access.log';
      const logs = new TenantLogFiles(dir, name, pino({ level: 'silent' }));
      logs.write('a.test', 'line 1\n');
      logs.write('b.test', 'other\n');
      await logs.flush();
      expect(readFileSync(path.join(dir, 'a.test', name), 'utf8')).toBe('line 1\n');
      writeFileSync(path.join(dir, 'a.test', other), 'not mine\n');
      writeFileSync(path.join(dir, 'a.test', `${other}.2026-01-01`), 'not mine either\n');

      await logs.rotate(2, new Date('2026-03-10T00:00:01Z'));
      expect(existsSync(path.join(dir, 'a.test', name))).toBe(false);
      expect(readFileSync(path.join(dir, 'a.test', `${name}.2026-03-09`), 'utf8')).toBe('line 1\n');

      logs.write('a.test', 'line 2\n');
      await logs.rotate(2, new Date('2026-03-11T00:00:01Z'));
      logs.write('a.test', 'line 3\n');
      await logs.rotate(2, new Date('2026-03-12T00:00:01Z'));
      await logs.close();
      // 03-09 is older than two days on 03-12 and is gone; 03-10 and 03-11 stay; the other log is untouched.
      expect(readdirSync(path.join(dir, 'a.test')).sort()).toEqual([other, `${other}.2026-01-01`, `${name}.2026-03-10`, `${name}.2026-03-11`].sort());
      expect(readFileSync(path.join(dir, 'a.test', `${name}.2026-03-11`), 'utf8')).toBe('line 3\n');
    });
  }

  it('buffers lines: nothing is written before the flush interval, everything after', async () => {
    const logs = new TenantLogFiles(dir, 'ftp.log', pino({ level: 'silent' }), 60_000);
    logs.write('a.test', 'x\n');
    expect(existsSync(path.join(dir, 'a.test', 'ftp.log'))).toBe(false);
    await logs.close();
    expect(readFileSync(path.join(dir, 'a.test', 'ftp.log'), 'utf8')).toBe('x\n');
  });

  it('keeps every byte and the order across size-triggered appends: UTF-8, a line longer than the buffer, lines written while an append is under way', async () => {
    const logs = new TenantLogFiles(dir, 'ftp.log', pino({ level: 'silent' }), 60_000);
    const expected: string[] = [];
    const put = (line: string) => {
      expected.push(line);
      logs.write('a.test', line);
    };
    for (let i = 0; i < 3000; i++) put(`${i} café ☕ 😀 ${'x'.repeat(i % 97)}\n`);
    put(`${'é'.repeat(100_000)}\n`);
    for (let i = 0; i < 500; i++) put(`after ${i}\n`);
    await logs.close();
    expect(readFileSync(path.join(dir, 'a.test', 'ftp.log'), 'utf8')).toBe(expected.join(''));
  });

  it('refuses a file name that is not a plain name', () => {
    expect(() => new TenantLogFiles(dir, '../x.log', pino({ level: 'silent' }))).toThrow(/bad log file name/);
  });
});

describe('transferLine', () => {
  it('writes time, remote, user, command, bytes, ms, status, path; control characters in a path are escaped, UTF-8 kept', () => {
    const line = transferLine({ remote: '127.0.0.1', user: 'ann@a.test', command: 'STOR', path: '/a b\r\nfake\x1b[2J café', bytes: 5, ms: 3, status: 'ok' }, new Date('2026-03-10T01:02:03Z'));
    expect(line).toBe('2026-03-10T01:02:03.000Z 127.0.0.1 ann@a.test STOR 5 3 ok /a b\\x0d\\x0afake\\x1b[2J café\n');
  });
});

describe('logFileDay: which files of a tenant log folder are its logs', () => {
  const table: Array<[string, string | undefined]> = [
    ['access.log', 'current'],
    ['access.log.2026-12-06', '2026-12-06'],
    ['access.log.2026-12-6', undefined],
    ['access.log.2026-12-06.gz', undefined],
    ['access.log.2026-12-06/../x', undefined],
    ['access.logx2026-12-06', undefined],
    ['accessXlog.2026-12-06', undefined],
    ['../access.log', undefined],
    ['access.log/', undefined],
    ['access.log.', undefined],
    ['access.log.abcd-ef-gh', undefined],
    ['access.log.2026-12-06\n', undefined],
    ['error.log.2026-12-06', undefined],
    ['', undefined],
  ];
  it.each(table)('%j → %j', (name, day) => {
    expect(logFileDay('access.log', name)).toBe(day);
  });
});
