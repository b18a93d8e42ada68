/**
 * Login throttling: after `failures` failed logins for one key (a user
 * name, an IP address) within `windowMs`, that key is locked for `lockMs`.
 * While locked, even a correct password is refused. Memory is bounded:
 * at most `maxKeys` keys are tracked, the least recently touched dropped first.
 */
export class LoginGuard {
  private readonly entries = new Map<string, { fails: number[]; lockedUntil: number }>();

  constructor(
    private readonly failures = 5,
    private readonly windowMs = 10 * 60_000,
    private readonly lockMs = 5 * 60_000,
    private readonly maxKeys = 100_000,
  ) {}

  /** Milliseconds until `key` may try again; 0 when it is not locked. */
  lockedFor(key: string, now = Date.now()): number {
    const e = this.entries.get(key);
    return e && e.lockedUntil > now ? e.lockedUntil - now : 0;
  }

  /** Records a failure; returns true when this failure locked the key. */
  fail(key: string, now = Date.now()): boolean {
    let e = this.entries.get(key);
    if (e) this.entries.delete(key);
    else e = { fails: [], lockedUntil: 0 };
    this.entries.set(key, e); // re-insert: Map order is recency order
    e.fails = e.fails.filter((t) => now - t < this.windowMs);
    e.fails.push(now);
    let locked = false;
    if (e.fails.length >= this.failures && e.lockedUntil <= now) {
      e.lockedUntil = now + this.lockMs;
      e.fails = [];
      locked = true;
    }
    if (this.entries.size > this.maxKeys) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    return locked;
  }

  /** A success clears the failures of `key` (not a lock in force). */
  succeed(key: string): void {
    const e = this.entries.get(key);
    if (e && e.lockedUntil <= Date.now()) this.entries.delete(key);
  }

  /** Drops entries with nothing left to remember. */
  prune(now = Date.now()): void {
    for (const [k, e] of this.entries) {
      if (e.lockedUntil <= now && e.fails.every((t) => now - t >= this.windowMs)) this.entries.delete(k);
    }
  }
}
