import { describe, expect, it } from 'vitest';
import { lineSplitter } from '../../../src/lib/lines.ts';

// The launcher's request lines (src/cgi/launcher-main.ts): whatever the chunks, each line whole once, and one over
// the limit refused once and never kept, without taking the next line with it.
function split(chunks: string[], max = 8): Array<string | 'OVER'> {
  const out: Array<string | 'OVER'> = [];
  const feed = lineSplitter(max, (l) => out.push(l), () => out.push('OVER'));
  for (const c of chunks) feed(c);
  return out;
}

describe('lineSplitter', () => {
  it.each<[string, string[], Array<string | 'OVER'>]>([
    ['one line, one chunk', ['{"a":1}\n'], ['{"a":1}']],
    ['several lines in one chunk', ['a\nb\nc\n'], ['a', 'b', 'c']],
    ['a line split across chunks', ['ab', 'cd', 'e\n'], ['abcde']],
    ['the newline alone in a chunk', ['abc', '\n', 'd\n'], ['abc', 'd']],
    ['an empty line', ['\n'], ['']],
    ['a line not ended yet is not given', ['abc'], []],
    ['exactly the limit', ['12345678\n'], ['12345678']],
    ['one over the limit, then a good line', ['123456789\nok\n'], ['OVER', 'ok']],
    ['over the limit across chunks: refused once, its rest dropped', ['12345', '67890', 'abcdefgh', 'ij\nok\n'], ['OVER', 'ok']],
    ['over the limit, its newline in a later chunk with the next line', ['123456789', 'xx\nnext\n'], ['OVER', 'next']],
    ['counted in UTF-16 units, not bytes: four emoji are eight', ['😀😀😀😀\n'], ['😀😀😀😀']],
    ['a newline inside what would be one request makes two lines', ['{"op":\n"kill"}\n'], ['{"op":', '"kill"}']],
  ])('%s', (_what, chunks, want) => {
    expect(split(chunks)).toEqual(want);
  });

  it('keeps nothing of a line over the limit however long it grows', () => {
    const out: string[] = [];
    let over = 0;
    const feed = lineSplitter(65_536, (l) => out.push(l), () => over++);
    for (let i = 0; i < 200; i++) feed('x'.repeat(65_536));
    feed('\n{"op":"reload"}\n');
    expect([over, out]).toEqual([1, ['{"op":"reload"}']]);
  });
});
