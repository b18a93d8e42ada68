import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_ANSWER_BYTES, MAX_SYMBOLS, parseVerdict, scoreMessage, spamFields } from '../../../src/mail/rspamd.ts';

/** An HTTP server on loopback answering /checkv2 with `answer` (what a broken or hostile rspamd could send). */
let answer: string | Buffer = '';
let server: http.Server;
let url: string;
beforeAll(async () => {
  server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.end(answer));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const env = { ip: '192.0.2.1', helo: 'client.test', from: 's@client.test', rcpts: ['info@a.test'], queueId: 'Q1' };
const settings = () => ({ rspamd: url, reject: 15, tag: 6, timeout: 5 });

describe("rspamd's answer is checked before it is believed", () => {
  it('a score that is not a finite number (1e400 parses to Infinity), its own or a symbol\'s, is no verdict', () => {
    expect(() => parseVerdict('{"score": 1e400, "action": "no action", "symbols": {}}')).toThrow(/not an rspamd verdict/);
    expect(() => parseVerdict('{"score": 2, "action": "no action", "symbols": {"BIG": {"score": -1e400}}}')).toThrow(/score of BIG is not a finite number/);
    expect(parseVerdict('{"score": 2.5, "action": "no action", "symbols": {"A": {"score": 2.5}}}')).toMatchObject({ score: 2.5, symbols: [['A', 2.5]] });
  });

  it(`an answer larger than ${MAX_ANSWER_BYTES} bytes is not read to its end: the scan fails`, async () => {
    answer = Buffer.alloc(MAX_ANSWER_BYTES * 8, ' ');
    await expect(scoreMessage(Buffer.from('Subject: x\r\n\r\nhi\r\n'), env, settings())).rejects.toThrow(`rspamd's answer is larger than ${MAX_ANSWER_BYTES} bytes`);
    answer = '{"score": 1, "action": "no action", "symbols": {}}';
    expect(await scoreMessage(Buffer.from('Subject: x\r\n\r\nhi\r\n'), env, settings())).toMatchObject({ score: 1 });
  });

  it(`X-Spam-Symbols names the ${MAX_SYMBOLS} highest symbols, each a short plain name, and how many more there were`, () => {
    const symbols = Array.from({ length: 500 }, (_, i): [string, number] => [`SYM_${'X'.repeat(100)}_${i}\r\nX-Injected: yes`, 500 - i]);
    const fields = spamFields({ score: 20, action: 'add header', skipped: false, symbols });
    const list = /X-Spam-Symbols: ((?:[^\r]|\r\n\t)*)\r\n/.exec(fields)![1]!.split(',\r\n\t');
    expect(list).toHaveLength(MAX_SYMBOLS + 1);
    expect(list.at(-1)).toBe(`and ${500 - MAX_SYMBOLS} more`);
    expect(list[0]).toMatch(/^SYM_X+\(500\.00\)$/);
    expect(list[0]!.length).toBeLessThanOrEqual(64 + '(500.00)'.length);
    expect(fields).not.toMatch(/\r\nX-Injected/);
    expect(fields.split('\r\n').filter((l) => !l.startsWith('\t') && l !== '')).toHaveLength(3);
  });
});
