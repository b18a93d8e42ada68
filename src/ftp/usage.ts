import { lstat, readdir, unlink } from 'node:fs/promises';
import path from 'node:path';

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

/**
 * Sums the sizes of regular files below `root` without following symlinks
 * (a link to a big file elsewhere costs its tenant nothing, and a loop
 * cannot trap the scan). A missing root counts as empty. With `removeTemps`
 * (a name prefix), files so named are deleted instead of counted: upload
 * temporaries left by a crash, removed at start when no upload can be running.
 */
export async function scanUsage(root: string, { removeTemps }: { removeTemps?: string } = {}): Promise<number> {
  let total = 0;
  const pending: string[] = [root];
  while (pending.length > 0) {
    const dir = pending.pop()!;
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw err;
    }
    for (const e of entries) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) pending.push(full);
      else if (e.isFile()) {
        if (removeTemps && e.name.startsWith(removeTemps)) {
          await unlink(full).catch(() => undefined);
          continue;
        }
        try {
          total += (await lstat(full)).size;
        } catch {
          // Removed between readdir and lstat: it no longer uses space.
        }
      }
    }
  }
  return total;
}
