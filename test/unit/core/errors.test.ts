import { describe, expect, it } from 'vitest';
import { CATALOGUE, JAIL_REFUSALS, MakewavesError, refusal, replyCode, type ErrorCode } from '../../../src/core/errors.ts';

// Reply codes each protocol defines for a refusal or failure.
const FTP_CODES = new Set([421, 425, 426, 450, 451, 452, 501, 502, 503, 504, 530, 532, 534, 550, 551, 552, 553]);
// FTP gives USER/PASS no temporary refusal but 421 (closing): a login refused for any reason is 530 (RFC 959 §5.4).
const FTP_LOGIN_REFUSALS = new Set<ErrorCode>(['AUTH_FAILED', 'LOCKED_OUT', 'SUSPENDED']);

/** Whether a catalogue is consistent; returns the problems found. */
function problems(cat: Record<string, { http: number; ftp: number; smtp: readonly [number, string] }>): string[] {
  const out: string[] = [];
  for (const [code, e] of Object.entries(cat)) {
    if (e.http < 400 || e.http > 599) out.push(`${code}: HTTP ${e.http} is not an error status`);
    if (!FTP_CODES.has(e.ftp)) out.push(`${code}: FTP ${e.ftp} is not a refusal code`);
    const [n, status] = e.smtp;
    if (!/^[45]\.\d{1,3}\.\d{1,3}$/.test(status)) out.push(`${code}: SMTP status ${status} is malformed`);
    else if (Math.floor(n / 100) !== Number(status[0])) out.push(`${code}: SMTP ${n} and ${status} disagree on the class`);
    // A condition temporary in SMTP is temporary in FTP too, and the other way round.
    const smtpTemp = n < 500;
    const ftpTemp = e.ftp < 500;
    if (smtpTemp !== ftpTemp && !FTP_LOGIN_REFUSALS.has(code as ErrorCode)) out.push(`${code}: temporary in ${smtpTemp ? 'SMTP' : 'FTP'} only`);
  }
  return out;
}

describe('the error catalogue', () => {
  it('answers a login refused because TLS is required with 530, as the FTP service does (USER may not answer 534)', () => {
    expect(refusal('POLICY_DENIED', 'ftp', 'TLS required: send AUTH TLS before logging in')).toEqual({ code: 530, text: 'TLS required: send AUTH TLS before logging in' });
  });

  it('maps every code to a valid, consistent reply in HTTP, FTP and SMTP', () => {
    expect(problems(CATALOGUE)).toEqual([]);
  });

  it.each([
    ['an HTTP success', { http: 200, ftp: 550, smtp: [550, '5.1.1'] as const }, /not an error status/],
    ['an FTP positive reply', { http: 404, ftp: 250, smtp: [550, '5.1.1'] as const }, /not a refusal code/],
    ['SMTP classes that disagree', { http: 404, ftp: 550, smtp: [450, '5.1.1'] as const }, /disagree on the class/],
    ['a malformed enhanced status', { http: 404, ftp: 550, smtp: [550, '5.1'] as const }, /malformed/],
    ['temporary in one protocol only', { http: 503, ftp: 550, smtp: [451, '4.3.0'] as const }, /temporary in SMTP only/],
  ])('the consistency check catches %s', (_name, entry, why) => {
    expect(problems({ BROKEN: entry })).toContainEqual(expect.stringMatching(why));
  });

  it('words SMTP replies with the enhanced status first', () => {
    expect(refusal('QUOTA_EXCEEDED', 'smtp', 'Mailbox full')).toEqual({ code: 552, text: '5.2.2 Mailbox full' });
    expect(refusal('QUOTA_EXCEEDED', 'ftp', 'Quota exceeded')).toEqual({ code: 552, text: 'Quota exceeded' });
    expect(replyCode('SUSPENDED', 'http')).toBe(503);
    expect(new MakewavesError('RATE_LIMITED', 'Slow down').reply('smtp')).toEqual({ code: 421, text: '4.7.0 Slow down' });
  });

  it('answers a jail refusal the same way in HTTP and FTP', () => {
    expect(Object.fromEntries(Object.entries(JAIL_REFUSALS).map(([k, c]) => [k, [replyCode(c, 'http'), replyCode(c, 'ftp')]]))).toEqual({
      'bad-encoding': [400, 553],
      'bad-char': [400, 553],
      escape: [403, 550],
      hidden: [404, 550],
    });
  });
});
