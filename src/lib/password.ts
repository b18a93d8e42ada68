import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/**
 * Password hashes for FTP users, in the one format the config holds:
 * `$scrypt$N=16384,r=8,p=1$<salt base64url>$<key base64url>` (32-byte key).
 */

const KEY_LEN = 32;
const DEFAULT = { N: 16384, r: 8, p: 1 } as const;
const FORMAT = /^\$scrypt\$N=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/;

function derive(password: string, salt: Buffer, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, KEY_LEN, opts, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** Hashes `password` with a fresh 16-byte salt. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, { ...DEFAULT, maxmem: 64 * 1024 * 1024 });
  return `$scrypt$N=${DEFAULT.N},r=${DEFAULT.r},p=${DEFAULT.p}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

/** True when `hash` is in the format above, with parameters this module accepts. */
export function isPasswordHash(hash: string): boolean {
  return parseHash(hash) !== undefined;
}

function parseHash(hash: string): { opts: ScryptOptions; salt: Buffer; key: Buffer } | undefined {
  const m = FORMAT.exec(hash);
  if (!m) return undefined;
  const N = Number(m[1]);
  const r = Number(m[2]);
  const p = Number(m[3]);
  // Bounds keep a hostile config from making one login cost seconds or gigabytes.
  if (N < 2 || N > 1 << 20 || (N & (N - 1)) !== 0 || r < 1 || r > 32 || p < 1 || p > 16) return undefined;
  const salt = Buffer.from(m[4]!, 'base64url');
  const key = Buffer.from(m[5]!, 'base64url');
  if (key.length !== KEY_LEN || salt.length < 8) return undefined;
  return { opts: { N, r, p, maxmem: 256 * N * r + 1024 * 1024 }, salt, key };
}

/**
 * Checks `password` against `hash` in constant time (the key comparison does
 * not depend on where the keys differ). A malformed hash never matches.
 */
export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  const parsed = parseHash(hash);
  if (!parsed) return false;
  const key = await derive(password, parsed.salt, parsed.opts);
  return timingSafeEqual(key, parsed.key);
}

/** A hash that never matches, to spend the same time on unknown users as on known ones. */
export const DUMMY_HASH = '$scrypt$N=16384,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
