import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/core/log.ts';
import { noPostmasterWarning } from '../../../src/mail/accept.ts';

describe('the missing mail.postmaster warning', () => {
  it('is logged once a minute at most, by the clock it is given', () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger({
      level: 'debug',
      destination: new Writable({
        write(chunk: Buffer, _enc, cb) {
          for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
          cb();
        },
      }),
    });
    let now = 1_000_000;
    const warn = noPostmasterWarning(() => now);
    warn(log, 'postmaster@a.test', 'x@elsewhere.test');
    for (let i = 0; i < 100; i++) {
      now += 500; // 50 s in all
      warn(log, 'abuse@a.test', 'x@elsewhere.test');
    }
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, rcpt: 'postmaster@a.test', from: 'x@elsewhere.test' });
    expect(lines[0]!.msg).toMatch(/mail\.postmaster is not set in makewaves\.yaml/);
    now = 1_000_000 + 60_000;
    warn(log, 'postmaster', '');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ rcpt: 'postmaster', from: '' });
  });
});
