import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { readNoLink } from '../lib/ownfile.ts';
import path from 'node:path';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
/** Days an SRS address stays valid by default (PostSRSd's default). */
export const SRS_MAX_AGE_DAYS = 21;
const HASH_LENGTH = 6;
const DAY_MS = 86_400_000;

export type SrsReverse = { ok: true; address: string } | { ok: false; why: string };

/**
 * Sender Rewriting Scheme, PostSRSd style: forwarded mail leaves with
 * `SRS0=<hash>=<tt>=<domain>=<local>@<srsDomain>` as envelope sender, so the
 * target's SPF check looks at our domain. A bounce to that address comes
 * back to us and is forwarded to the original sender, once its hash
 * (HMAC-SHA1 with a secret kept in `<data>`) and its day stamp check out.
 * Hash and day stamp are compared case-insensitively, as libsrs2 does, since
 * some MTAs fold the case of local parts.
 */
export class Srs {
  constructor(
    private readonly secret: Buffer,
    readonly domain: string,
    private readonly now: () => number = Date.now,
    private readonly maxAgeDays: number = SRS_MAX_AGE_DAYS,
  ) {}

  /** Reads `<dataDir>/srs.key`, creating it (32 random bytes, mode 0600) on first start. */
  static open(dataDir: string, domain: string, now?: () => number, maxAgeDays?: number): Srs {
    const file = path.join(dataDir, 'srs.key');
    let hex: string;
    try {
      hex = readNoLink(file).toString('utf8').trim();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      hex = randomBytes(32).toString('hex');
      writeFileSync(file, `${hex}\n`, { mode: 0o600, flag: 'wx' });
    }
    // A key anyone could guess would let anyone forge bounce addresses that we forward.
    if (!/^[0-9a-f]{32,}$/i.test(hex)) throw new Error(`${file}: not a key of at least 16 bytes in hex; remove it to make a new one (SRS addresses handed out before then no longer bounce back)`);
    return new Srs(Buffer.from(hex, 'hex'), domain, now, maxAgeDays);
  }

  /** True when `domain` is the SRS domain, i.e. `local` should be reversed. */
  handles(domain: string): boolean {
    return domain === this.domain;
  }

  /** The SRS0 address for `sender` (`local@domain`). Null senders and our own SRS addresses are left alone. */
  forward(sender: string): string {
    const at = sender.lastIndexOf('@');
    if (sender === '' || at === -1) return sender;
    const local = sender.slice(0, at);
    const domain = sender.slice(at + 1).toLowerCase();
    if (domain === this.domain) return sender;
    const tt = this.stamp(Math.floor(this.now() / DAY_MS));
    return `SRS0=${this.hash(tt, domain, local)}=${tt}=${domain}=${local}@${this.domain}`;
  }

  /** Checks and decodes the local part of an address at the SRS domain. */
  reverse(local: string): SrsReverse {
    const m = /^srs0=([^=]+)=([^=]{2})=([^=]+)=(.+)$/i.exec(local);
    if (!m) return { ok: false, why: 'not an SRS0 address' };
    const [, hash, tt, domain, orig] = m as unknown as [string, string, string, string, string];
    const want = this.hash(tt.toUpperCase(), domain.toLowerCase(), orig);
    const a = Buffer.from(hash.toLowerCase());
    const b = Buffer.from(want.toLowerCase());
    if (a.length !== b.length || !timingSafeEqual(a, b)) return { ok: false, why: 'SRS hash does not match' };
    const age = this.ageDays(tt.toUpperCase());
    if (age === undefined || age > this.maxAgeDays) return { ok: false, why: 'SRS address has expired' };
    return { ok: true, address: `${orig}@${domain.toLowerCase()}` };
  }

  private hash(tt: string, domain: string, local: string): string {
    return createHmac('sha1', this.secret)
      .update(`${tt}\0${domain}\0${local.toLowerCase()}`)
      .digest('base64')
      .replace(/[+/=]/g, 'x')
      .slice(0, HASH_LENGTH);
  }

  // Day number mod 1024 in two base32 digits (libsrs2's timestamp).
  private stamp(day: number): string {
    const d = day % 1024;
    return BASE32[d >> 5]! + BASE32[d & 31]!;
  }

  private ageDays(tt: string): number | undefined {
    const hi = BASE32.indexOf(tt[0]!);
    const lo = BASE32.indexOf(tt[1]!);
    if (hi === -1 || lo === -1) return undefined;
    const today = Math.floor(this.now() / DAY_MS) % 1024;
    return (today - ((hi << 5) | lo) + 1024) % 1024;
  }
}
