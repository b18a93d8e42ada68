import { realpathSync, statSync } from 'node:fs';
import path from 'node:path';

/**
 * The entries of a PATH that only root can change: absolute, and the
 * folder and every folder above it (as the kernel resolves it) owned by
 * root and writable by nobody else (above it, a sticky folder such as
 * /tmp is passable: nobody else may rename what root owns in it). What a
 * root process finds by such a PATH was put there by root. `dropped`: the
 * others, in their order.
 */
export function rootOnlyPath(searchPath: string): { path: string; dropped: string[] } {
  const kept: string[] = [];
  const dropped: string[] = [];
  for (const dir of searchPath.split(':')) {
    if (!dir) continue;
    (path.isAbsolute(dir) && onlyRootWrites(dir) ? kept : dropped).push(dir);
  }
  return { path: kept.join(':'), dropped };
}

function onlyRootWrites(dir: string): boolean {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    // Not there (yet): only whoever may make it in the folder above decides what will be in it.
    const up = path.dirname(dir);
    return up !== dir && onlyRootWrites(up);
  }
  for (let at = real, own = true; ; own = false) {
    const st = statSync(at);
    if (st.uid !== 0 || ((st.mode & 0o022) !== 0 && (own || (st.mode & 0o1000) === 0))) return false;
    const up = path.dirname(at);
    if (up === at) return true;
    at = up;
  }
}
