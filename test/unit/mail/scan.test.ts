import { describe, expect, it } from 'vitest';
import { MessageScan } from '../../../src/mail/scan.ts';

function scan(chunks: Array<string | Buffer>): MessageScan {
  const s = new MessageScan();
  for (const c of chunks) s.push(typeof c === 'string' ? Buffer.from(c, 'latin1') : c);
  return s;
}

describe('MessageScan', () => {
  const x = (n: number) => 'x'.repeat(n);
  const table: Array<[string, Array<string | Buffer>, { longest: number; tooLong: boolean; eightBitHeaders: boolean }]> = [
    ['short lines', ['a: b\r\n\r\nbody\r\n'], { longest: 4, tooLong: false, eightBitHeaders: false }],
    ['998 exactly', [`a: b\r\n\r\n${x(998)}\r\n`], { longest: 998, tooLong: false, eightBitHeaders: false }],
    ['999 in one chunk', [`a: b\r\n\r\n${x(999)}\r\n`], { longest: 999, tooLong: true, eightBitHeaders: false }],
    ['999 split over chunks', ['a: b\r\n\r\n', x(500), x(499), '\r\n'], { longest: 999, tooLong: true, eightBitHeaders: false }],
    ['CR and LF in separate chunks', ['a: b\r\n\r\n', x(998), '\r', '\n'], { longest: 998, tooLong: false, eightBitHeaders: false }],
    ['an unfinished last line', ['a: b\r\n\r\n', x(1000)], { longest: 1000, tooLong: true, eightBitHeaders: false }],
    ['UTF-8 in a header', ['Subject: caf', Buffer.from('é', 'utf8'), '\r\n\r\nx\r\n'], { longest: 14, tooLong: false, eightBitHeaders: true }],
    ['UTF-8 only in the body', ['Subject: x\r\n\r\n', Buffer.from('café\r\n', 'utf8')], { longest: 10, tooLong: false, eightBitHeaders: false }],
    ['the empty line split from the body', ['Subject: x\r\n', '\r\n', Buffer.from('é', 'utf8')], { longest: 10, tooLong: false, eightBitHeaders: false }],
  ];
  it.each(table)('%s', (_name, chunks, want) => {
    const s = scan(chunks);
    expect({ longest: s.longest, tooLong: s.tooLong, eightBitHeaders: s.eightBitHeaders }).toEqual(want);
  });
});
