import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AccessLogs, combinedLine, escapeField } from '../../../src/http/accesslog.ts';

describe('combinedLine', () => {
  it('writes the Combined Log Format', () => {
    const line = combinedLine(
      { remote: '127.0.0.1', method: 'GET', url: '/a b', httpVersion: '1.1', status: 200, bytes: 512, referer: 'http://r.test/', userAgent: 'curl/8' },
      Date.UTC(2026, 9, 10, 13, 55, 36),
    );
    expect(line).toBe('127.0.0.1 - - [10/Oct/2026:13:55:36 +0000] "GET /a b HTTP/1.1" 200 512 "http://r.test/" "curl/8"\n');
  });
  it('writes "-" for no body, no referer and no agent', () => {
    expect(combinedLine({ remote: '::1', method: 'HEAD', url: '/', httpVersion: '1.0', status: 304, bytes: 0, referer: undefined, userAgent: undefined })).toMatch(
      /^::1 - - \[.*\] "HEAD \/ HTTP\/1\.0" 304 - "-" "-"\n$/,
    );
  });
  it('escapes quotes, backslashes, control and non-ASCII bytes so a line cannot be forged', () => {
    expect(escapeField('a"b\\c\nd\x1be')).toBe('a\\"b\\\\c\\x0ad\\x1be');
    expect(escapeField('é')).toBe('\\xc3\\xa9');
    const line = combinedLine({ remote: '1.2.3.4', method: 'GET', url: '/', httpVersion: '1.1', status: 200, bytes: 1, referer: undefined, userAgent: 'x"\n1.2.3.4 - - fake' });
    expect(line.split('\n')).toHaveLength(2);
  });
});

describe('AccessLogs', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'alog-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('appends per tenant and rotates daily, keeping keepDays of old logs', async () => {
    const logs = new AccessLogs(dir, pino({ level: 'silent' }));
    logs.write('a.test', 'line 1\n');
    logs.write('b.test', 'other\n');
    await logs.flush();
    expect(readFileSync(path.join(dir, 'a.test', 'access.log'), 'utf8')).toBe('line 1\n');

    await logs.rotate(2, new Date('2026-03-10T00:00:01Z'));
    expect(existsSync(path.join(dir, 'a.test', 'access.log'))).toBe(false);
    expect(readFileSync(path.join(dir, 'a.test', 'access.log.2026-03-09'), 'utf8')).toBe('line 1\n');

    logs.write('a.test', 'line 2\n');
    await logs.rotate(2, new Date('2026-03-11T00:00:01Z'));
    logs.write('a.test', 'line 3\n');
    await logs.rotate(2, new Date('2026-03-12T00:00:01Z'));
    await logs.close();
    // 03-09 is older than two days on 03-12 and is gone; 03-10 and 03-11 stay.
    expect(readdirSync(path.join(dir, 'a.test')).sort()).toEqual(['access.log.2026-03-10', 'access.log.2026-03-11']);
    expect(readFileSync(path.join(dir, 'a.test', 'access.log.2026-03-11'), 'utf8')).toBe('line 3\n');
  });
});
