import { lstat, readdir, unlink } from 'node:fs/promises';
import path from 'node:path';

/**
 * Sums the sizes of regular files below `root` without following symlinks
 * (a link to a big file elsewhere costs its tenant nothing, and a loop
 * cannot trap the scan). A missing root counts as empty. With `removeTemps`
 * (a name prefix), files so named are deleted instead of counted: upload
 * temporaries left by a crash, removed at start when no upload can be running.
 */
export async function scanUsage(root: string, opts: { removeTemps?: string } = {}): Promise<number> {
  return (await treeUsage(root, opts)).bytes;
}

/** Bytes and number of regular files below `root`, as {@link scanUsage} counts them: what a customer's overview shows. */
export async function treeUsage(root: string, { removeTemps }: { removeTemps?: string } = {}): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
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
          // A temporary already removed (its upload finished meanwhile) is what we wanted.
          await unlink(full).catch(() => undefined);
          continue;
        }
        try {
          bytes += (await lstat(full)).size;
          files += 1;
        } catch {
          // Removed between readdir and lstat: it no longer uses space.
        }
      }
    }
  }
  return { bytes, files };
}
