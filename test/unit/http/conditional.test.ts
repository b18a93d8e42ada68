import { describe, expect, it } from 'vitest';
import { chooseEncoding, evaluatePreconditions, evaluateRange, type Validators } from '../../../src/http/conditional.ts';

const mtimeMs = Date.UTC(2026, 0, 2, 3, 4, 5, 600);
const v: Validators = { etag: '"abc"', mtimeMs, lastModified: new Date(mtimeMs).toUTCString() };
const at = (s: number) => new Date(Date.UTC(2026, 0, 2, 3, 4, 5) + s * 1000).toUTCString();

describe('evaluatePreconditions', () => {
  it.each([
    [{}, 'proceed'],
    [{ 'if-none-match': '"abc"' }, 'not-modified'],
    [{ 'if-none-match': 'W/"abc"' }, 'not-modified'],
    [{ 'if-none-match': '"x", "abc"' }, 'not-modified'],
    [{ 'if-none-match': '*' }, 'not-modified'],
    [{ 'if-none-match': '"other"' }, 'proceed'],
    // If-None-Match wins over If-Modified-Since.
    [{ 'if-none-match': '"other"', 'if-modified-since': at(10) }, 'proceed'],
    [{ 'if-modified-since': at(0) }, 'not-modified'],
    [{ 'if-modified-since': at(10) }, 'not-modified'],
    [{ 'if-modified-since': at(-1) }, 'proceed'],
    [{ 'if-modified-since': 'not a date' }, 'proceed'],
    [{ 'if-match': '"abc"' }, 'proceed'],
    [{ 'if-match': 'W/"abc"' }, 'failed'],
    [{ 'if-match': '"zzz"' }, 'failed'],
    [{ 'if-unmodified-since': at(-5) }, 'failed'],
    [{ 'if-unmodified-since': at(5) }, 'proceed'],
  ])('%j → %s', (headers, expected) => {
    expect(evaluatePreconditions(headers, v)).toBe(expected);
  });
});

describe('evaluateRange', () => {
  it.each([
    [{}, { kind: 'full' }],
    [{ range: 'bytes=0-9' }, { kind: 'partial', start: 0, end: 9 }],
    [{ range: 'bytes=90-' }, { kind: 'partial', start: 90, end: 99 }],
    [{ range: 'bytes=-10' }, { kind: 'partial', start: 90, end: 99 }],
    [{ range: 'bytes=-1000' }, { kind: 'partial', start: 0, end: 99 }],
    [{ range: 'bytes=50-5000' }, { kind: 'partial', start: 50, end: 99 }],
    [{ range: 'bytes=100-' }, { kind: 'unsatisfiable' }],
    [{ range: 'bytes=-0' }, { kind: 'unsatisfiable' }],
    [{ range: 'bytes=9-3' }, { kind: 'full' }],
    [{ range: 'bytes=0-1,5-6' }, { kind: 'full' }],
    [{ range: 'items=0-1' }, { kind: 'full' }],
    [{ range: 'bytes=0-9', 'if-range': '"abc"' }, { kind: 'partial', start: 0, end: 9 }],
    [{ range: 'bytes=0-9', 'if-range': '"old"' }, { kind: 'full' }],
    [{ range: 'bytes=0-9', 'if-range': 'W/"abc"' }, { kind: 'full' }],
    [{ range: 'bytes=0-9', 'if-range': at(0) }, { kind: 'partial', start: 0, end: 9 }],
    [{ range: 'bytes=0-9', 'if-range': at(-60) }, { kind: 'full' }],
  ])('%j', (headers, expected) => {
    expect(evaluateRange(headers, 100, v)).toEqual(expected);
  });
});

describe('chooseEncoding', () => {
  it.each([
    [undefined, 'identity'],
    ['', 'identity'],
    ['gzip', 'gzip'],
    ['gzip, deflate, br', 'br'],
    ['br;q=0, gzip', 'gzip'],
    ['gzip;q=0', 'identity'],
    ['*', 'br'],
    ['identity', 'identity'],
  ])('%s → %s', (header, expected) => {
    expect(chooseEncoding(header)).toBe(expected);
  });
});
