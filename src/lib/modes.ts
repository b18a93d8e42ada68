import { chmodSync, lstatSync, mkdirSync, readdirSync, type Dirent } from 'node:fs';
import path from 'node:path';

/**
 * Mode bits nothing under the data folder may have: group or world write,
 * world read. Folders may keep world execute (pass through without
 * listing) where the handlers' user must reach its scratch folder.
 */
export const FORBIDDEN_BITS = 0o026;

/**
 * Never lets a file be created group- or world-writable, whatever umask the
 * process was started with (an operator's 000 included). Only adds bits to
 * the umask; a stricter one stays as it is.
 */
export function guardUmask(): void {
  process.umask(process.umask() | 0o022);
}

/**
 * Creates `dir` (and missing parents) with `mode`, and takes the forbidden
 * bits away from `dir` if it already existed with them.
 */
export function makeDir(dir: string, mode: number): void {
  mkdirSync(dir, { recursive: true, mode });
  const st = lstatSync(dir);
  if (st.mode & FORBIDDEN_BITS) chmodSync(dir, st.mode & 0o7777 & ~FORBIDDEN_BITS);
}

/**
 * Takes the forbidden bits away from every file and folder under `dir`
 * (sockets and symlinks left alone), for data folders written by older
 * versions or with a lax umask. Returns how many were changed.
 */
export function tightenTree(dir: string): number {
  let n = 0;
  const pending = [dir];
  const fix = (p: string) => {
    const st = lstatSync(p, { throwIfNoEntry: false });
    if (!st || !(st.isFile() || st.isDirectory()) || !(st.mode & FORBIDDEN_BITS)) return;
    chmodSync(p, st.mode & 0o7777 & ~FORBIDDEN_BITS);
    n++;
  };
  while (pending.length > 0) {
    const d = pending.pop()!;
    fix(d);
    let names: Dirent[];
    try {
      names = readdirSync(d, { withFileTypes: true });
    } catch {
      // Unreadable (a handler's scratch folder as another user, or gone): nothing below it to fix from here.
      continue;
    }
    for (const e of names) {
      const full = path.join(d, e.name);
      if (e.isDirectory()) pending.push(full);
      else fix(full);
    }
  }
  return n;
}
