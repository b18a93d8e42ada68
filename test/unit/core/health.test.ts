import { describe, expect, it } from 'vitest';
import { Health } from '../../../src/core/health.ts';

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
