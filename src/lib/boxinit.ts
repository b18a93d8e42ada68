import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { findExecutable } from './box.ts';
import { ownFolderProblem } from './ownfile.ts';
import { packageRoot } from './paths.ts';

/** box-init, the fork server of a tenant's persistent script box: its binary, or why there is none. */
export type BoxInit = { ok: true; path: string } | { ok: false; why: string };

/** The C source of box-init, shipped with the package. */
export function boxInitSource(): string {
  return path.join(packageRoot(), 'src', 'cgi', 'native', 'box-init.c');
}

/**
 * Why `dir` may not hold a program this process runs (as root: in every
 * tenant's box, as each tenant's uid): it must belong to this process's
 * user and be writable by no one else, and no folder above it may be
 * writable by others (a sticky folder such as /tmp aside: there no one else
 * can rename or replace what is ours). Otherwise whoever can write there
 * could swap box-init for a program of their own. (The owner of a folder
 * above it is not asked: the suite's own code is in those folders, and
 * whoever owns them decides what this process runs anyway.)
 */
export function programFolderProblem(dir: string, me: number): string | undefined {
  const own = ownFolderProblem(dir, me);
  if (own) return own;
  return folderAboveProblem(dir);
}

/** A folder above `dir` that others may write (not sticky), or undefined. */
function folderAboveProblem(dir: string): string | undefined {
  for (let d = path.dirname(dir); ; d = path.dirname(d)) {
    // A folder not made yet is made by the build, as this user's.
    const st = lstatSync(d, { throwIfNoEntry: false });
    if (st && (st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) return `${d} is writable by others (mode ${(st.mode & 0o7777).toString(8)})`;
    if (d === path.dirname(d)) return undefined;
  }
}

/**
 * What a start would do about box-init in `dir`, without doing it: run the
 * binary built there (`build: false`), build one with `cc` (`build: true`),
 * or neither, and why. A binary is run only when it is this user's, a
 * regular file with one name, writable by no one else, in a folder that
 * passes {@link programFolderProblem}.
 */
export function boxInitPlan(dir: string, searchPath?: string): { ok: true; path: string; build: false } | { ok: true; path: string; build: true; cc: string } | { ok: false; why: string } {
  const source = boxInitSource();
  let text: Buffer;
  try {
    text = readFileSync(source);
  } catch (err) {
    return { ok: false, why: `${source} unreadable (${(err as Error).message})` };
  }
  const me = process.getuid?.() ?? 0;
  const file = path.join(dir, `box-init-${createHash('sha256').update(text).digest('hex').slice(0, 16)}`);
  const cc = findExecutable('cc', searchPath);
  const built = lstatSync(file, { throwIfNoEntry: false });
  if (!built && !cc) return { ok: false, why: 'no C compiler (cc) to build box-init (apt-get install gcc)' };
  const folder = existsSync(dir) ? programFolderProblem(dir, me) : folderAboveProblem(dir);
  if (folder) return { ok: false, why: `box-init is neither built nor run there: ${folder}` };
  if (built) {
    const bad = !built.isFile() ? 'not a regular file' : built.uid !== me ? `owned by uid ${built.uid}, not ${me}` : (built.mode & 0o022) !== 0 ? `writable by others (mode ${(built.mode & 0o7777).toString(8)})` : built.nlink !== 1 ? `${built.nlink} names (a hard link)` : undefined;
    if (bad) return { ok: false, why: `${file} is ${bad}: not run (remove it; it is built again)` };
    return { ok: true, path: file, build: false };
  }
  return { ok: true, path: file, build: true, cc: cc! };
}
