import { randomBytes } from 'node:crypto';
import { close, constants, createReadStream, lstatSync, openSync, renameSync, statSync, type ReadStream, type Stats } from 'node:fs';
import { copyFile, lstat, mkdir, readdir, readlink, realpath, rename, rmdir, stat, truncate, unlink, utimes } from 'node:fs/promises';
import path from 'node:path';
import { replyCode, type ErrorCode } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { isInside, resolveInJailSync, splitSegments } from '../lib/jail.ts';
import type { TenantUsage } from './usage.ts';

/** Opens `file` to hold it, or undefined when it cannot be (gone, a link, no right). */
function tryOpenSync(file: string, flags: number): number | undefined {
  try {
    return openSync(file, flags);
  } catch {
    // Nothing to hold (see above): the caller goes on without it.
    return undefined;
  }
}

/**
 * Closes `fd` in the thread pool, handed over once the current work is
 * done (the reply that follows a commit is written first); a failing close
 * of a file only read loses nothing.
 */
function closeLater(fd: number): void {
  setImmediate(() => close(fd, () => undefined));
}

/**
 * A refusal in FTP's words: `code` is the reply code, `message` the text,
 * which names only jail-relative paths (never a host path).
 */
export class FtpError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = 'FtpError';
  }

  /** A refusal of the suite's error catalogue, with the FTP code it decides (core/errors.ts). */
  static of(code: ErrorCode, message: string): FtpError {
    return new FtpError(replyCode(code, 'ftp'), message);
  }
}

/** A file entry as listings show it: stats plus the name the client sees. */
export type Entry = Stats & { name: string };

/** Longest path argument accepted (bytes); longer ones get 553. */
export const MAX_PATH = 1024;
/** Longest single name (bytes): what ext4 and most file systems allow. */
export const MAX_NAME = 255;
/** C0 control characters and DEL: refused in names, left out of listings. */
const CONTROL = /[\x00-\x1f\x7f]/;
/** Prefix of upload temporaries: a dot-name, so HTTP never serves it and listings hide it. */
export const TEMP_PREFIX = '.~mw-upload-';

/** An upload being written to a hidden temporary beside its target. */
export interface PendingUpload {
  /** Jail-relative path of the target, as replies show it. */
  readonly clientPath: string;
  readonly target: string;
  readonly temp: string;
  /** Size of the file being replaced (0 if new): freed when the upload is committed. */
  readonly oldSize: number;
  /** Bytes already in the temporary (kept for APPE and REST) before new data. */
  readonly prefix: number;
}

type Place = { parent: string; name: string; full: string; segments: string[]; clientPath: string; lstat: Stats | undefined };

/**
 * The file system ftp-srv sees for one session: rooted at a tenant's web
 * root, resolving every client path after `..`, and after following
 * symlinks, inside that root. A symlink whose real target is outside (or
 * dangles outside) is refused for every command; names starting with "."
 * (but `.well-known`) are refused too, so upload temporaries are
 * unreachable. Nothing is ever "cleaned up": a hostile path is refused.
 */
export class JailFileSystem {
  private cwd: string[] = [];

  constructor(
    /** Real path of the tenant root (already passed through realpath). */
    readonly root: string,
    readonly usage: TenantUsage,
    private readonly log: Logger,
  ) {}

  currentDirectory(): string {
    return `/${this.cwd.join('/')}`;
  }

  /** Parses a client path against the working folder. Throws FtpError 553/550 on a refused path. */
  parse(arg: string | null | undefined): { segments: string[]; clientPath: string } {
    const raw = arg ?? '';
    if (Buffer.byteLength(raw) > MAX_PATH) throw this.refuse(553, 'File name too long', raw.slice(0, 64), 'overlong');
    const joined = raw.startsWith('/') ? raw : `/${this.cwd.join('/')}/${raw}`;
    const parsed = splitSegments(joined);
    if (!parsed.ok) {
      switch (parsed.refusal) {
        case 'escape':
          throw this.refuse(550, `${raw}: outside your web space`, raw, 'escape');
        case 'hidden':
          throw this.refuse(553, `${raw}: names starting with "." are not allowed`, raw, 'hidden');
        default:
          throw this.refuse(553, 'File name not allowed', raw, parsed.refusal);
      }
    }
    if (parsed.segments.some((s) => Buffer.byteLength(s) > MAX_NAME)) throw this.refuse(553, 'File name too long', raw.slice(0, 64), 'overlong');
    // SFTP carries any byte in a name; a line break in one would forge lines in FTP listings, an escape would drive terminals.
    if (parsed.segments.some((s) => CONTROL.test(s))) throw this.refuse(553, 'File name not allowed', raw.slice(0, 64), 'control character');
    return { segments: parsed.segments, clientPath: `/${parsed.segments.join('/')}` };
  }

  private refuse(code: number, message: string, clientPath: string, why: string): FtpError {
    this.log.info({ path: clientPath, why }, 'ftp path refused');
    return new FtpError(code, message);
  }

  /** Resolves an existing path (following symlinks) to its real host path. */
  private async existing(arg: string | null | undefined): Promise<{ real: string; clientPath: string; segments: string[] }> {
    const { segments, clientPath } = this.parse(arg);
    const r = resolveInJailSync(this.root, segments);
    if (!r.ok) {
      if (r.reason === 'escape') throw this.refuse(550, `${clientPath}: permission denied`, clientPath, 'symlink escape');
      throw new FtpError(550, `${clientPath}: no such file or folder`);
    }
    return { real: r.real, clientPath, segments };
  }

  /**
   * Resolves a name to create, replace, rename or delete: its parent must
   * exist inside the root; the name itself, if it is a symlink, must point
   * inside the root.
   */
  private async place(arg: string | null | undefined): Promise<Place> {
    const { segments, clientPath } = this.parse(arg);
    if (segments.length === 0) throw new FtpError(550, '/: permission denied');
    const parentR = resolveInJailSync(this.root, segments.slice(0, -1));
    if (!parentR.ok) {
      if (parentR.reason === 'escape') throw this.refuse(550, `${clientPath}: permission denied`, clientPath, 'symlink escape');
      throw new FtpError(550, `${clientPath}: no such folder`);
    }
    const name = segments[segments.length - 1]!;
    const full = path.join(parentR.real, name);
    let st: Stats | undefined;
    try {
      // In place, like the resolution above (see resolveInJailSync).
      st = lstatSync(full, { throwIfNoEntry: false });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') throw new FtpError(550, `${clientPath}: no such folder`);
      st = undefined;
    }
    if (st?.isSymbolicLink() && !(await this.linkInside(full))) {
      throw this.refuse(550, `${clientPath}: permission denied`, clientPath, 'symlink escape');
    }
    return { parent: parentR.real, name, full, segments, clientPath, lstat: st };
  }

  /** True when the symlink at `full` ends inside the root (a dangling link is judged by its text). */
  private async linkInside(full: string): Promise<boolean> {
    try {
      return isInside(this.root, await realpath(full));
    } catch {
      try {
        return isInside(this.root, path.resolve(path.dirname(full), await readlink(full)));
      } catch {
        // Not even readable as a link: not known to be inside, so refused.
        return false;
      }
    }
  }

  private static entry(st: Stats, name: string): Entry {
    return Object.assign(st, { name });
  }

  /** An existing file or folder, for FTP: a LIST/NLST argument's ls options ("-la") are dropped first. */
  async get(fileName: string | null | undefined): Promise<Entry> {
    return this.entryAt(listArg(fileName));
  }

  /** An existing file or folder, by its name as given (SFTP's: "-la" is a name there, not options). */
  async entryAt(fileName: string | null | undefined): Promise<Entry> {
    const { real, clientPath, segments } = await this.existing(fileName ?? '.');
    return JailFileSystem.entry(statSync(real), segments.length ? segments[segments.length - 1]! : clientPath);
  }

  /** Lists a folder: hidden names and symlinks that leave the root are left out. */
  async list(dir: string | null | undefined): Promise<Entry[]> {
    const { real, clientPath } = await this.existing(listArg(dir));
    let names: string[];
    try {
      names = await readdir(real);
    } catch {
      throw new FtpError(550, `${clientPath}: not a folder`);
    }
    const out: Entry[] = [];
    for (const name of names.sort()) {
      if (name.startsWith('.') && name !== '.well-known') continue;
      // Not reachable by a path (see parse), and a line break in a listing would forge a line.
      if (CONTROL.test(name)) continue;
      const full = path.join(real, name);
      try {
        const l = await lstat(full);
        if (l.isSymbolicLink()) {
          if (!(await this.linkInside(full))) continue;
          out.push(JailFileSystem.entry(await stat(full), name));
        } else out.push(JailFileSystem.entry(l, name));
      } catch {
        // Gone meanwhile, or a dangling link: nothing to show.
      }
    }
    return out;
  }

  async chdir(dir: string | null | undefined): Promise<string> {
    const { real, clientPath, segments } = await this.existing(dir ?? '/');
    if (!(await stat(real)).isDirectory()) throw new FtpError(550, `${clientPath}: not a folder`);
    this.cwd = segments;
    return this.currentDirectory();
  }

  /** An existing plain file: its real path (no links left in it) and its client path. */
  async plainFile(fileName: string | null | undefined): Promise<{ real: string; clientPath: string; size: number }> {
    const { real, clientPath } = await this.existing(fileName);
    const st = await stat(real);
    if (!st.isFile()) throw new FtpError(550, `${clientPath}: not a plain file`);
    return { real, clientPath, size: st.size };
  }

  async read(fileName: string | null | undefined, { start }: { start?: number } = {}): Promise<{ stream: ReadStream; clientPath: string }> {
    const { real, clientPath, size } = await this.plainFile(fileName);
    const st = { size };
    if (start !== undefined && start > st.size) throw new FtpError(554, `REST ${start} is beyond the end of ${clientPath}`);
    // `real` has no symlinks left in it (realpath), so this opens what was checked.
    const stream = createReadStream(real, { start, highWaterMark: 1024 * 1024 });
    return { stream, clientPath };
  }

  /** DELE and RMD: removes the name itself (a symlink inside the root, not its target). */
  async delete(arg: string | null | undefined): Promise<void> {
    const p = await this.place(arg);
    if (!p.lstat) throw new FtpError(550, `${p.clientPath}: no such file or folder`);
    if (p.lstat.isDirectory()) {
      try {
        await rmdir(p.full);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        throw new FtpError(550, code === 'ENOTEMPTY' || code === 'EEXIST' ? `${p.clientPath}: folder is not empty` : `${p.clientPath}: cannot be removed`);
      }
      return;
    }
    await unlink(p.full);
    if (p.lstat.isFile()) this.usage.used = Math.max(0, this.usage.used - p.lstat.size);
  }

  async mkdir(arg: string | null | undefined): Promise<string> {
    const p = await this.place(arg);
    if (p.lstat) throw new FtpError(550, `${p.clientPath}: already exists`);
    await mkdir(p.full, { mode: 0o755 });
    return p.clientPath;
  }

  /**
   * RNFR/RNTO and SFTP's RENAME. Links are never renamed, nor is a folder
   * holding one (at any depth). Paths are checked, then used: were a link
   * (or a folder holding one) renamed to where a real folder was a moment
   * before, a path checked through that folder would lead, when opened,
   * wherever the link points (a relative link's meaning also changes with
   * its depth). Tenants cannot make links, so with none renamed, what a path
   * was checked to be is what it is when used.
   */
  async rename(from: string, to: string): Promise<void> {
    const a = await this.place(from);
    if (!a.lstat) throw new FtpError(550, `${a.clientPath}: no such file or folder`);
    const b = await this.place(to);
    if (a.lstat.isDirectory() && isInside(a.full, b.full)) throw new FtpError(550, `${b.clientPath}: cannot move a folder into itself`);
    if (b.lstat?.isDirectory()) throw new FtpError(550, `${b.clientPath}: a folder of that name exists`);
    if (a.lstat.isSymbolicLink()) {
      throw this.refuse(550, `${a.clientPath}: links are renamed only by the hosting provider`, a.clientPath, 'moves a link');
    }
    if (a.lstat.isDirectory() && (await holdsLink(a.full))) {
      throw this.refuse(550, `${a.clientPath}: holds a link, so only the hosting provider may rename it`, a.clientPath, 'moves a link');
    }
    await rename(a.full, b.full);
    if (b.lstat?.isFile() && b.full !== a.full) this.usage.used = Math.max(0, this.usage.used - b.lstat.size);
  }

  /** MFMT: sets the modification time of an existing file or folder (its access time kept); returns its client path. */
  async setModified(arg: string | null | undefined, when: Date): Promise<string> {
    const { real, clientPath } = await this.existing(arg);
    await utimes(real, statSync(real).atime, when);
    return clientPath;
  }

  chmod(): never {
    throw new FtpError(502, 'Changing permissions is not allowed');
  }

  getUniqueName(fileName: string | null | undefined): string {
    const base = (fileName ?? '').split('/').pop() || 'upload';
    return `${base}.${randomBytes(4).toString('hex')}`;
  }

  /** ftp-srv's own STOR is replaced by the service; this is never the write path. */
  write(): never {
    throw new FtpError(502, 'Not available');
  }

  /**
   * Starts an upload: checks the target, creates the hidden temporary in the
   * same folder (same file system, so the final rename is atomic) holding
   * the kept prefix for APPE (whole old file) or REST (its first `start`
   * bytes), and charges that prefix to the quota.
   */
  async startUpload(arg: string | null | undefined, { append = false, start = 0, unique = false }: { append?: boolean; start?: number; unique?: boolean } = {}): Promise<PendingUpload> {
    let p = await this.place(arg);
    if (unique && p.lstat) p = await this.place(`${p.clientPath}.${randomBytes(4).toString('hex')}`);
    if (p.lstat?.isDirectory()) throw new FtpError(550, `${p.clientPath}: is a folder`);
    const oldSize = p.lstat?.isFile() ? p.lstat.size : 0;
    const prefix = append ? oldSize : start;
    if (prefix > oldSize) throw new FtpError(554, `REST ${start} is beyond the end of ${p.clientPath}`);
    if (!this.usage.fits(prefix, oldSize)) throw FtpError.of('QUOTA_EXCEEDED', 'Quota exceeded: no room for this upload');
    const temp = path.join(p.parent, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    if (prefix > 0) {
      // The target's real file: p.full may be a symlink inside the root.
      await copyFile(p.lstat!.isSymbolicLink() ? await realpath(p.full) : p.full, temp, constants.COPYFILE_EXCL);
      if (!append) await truncate(temp, prefix);
      this.usage.used += prefix;
    }
    return { clientPath: p.clientPath, target: p.full, temp, oldSize, prefix };
  }

  /**
   * True when `extra` more bytes of the upload `u` stay within the quota.
   * The file it will replace counts as freed, but only while it is there:
   * one deleted or renamed away meanwhile had its size given back already
   * and frees nothing at the commit, so crediting it again would let every
   * round of replace-and-delete grow past the quota. Looked at (one lstat)
   * only when the bytes do not fit without it.
   */
  uploadFits(u: PendingUpload, extra: number): boolean {
    if (this.usage.fits(extra)) return true;
    // In place, like commitUpload's look at the same name.
    const now = lstatSync(u.target, { throwIfNoEntry: false });
    return this.usage.fits(extra, now?.isFile() ? now.size : 0);
  }

  /**
   * Makes a finished upload visible: one rename over the target. An old
   * file it replaces is held open across the rename and closed after it, in
   * the thread pool: dropping a file's last link frees its blocks and cached
   * pages inside that call (~110 µs for a 4 KiB file here, ~40 ms for
   * 100 MiB), and this way the client's 226 does not wait for it.
   *
   * The old file is opened on this thread (a lookup, ~5 µs; see
   * resolveInJailSync). `inPlace` (a small upload: its temporary holds a
   * few pages) renames here too, ~45 µs, instead of a round trip through
   * the thread pool; a large temporary's rename also starts the write-back
   * of all its pages (ext4's auto_da_alloc), so it goes to the pool.
   */
  async commitUpload(u: PendingUpload, inPlace = false): Promise<void> {
    // What is replaced is what is there now, not what was there at the start: another upload of
    // the same name may have been committed meanwhile, and its size must not be freed twice.
    const now = lstatSync(u.target, { throwIfNoEntry: false });
    const replaced = now?.isFile() ? now.size : 0;
    // O_NONBLOCK: never waits on a FIFO; O_NOFOLLOW: a link is not the file being replaced.
    const old = replaced > 0 ? tryOpenSync(u.target, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK) : undefined;
    try {
      if (inPlace) renameSync(u.temp, u.target);
      else await rename(u.temp, u.target);
    } finally {
      if (old !== undefined) closeLater(old);
    }
    this.usage.used = Math.max(0, this.usage.used - replaced);
  }

  /** Drops an unfinished upload: the temporary goes, the old file stays as it was. */
  async abortUpload(u: PendingUpload, written: number): Promise<void> {
    // Already gone is what we want; anything else left behind is removed by the next quota rescan.
    await unlink(u.temp).catch(() => undefined);
    this.usage.used = Math.max(0, this.usage.used - u.prefix - written);
  }
}

/** True when a symlink lies anywhere below `dir` (links inside it are not followed). */
async function holdsLink(dir: string): Promise<boolean> {
  const pending = [dir];
  for (let d = pending.pop(); d !== undefined; d = pending.pop()) {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      // Gone or unreadable meanwhile: what cannot be listed holds nothing that could be moved with it.
      continue;
    }
    for (const e of entries) {
      if (e.isSymbolicLink()) return true;
      if (e.isDirectory()) pending.push(path.join(d, e.name));
    }
  }
  return false;
}

/**
 * LIST/NLST arguments may carry ls options ("-la", "-a dir"), which clients
 * send although RFC 959 has none; they are dropped, the rest is the path.
 */
function listArg(arg: string | null | undefined): string {
  if (!arg) return '.';
  const rest = arg.replace(/^(?:-[A-Za-z]+\s*)+/, '');
  return rest === '' ? '.' : rest;
}
