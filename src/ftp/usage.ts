/**
 * Disk usage of one tenant's web root against its quota, in bytes of file
 * content (st_size of regular files; folders and symlinks count nothing).
 * Known from a scan at start, kept current by every FTP write, and corrected
 * by a periodic rescan (writes by other means, drift).
 */
export class TenantUsage {
  used = 0;
  constructor(public quota: number | undefined) {}

  /** True when adding `extra` bytes, then freeing `credit` bytes, stays within the quota. */
  fits(extra: number, credit = 0): boolean {
    return this.quota === undefined || this.used + extra - credit <= this.quota;
  }

  /** Bytes left before the quota (Infinity without one). */
  get free(): number {
    return this.quota === undefined ? Infinity : Math.max(0, this.quota - this.used);
  }
}

// Moved to lib so the operator CLI (tenant list) counts usage the same way, without importing a service.
export { scanUsage } from '../lib/du.ts';
