import { describe, expect, it } from 'vitest';
import { nextHopRefusal } from '../../../src/mail/index.ts';

// The next hop's refusal becomes our reply to DATA: whatever it sent, the
// reply is one line of printable ASCII with a 5xx code and a 5.x.x status.
const table: Array<[remote: string, code: number, text: string]> = [
  ['550 5.1.1 <dead@remote.test>: no such user', 550, '5.1.1 Delivery refused by the next hop: <dead@remote.test>: no such user'],
  ['556 5.1.10 far.test accepts no mail (null MX)', 556, '5.1.10 Delivery refused by the next hop: far.test accepts no mail (null MX)'],
  ['550-5.7.1 first line\n550 5.7.1 second line', 550, '5.7.1 Delivery refused by the next hop: first line 550 5.7.1 second line'],
  ['554 smuggled\r\n250 2.0.0 Ok', 554, '5.0.0 Delivery refused by the next hop: smuggled 250 2.0.0 Ok'],
  ['550 5.1.1 Ünïcödé \x00\x07 bell', 550, '5.1.1 Delivery refused by the next hop: n c d bell'],
  ['550 4.2.1 a temporary status under a permanent code', 550, '5.0.0 Delivery refused by the next hop: 4.2.1 a temporary status under a permanent code'],
  ['5501 5.1.1 four digits', 554, '5.0.0 Delivery refused by the next hop: 5501 5.1.1 four digits'],
  ['not an SMTP reply at all', 554, '5.0.0 Delivery refused by the next hop: not an SMTP reply at all'],
  ['550', 550, '5.0.0 Delivery refused by the next hop: no reason given'],
  ['550 5.7.1 tab\there,   spaces \x7f del\u2028sep', 550, '5.7.1 Delivery refused by the next hop: tab here, spaces del sep'],
  ['550 5.7.1 \r\n\t ', 550, '5.7.1 Delivery refused by the next hop: no reason given'],
  [`550 5.2.2 ${'x'.repeat(199)} yyy`, 550, `5.2.2 Delivery refused by the next hop: ${'x'.repeat(199)}`],
  [`550 5.2.2 ${'x'.repeat(10_000)}`, 550, `5.2.2 Delivery refused by the next hop: ${'x'.repeat(200)}`],
];

describe('nextHopRefusal', () => {
  it.each(table)('case %#: %j', (remote, code, text) => {
    const err = nextHopRefusal(remote);
    expect(err.responseCode).toBe(code);
    expect(err.message).toBe(text);
    expect(err.message).toMatch(/^5\.\d{1,3}\.\d{1,3} [\x20-\x7e]*$/);
  });
});
