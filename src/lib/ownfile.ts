import { randomBytes } from 'node:crypto';
import { closeSync, constants, fchmodSync, fstatSync, lstatSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';

/**
 * Files only one user can have written: a process that must not take
 * another user's word (the root handler launcher, say, beside a server
 * that runs unprivileged and owns the folder above) keeps a file in a folder
 * that user owns and no one else can write, and reads it back only if it
 * still is what it wrote: a regular file (not a symbolic link, not a second
 * hard link of some other file), owned by that user, with no permission
 * for group or others, in such a folder. Anything else is refused, with the
 * reason, never read.
 */
export type OwnRead = { ok: true; text: string } | { ok: false; missing: boolean; why: string };

/** Why `dir` cannot hold files only `owner` can have written, or undefined when it can. */
export function ownFolderProblem(dir: string, owner: number): string | undefined {
  const st = lstatSync(dir, { throwIfNoEntry: false });
  if (!st) return `${dir} does not exist`;
  if (st.isSymbolicLink()) return `${dir} is a symbolic link`;
  if (!st.isDirectory()) return `${dir} is not a folder`;
  if (st.uid !== owner) return `${dir} is owned by uid ${st.uid}, not ${owner}`;
  if ((st.mode & 0o022) !== 0) return `${dir} is writable by others (mode ${(st.mode & 0o7777).toString(8)})`;
  return undefined;
}

/** Reads `file` if `owner` alone can have written it (see above). */
export function readOwnFile(file: string, owner: number): OwnRead {
  const dir = path.dirname(file);
  if (!lstatSync(dir, { throwIfNoEntry: false })) return { ok: false, missing: true, why: `${dir} does not exist` };
  const folder = ownFolderProblem(dir, owner);
  if (folder) return { ok: false, missing: false, why: folder };
  let fd: number;
  try {
    // O_NOFOLLOW: a symbolic link is refused (ELOOP) rather than followed; O_NONBLOCK: a FIFO cannot hold the read.
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { ok: false, missing: true, why: `${file} does not exist` };
    return { ok: false, missing: false, why: code === 'ELOOP' ? `${file} is a symbolic link` : `${file} cannot be opened (${code ?? String(err)})` };
  }
  try {
    // Checked on what was opened, not on the name: nothing can swap the file between the check and the read.
    const st = fstatSync(fd);
    if (!st.isFile()) return { ok: false, missing: false, why: `${file} is not a regular file` };
    if (st.uid !== owner) return { ok: false, missing: false, why: `${file} is owned by uid ${st.uid}, not ${owner}` };
    if ((st.mode & 0o077) !== 0) return { ok: false, missing: false, why: `${file} is open to others (mode ${(st.mode & 0o7777).toString(8)}, not 600)` };
    if (st.nlink !== 1) return { ok: false, missing: false, why: `${file} has ${st.nlink} names (a hard link)` };
    return { ok: true, text: readFileSync(fd, 'utf8') };
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes `file` (mode 0600, or `mode`: 0640 for a file others of the group
 * may read, which readOwnFile then refuses) in a folder only `owner` can
 * write: a new temporary file beside it (O_EXCL, under a random name: never
 * one that exists, never through a link), then renamed over it, so a reader
 * sees the old text or the new, never part of it. Throws when the folder is
 * not such a folder or the write fails; leaves no temporary file.
 */
export function writeOwnFile(file: string, text: string, owner: number, mode = 0o600): void {
  const folder = ownFolderProblem(path.dirname(file), owner);
  if (folder) throw new Error(folder);
  replaceFile(file, text, mode);
}

/**
 * Writes `file` whole or not at all (mode `mode`): a new temporary file
 * beside it, under a random name, opened with O_EXCL | O_NOFOLLOW (never a
 * file that exists, never through a link someone put there), then renamed
 * over it (which replaces a link at `file` itself, never writes through
 * it). For files a start as root writes in folders the service user owns.
 * Throws when the write fails; leaves no temporary file.
 */
export function replaceFile(file: string, data: string | Uint8Array, mode = 0o600): void {
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  let closed = false;
  try {
    fchmodSync(fd, mode);
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    for (let at = 0; at < bytes.length; ) at += writeSync(fd, bytes, at);
    closeSync(fd);
    closed = true;
    renameSync(tmp, file);
  } catch (err) {
    if (!closed) closeSync(fd);
    unlinkSync(tmp);
    throw err;
  }
}

/**
 * Reads `file` as it is, never through a symbolic link (O_NOFOLLOW): for a
 * key a start as root reads in a folder the service user owns, who could
 * otherwise point it at a file only root may read. A link is refused with
 * a reason, and so is anything but a regular file (a FIFO is never waited
 * on); other errors (ENOENT first) are thrown as they come.
 */
export function readNoLink(file: string): Buffer {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO put there would hold the open (and the start) until someone wrote to it.
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new Error(`${file} is a symbolic link; refused (move it away and restart)`);
    throw err;
  }
  try {
    if (!fstatSync(fd).isFile()) throw new Error(`${file} is not a regular file; refused (move it away and restart)`);
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}
