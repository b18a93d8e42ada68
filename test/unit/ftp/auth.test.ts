import { describe, expect, it } from 'vitest';
import { activeTarget } from '../../../src/ftp/index.ts';
import { DUMMY_HASH, hashPassword, isPasswordHash, verifyPassword } from '../../../src/lib/password.ts';

describe('scrypt password hashes', () => {
  it('verifies the bundled example (alice@example.test / wonderland)', async () => {
    const h = '$scrypt$N=16384,r=8,p=1$-88s-FRzQ4QiFECs5DYO_w$NtdKswZ4pDW81BVP6GrutiLCTS61vmEkiZWljZ4CIYY';
    expect(await verifyPassword('wonderland', h)).toBe(true);
    expect(await verifyPassword('Wonderland', h)).toBe(false);
    expect(await verifyPassword('', h)).toBe(false);
  });

  it('round-trips a fresh hash with a fresh salt', async () => {
    const a = await hashPassword('s3cret');
    const b = await hashPassword('s3cret');
    expect(a).not.toBe(b);
    expect(a).toMatch(/^\$scrypt\$N=16384,r=8,p=1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
    expect(await verifyPassword('s3cret', a)).toBe(true);
    expect(await verifyPassword('s3cret!', a)).toBe(false);
  });

  it.each([
    ['$scrypt$', 'truncated'],
    ['$scrypt$N=16384,r=8,p=1$c2FsdHNhbHQ$AAAA', 'short key'],
    ['$scrypt$N=1000,r=8,p=1$c2FsdHNhbHQ$NtdKswZ4pDW81BVP6GrutiLCTS61vmEkiZWljZ4CIYY', 'N not a power of two'],
    ['$scrypt$N=67108864,r=8,p=1$c2FsdHNhbHQ$NtdKswZ4pDW81BVP6GrutiLCTS61vmEkiZWljZ4CIYY', 'N too large'],
    ['$2b$10$abcdefghijklmnopqrstuv', 'another scheme'],
  ])('never matches a malformed hash: %s (%s)', async (h) => {
    expect(isPasswordHash(h)).toBe(false);
    expect(await verifyPassword('anything', h)).toBe(false);
  });

  it('the dummy hash used for unknown users is well-formed and matches nothing typed', async () => {
    expect(isPasswordHash(DUMMY_HASH)).toBe(true);
    expect(await verifyPassword('', DUMMY_HASH)).toBe(false);
  });
});

describe('PORT/EPRT arguments', () => {
  it.each([
    ['PORT', '127,0,0,1,4,1', { host: '127.0.0.1', port: 1025 }],
    ['PORT', '10,0,0,1,0,21', { host: '10.0.0.1', port: 21 }],
    ['PORT', '256,0,0,1,4,1', undefined],
    ['PORT', '127,0,0,1,4', undefined],
    ['PORT', '127.0.0.1,4,1', undefined],
    ['EPRT', '|1|127.0.0.1|5000|', { host: '127.0.0.1', port: 5000 }],
    ['EPRT', '|2|::1|5000|', { host: '::1', port: 5000 }],
    ['EPRT', '|1|::1|5000|', undefined],
    ['EPRT', '|3|127.0.0.1|5000|', undefined],
    ['EPRT', '|1|127.0.0.1|70000|', undefined],
    ['EPRT', '|1|example.test|5000|', undefined],
  ] as const)('%s %s', (d, arg, want) => {
    expect(activeTarget(d, arg)).toEqual(want);
  });
});
