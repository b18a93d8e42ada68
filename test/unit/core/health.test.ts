import { describe, expect, it } from 'vitest';
import { Health, diskProblems } from '../../../src/core/health.ts';

describe('Health', () => {
  it('shows a problem set with afterMs only once it has lasted that long, and forgets it when cleared', () => {
    let now = 1_000_000;
    const h = new Health(() => now);
    h.set('relay', { severity: 'degraded', afterMs: 60_000, message: 'relay unreachable' });
    now += 30_000;
    h.set('relay', { severity: 'degraded', afterMs: 60_000, message: 'relay unreachable' }); // still failing: the first time counts
    expect(h.check().status).toBe('ok');
    now += 30_001;
    expect(h.check()).toEqual({ status: 'degraded', problems: [{ key: 'relay', severity: 'degraded', message: 'relay unreachable' }] });
    h.set('relay', undefined);
    expect(h.check().status).toBe('ok');
  });

  it.each([
    // [permanent, sent, degraded?]
    [4, 0, false],
    [5, 0, true],
    [5, 5, true],
    [5, 6, false],
    [22, 0, true],
  ])('%i permanent failures beside %i deliveries within the hour: degraded %s', (perm, sent, degraded) => {
    const h = new Health(() => 5_000_000);
    for (let i = 0; i < perm; i++) h.delivery('perm');
    for (let i = 0; i < sent; i++) h.delivery('sent');
    expect(h.check().status).toBe(degraded ? 'degraded' : 'ok');
  });

  it('forgets failures older than the window; down wins over degraded', () => {
    let now = 0;
    const h = new Health(() => now);
    for (let i = 0; i < 10; i++) h.delivery('perm');
    now += 60 * 60_000 + 1;
    expect(h.check().status).toBe('ok');
    h.set('config', { severity: 'degraded', message: 'refused' });
    h.set('listen:http', { severity: 'down', message: 'not listening' });
    expect(h.check().status).toBe('down');
  });
});

describe('diskProblems', () => {
  const figures = (usedShare: number) => () => ({ blocks: 1000, bfree: 1000 - usedShare * 1000, bavail: 1000 - usedShare * 1000 });
  it('is quiet at 90 % and below', () => {
    expect(diskProblems('/data', figures(0.5))).toEqual([]);
    expect(diskProblems('/data', figures(0.9))).toEqual([]);
  });
  it('reports the folder and share above 90 % (blocks reserved for root count as used)', () => {
    expect(diskProblems('/data', figures(0.93))).toEqual([{ key: 'disk', severity: 'degraded', message: 'the disk of /data is 93 % full (over 90 %)' }]);
    // 50 free blocks, all reserved for root: 950 used of 950 usable.
    expect(diskProblems('/data', () => ({ blocks: 1000, bfree: 50, bavail: 0 }))[0]?.message).toBe('the disk of /data is 100 % full (over 90 %)');
  });
  it('is reported by Health through its probe', () => {
    const h = new Health(() => 0);
    h.probe(() => diskProblems('/data', figures(0.95)));
    expect(h.check()).toEqual({ status: 'degraded', problems: [{ key: 'disk', severity: 'degraded', message: 'the disk of /data is 95 % full (over 90 %)' }] });
  });
});
