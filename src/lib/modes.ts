import { closeSync, constants, fchmodSync, fchownSync, fstatSync, lstatSync, mkdirSync, openSync } from 'node:fs';
import { walkTree } from './walk.ts';

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
 * bits away from `dir` if it already existed with them. A symbolic link
 * where `dir` goes is refused (thrown), never followed: a folder under
 * <data> belongs to the service user, who could otherwise have a start as
 * root change or fill any folder it points to. `followLink` is for the data
 * folder itself, which the operator may place by a link.
 */
export function makeDir(dir: string, mode: number, { followLink = false, owner }: { followLink?: boolean; owner?: { uid: number; gid: number } } = {}): void {
  mkdirSync(dir, { recursive: true, mode });
  let fd: number;
  try {
    // Checked and changed on what was opened: nothing can swap a link in between (O_NOFOLLOW: ELOOP on a link).
    fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | (followLink ? 0 : constants.O_NOFOLLOW));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Linux answers ENOTDIR for a link opened with O_DIRECTORY | O_NOFOLLOW, other systems ELOOP.
    if (code === 'ELOOP' || (code === 'ENOTDIR' && lstatSync(dir, { throwIfNoEntry: false })?.isSymbolicLink())) {
      throw new Error(`${dir} is a symbolic link; refused (move it away and restart)`);
    }
    if (code === 'ENOTDIR') throw new Error(`${dir} is not a folder`);
    throw err;
  }
  try {
    const st = fstatSync(fd);
    if (st.mode & FORBIDDEN_BITS) fchmodSync(fd, st.mode & 0o7777 & ~FORBIDDEN_BITS);
    if (owner && (st.uid !== owner.uid || st.gid !== owner.gid)) fchownSync(fd, owner.uid, owner.gid);
  } finally {
    closeSync(fd);
  }
}

/**
 * Opens the folder `at` names without following a link there (O_NOFOLLOW):
 * a link, or anything not a folder, throws `refusal`; other errors (ENOENT
 * first) are thrown as they come. For a process that works, as root, in
 * folders another user may change: what it then does goes through the fd.
 */
export function openFolderNoLink(at: string, refusal: string): number {
  try {
    return openSync(at, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Linux answers ENOTDIR for a link opened with O_DIRECTORY | O_NOFOLLOW, other systems ELOOP.
    if (code === 'ELOOP' || code === 'ENOTDIR') throw new Error(refusal);
    throw err;
  }
}

/**
 * Takes the forbidden bits away from every file and folder under `dir`
 * (sockets and symlinks left alone), for data folders written by older
 * versions or with a lax umask. Returns how many were changed. A start as
 * root runs it in <data>, the service user's (and tenants' scratch folders
 * below): each file is checked and changed on what was opened, never by
 * its name, which may name something else by then (lib/walk.ts).
 */
export function tightenTree(dir: string): number {
  let n = 0;
  walkTree(dir, ({ fd, st }) => {
    if (fd === undefined || !(st.isFile() || st.isDirectory()) || !(st.mode & FORBIDDEN_BITS)) return;
    fchmodSync(fd, st.mode & 0o7777 & ~FORBIDDEN_BITS);
    n++;
  });
  return n;
}
