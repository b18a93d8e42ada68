import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { Metrics } from '../../../src/core/metrics.ts';

const sample = (text: string, series: string) => Number(new RegExp(`^${series.replace(/[{}"+.]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);

describe('the HTTP duration histogram', () => {
  it('reads as a Prometheus histogram: cumulative buckets, +Inf equal to the count, the sum', async () => {
    const m = new Metrics();
    m.httpDuration.observe(0.0003);
    m.httpDuration.observe(0.002);
    m.httpDuration.observe(0.002);
    m.httpDuration.observe(60);
    const text = await m.text();
    expect(text).toMatch(/^# TYPE makewaves_http_request_duration_seconds histogram$/m);
    expect(sample(text, 'makewaves_http_request_duration_seconds_bucket{le="0.0005"}')).toBe(1);
    expect(sample(text, 'makewaves_http_request_duration_seconds_bucket{le="0.001"}')).toBe(1);
    expect(sample(text, 'makewaves_http_request_duration_seconds_bucket{le="0.0025"}')).toBe(3);
    expect(sample(text, 'makewaves_http_request_duration_seconds_bucket{le="30"}')).toBe(3);
    expect(sample(text, 'makewaves_http_request_duration_seconds_bucket{le="+Inf"}')).toBe(4);
    expect(sample(text, 'makewaves_http_request_duration_seconds_count')).toBe(4);
    expect(sample(text, 'makewaves_http_request_duration_seconds_sum')).toBeCloseTo(60.0043, 6);
  });

  it('counts a timed answer once, at finish or close, whichever comes first, in its own suite only', async () => {
    const a = new Metrics();
    const b = new Metrics();
    const res = new EventEmitter();
    a.timeRequest(res);
    res.emit('close');
    res.emit('finish');
    expect(sample(await a.text(), 'makewaves_http_request_duration_seconds_count')).toBe(1);
    expect(sample(await b.text(), 'makewaves_http_request_duration_seconds_count')).toBe(0);
    expect(res.listenerCount('finish') + res.listenerCount('close')).toBe(0);
  });
});
