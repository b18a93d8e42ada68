import { appendFileSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TrafficCounter, unescapeField } from '../../../src/panel/traffic.ts';
import { logLine } from '../../integration/panel/helpers.ts';

let dir: string;
let logs: string;
const NOW = Date.UTC(2026, 11, 6, 12, 0, 0);
const at = (days: number, hours = 0) => new Date(NOW - days * 86_400_000 + hours * 3600_000);
const today = (c: Awaited<ReturnType<TrafficCounter['traffic']>>) => c.days[c.days.length - 1]!;

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'mw-traffic-'));
  logs = path.join(dir, 'site.test');
  mkdirSync(logs);
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('TrafficCounter', () => {
  it('reads each log once: bytes already counted are not read again, appended whole lines are, a half line waits', async () => {
    const file = path.join(logs, 'access.log');
    writeFileSync(file, logLine({ when: at(0), path: '/', status: 200, bytes: 10 }));
    const counter = new TrafficCounter(() => dir);
    expect(today(await counter.traffic('site.test', ['site.test'], NOW))).toMatchObject({ requests: 1, bytes: 10 });
    // The same bytes rewritten in place (same inode, same size): a counter that re-read would see a 404 now.
    writeFileSync(file, logLine({ when: at(0), path: '/', status: 404, bytes: 10 }));
    expect(today(await counter.traffic('site.test', [], NOW))).toMatchObject({ requests: 1, c4xx: 0 });
    const line = logLine({ when: at(0), path: '/b', status: 500, bytes: 5 });
    appendFileSync(file, line.slice(0, 20));
    expect(today(await counter.traffic('site.test', [], NOW)).requests).toBe(1);
    appendFileSync(file, line.slice(20));
    expect(today(await counter.traffic('site.test', [], NOW))).toMatchObject({ requests: 2, bytes: 15, c5xx: 1 });
  });

  it('follows a rotation: the renamed file keeps its counts, the new one is read from its start', async () => {
    const file = path.join(logs, 'access.log');
    writeFileSync(file, logLine({ when: at(1), path: '/', status: 200, bytes: 1 }) + logLine({ when: at(0, -1), path: '/', status: 200, bytes: 2 }));
    const counter = new TrafficCounter(() => dir);
    await counter.traffic('site.test', [], NOW);
    renameSync(file, `${file}.${at(1).toISOString().slice(0, 10)}`);
    writeFileSync(file, logLine({ when: at(0), path: '/x', status: 404, bytes: 3 }));
    const c = await counter.traffic('site.test', [], NOW);
    expect(c.days.at(-2)).toMatchObject({ requests: 1, bytes: 1 });
    expect(today(c)).toMatchObject({ requests: 2, bytes: 5, c4xx: 1 });
    expect(c.notFound).toEqual([['/x', 1]]);
  });

  it('keeps 30 days, skips lines that are not the Combined Log Format, and undoes the log escaping', async () => {
    writeFileSync(
      path.join(logs, `access.log.${at(2).toISOString().slice(0, 10)}`),
      logLine({ when: at(31), path: '/old', status: 200, bytes: 1 }) + 'garbage line\n' + logLine({ when: at(29), path: '/edge', status: 200, bytes: 7, referer: 'https://r.test/?q="x"' }),
    );
    const c = await new TrafficCounter(() => dir).traffic('site.test', [], NOW);
    expect(c.days).toHaveLength(30);
    expect(c.days[0]).toMatchObject({ day: at(29).toISOString().slice(0, 10), requests: 1, bytes: 7 });
    expect(c.days.reduce((n, d) => n + d.requests, 0)).toBe(1);
    expect(unescapeField('a\\"b\\\\c\\xc3\\xa9')).toBe('a"b\\cé');
  });
  it('counts a log larger than one read slice (4 MiB) line by line, none lost at a slice edge', async () => {
    const line = (i: number) => logLine({ when: at(0), path: `/page-${i}`, status: 200, bytes: i });
    const lines = Array.from({ length: 60_000 }, (_, i) => line(i));
    writeFileSync(path.join(logs, 'access.log'), lines.join(''));
    expect(lines.join('').length).toBeGreaterThan(4 * 1024 * 1024);
    const c = await new TrafficCounter(() => dir).traffic('site.test', [], NOW);
    expect(today(c)).toMatchObject({ requests: 60_000, bytes: (59_999 * 60_000) / 2 });
  });
});
