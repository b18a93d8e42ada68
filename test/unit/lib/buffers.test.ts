import { describe, expect, it } from 'vitest';
import { afterWritten } from '../../../src/lib/buffers.ts';

const parts = () => [Buffer.from('abc'), Buffer.alloc(0), Buffer.from('defg'), Buffer.from('h')];
const text = (bs: Buffer[]) => bs.map((b) => b.toString()).join('|');

describe('afterWritten (what a partial writev left)', () => {
  it('keeps everything after nothing was written, without empty buffers', () => {
    expect(text(afterWritten(parts(), 0))).toBe('abc|defg|h');
  });
  it('drops whole buffers and cuts into the one the write ended in', () => {
    expect(text(afterWritten(parts(), 3))).toBe('defg|h');
    expect(text(afterWritten(parts(), 5))).toBe('fg|h');
    expect(text(afterWritten(parts(), 7))).toBe('h');
  });
  it('is empty once every byte is out', () => {
    expect(afterWritten(parts(), 8)).toEqual([]);
  });
});
