import { closeSync, constants, existsSync, fstatSync, lstatSync, openSync, readdirSync, type Stats } from 'node:fs';
import path from 'node:path';

/** One file or folder of a tree walked by {@link walkTree}. */
export interface Walked {
  /** Open on it (O_NOFOLLOW) while `visit` runs; undefined for what cannot be opened so: a symbolic link, a socket. */
  fd: number | undefined;
  /** Of what was opened (fstat), or of the link or socket itself (lstat). */
  st: Stats;
  /** Its name below the walked folder, for messages and skip lists: never acted on, the name may since name something else. */
  path: string;
  /** The name as reached through its open folder (/proc/self/fd/N/name): for lchown of a link, which never follows it. */
  at: string;
}

/** How deep a walk goes: a folder further down (only a tenant's scratch folder could be so deep) is not visited. */
export const WALK_DEPTH = 256;

const OPEN = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;

/**
 * Visits `dir` and every file and folder below it without ever following
 * a link, for a process running as root in folders another user owns, who
 * may swap any name for a symbolic link at any moment: each folder is
 * opened (O_NOFOLLOW) and what is in it is reached through that open
 * folder (Linux's /proc/self/fd/N/name), never by its path from `dir`; each
 * entry is opened with O_NOFOLLOW (O_NONBLOCK: a FIFO cannot hold it) and
 * checked and changed on that fd (fstat, fchmod, fchown). A folder swapped
 * for a link after the folder above was read is refused by the open, and a
 * file swapped after it was looked at is left alone (the fd still names the
 * one looked at). `dir` itself is followed if a link (the operator's word).
 * `visit` returning false for a folder skips what is below it. Nothing is
 * thrown for a name gone meanwhile or a folder that cannot be read; a walk
 * without /proc mounted throws.
 */
export function walkTree(dir: string, visit: (e: Walked) => boolean | void): void {
  let top: number;
  try {
    top = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  } catch {
    // No such folder (yet): nothing to walk.
    return;
  }
  if (!existsSync(`/proc/self/fd/${top}`)) {
    closeSync(top);
    // Without it every folder would look unreadable, and the walk would change nothing and say nothing.
    throw new Error(`cannot walk ${dir}: /proc is not mounted (each file is reached through /proc/self/fd)`);
  }
  const into = (fd: number, st: Stats, where: string, at: string, depth: number): void => {
    if (visit({ fd, st, path: where, at }) === false || depth >= WALK_DEPTH) return;
    let names: string[];
    try {
      names = readdirSync(`/proc/self/fd/${fd}`);
    } catch {
      // Not readable (gone meanwhile): nothing below it to visit.
      return;
    }
    for (const name of names) {
      const child = `/proc/self/fd/${fd}/${name}`;
      const full = path.join(where, name);
      let cfd: number;
      try {
        cfd = openSync(child, OPEN);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // ELOOP: a symbolic link; ENXIO: a socket. Looked at as they are, never followed. Anything else (gone meanwhile): skipped.
        const st = code === 'ELOOP' || code === 'ENXIO' ? lstatSync(child, { throwIfNoEntry: false }) : undefined;
        if (st) visit({ fd: undefined, st, path: full, at: child });
        continue;
      }
      try {
        const st = fstatSync(cfd);
        if (st.isDirectory()) into(cfd, st, full, child, depth + 1);
        else visit({ fd: cfd, st, path: full, at: child });
      } finally {
        closeSync(cfd);
      }
    }
  };
  try {
    into(top, fstatSync(top), dir, dir, 0);
  } finally {
    closeSync(top);
  }
}
