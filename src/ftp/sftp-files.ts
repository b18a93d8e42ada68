/**
 * The SFTP file operations (draft-ietf-secsh-filexfer-02, what OpenSSH,
 * FileZilla, WinSCP and lftp speak) on one logged-in session, all through
 * FTP's jailed file system: the same path rule, symlink rule, quota and
 * atomic replace (an upload goes to a hidden temporary, renamed over the
 * target at CLOSE), so a visitor sees the old file or the new one, never
 * half of it.
 */
import { constants as fsc } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import ssh2, { type Attributes, type SFTPWrapper } from 'ssh2';
import { errorRef } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { FtpContext } from './context.ts';
import { FtpError, type Entry, type JailFileSystem, type PendingUpload } from './jailfs.ts';
import { windowShut } from './ssh2-adapter.ts';

const { STATUS_CODE, OPEN_MODE } = ssh2.utils.sftp;

/** Who the session is, for the transfer log. */
export interface SftpUser {
  tenant: string;
  login: string;
  remote: string;
  log: Logger;
}

type Handle =
  | { kind: 'read'; fh: FileHandle; clientPath: string; bytes: number; t0: number }
  | { kind: 'write'; fh: FileHandle; up: PendingUpload; clientPath: string; size: number; written: number; t0: number; mtime?: Date; failed?: string }
  | { kind: 'dir'; clientPath: string; entries?: Entry[] };

/** Entries sent per READDIR reply. */
const DIR_BATCH = 100;

function attrsOf(st: { mode: number; size: number; atimeMs: number; mtimeMs: number }): Attributes {
  return { mode: st.mode, uid: 0, gid: 0, size: st.size, atime: Math.floor(st.atimeMs / 1000), mtime: Math.floor(st.mtimeMs / 1000) };
}

/** `-rw-r--r-- 1 owner group size Mon DD HH:MM name`, the long name OpenSSH's `ls -l` shows. */
function longname(e: Entry): string {
  const kind = e.isDirectory() ? 'd' : '-';
  const perms = [0o400, 0o200, 0o100, 0o40, 0o20, 0o10, 0o4, 0o2, 0o1].map((b, i) => (e.mode & b ? 'rwx'[i % 3] : '-')).join('');
  const d = e.mtime;
  const date = `${d.toLocaleString('en-US', { month: 'short', timeZone: 'UTC' })} ${String(d.getUTCDate()).padStart(2, ' ')} ${String(d.getUTCHours()).padStart(2, '0')}:${String(d.getUTCMinutes()).padStart(2, '0')}`;
  return `${kind}${perms} 1 owner group ${String(e.size).padStart(8, ' ')} ${date} ${e.name}`;
}

/** Serves one SFTP channel until it closes; unfinished uploads are dropped then. */
/** What one SSH connection may hold, shared by its channels. */
export interface SftpBudget {
  /** Files and folders open, over all the connection's channels. */
  handles: number;
  readonly maxHandles: number;
  /** Called when the client stops reading what it asked for (its window stays shut): the connection is ended. */
  overrun(why: string): void;
}

/** Answers sent while the client's window was shut, in a row, before the connection is ended (64 × 256 KiB at most held). */
const MAX_BACKLOG = 64;

export function serveSftp(ctx: FtpContext, sftp: SFTPWrapper, fs: JailFileSystem, user: SftpUser, budget: SftpBudget, touched: () => void): void {
  const handles = new Map<string, Handle>();
  let backlog = 0;
  let next = 0;
  const log = user.log;

  const newHandle = (h: Handle): Buffer | undefined => {
    if (budget.handles >= budget.maxHandles) return undefined;
    budget.handles++;
    const id = Buffer.alloc(4);
    id.writeUInt32BE(next++ >>> 0);
    handles.set(id.toString('hex'), h);
    return id;
  };

  /** Answers a failed request: an FtpError in SFTP's terms, anything else as our fault with a reference. */
  const fail = (reqid: number, err: unknown, op: string): void => {
    if (err instanceof FtpError) {
      const code = err.code === 550 ? (/no such/.test(err.message) ? STATUS_CODE.NO_SUCH_FILE : STATUS_CODE.PERMISSION_DENIED) : STATUS_CODE.FAILURE;
      sftp.status(reqid, code, err.message);
      return;
    }
    const ref = errorRef();
    log.error({ ref, op, err: (err as Error).message }, 'sftp operation failed');
    sftp.status(reqid, STATUS_CODE.FAILURE, `Local error, ref ${ref}`);
  };

  /** Runs one request: every request resets the idle clock and is answered exactly once. */
  const on = <A extends unknown[]>(event: string, fn: (reqid: number, ...a: A) => Promise<void> | void) => {
    sftp.on(event as 'OPEN', ((reqid: number, ...a: A) => {
      touched();
      Promise.resolve()
        .then(() => fn(reqid, ...a))
        .catch((err: unknown) => fail(reqid, err, event));
    }) as never);
  };

  on('REALPATH', (reqid, p: string) => {
    const { clientPath } = fs.parse(p === '' ? '.' : p);
    sftp.name(reqid, [{ filename: clientPath, longname: clientPath, attrs: {} as Attributes }]);
  });

  const statPath = async (reqid: number, p: string) => {
    const e = await fs.get(p);
    sftp.attrs(reqid, attrsOf(e));
  };
  on('STAT', statPath);
  // Links that lead out are refused by the jail; those inside are shown as what they point to.
  on('LSTAT', statPath);

  on('OPENDIR', async (reqid, p: string) => {
    const e = await fs.get(p);
    if (!e.isDirectory()) throw new FtpError(550, `${p}: not a folder`);
    const id = newHandle({ kind: 'dir', clientPath: fs.parse(p).clientPath });
    if (!id) return void sftp.status(reqid, STATUS_CODE.FAILURE, 'Too many open handles');
    sftp.handle(reqid, id);
  });

  on('READDIR', async (reqid, id: Buffer) => {
    const h = handles.get(id.toString('hex'));
    if (h?.kind !== 'dir') return void sftp.status(reqid, STATUS_CODE.FAILURE, 'Not a folder handle');
    h.entries ??= await fs.list(h.clientPath);
    if (h.entries.length === 0) return void sftp.status(reqid, STATUS_CODE.EOF);
    const batch = h.entries.splice(0, DIR_BATCH);
    sftp.name(reqid, batch.map((e) => ({ filename: e.name, longname: longname(e), attrs: attrsOf(e) })));
  });

  on('OPEN', async (reqid, p: string, flags: number) => {
    if (flags & OPEN_MODE.WRITE) {
      const clientPath = fs.parse(p).clientPath;
      if (!(flags & OPEN_MODE.CREAT)) {
        // Without CREAT the file must exist (draft-02 §6.3).
        await fs.plainFile(p);
      }
      if (flags & OPEN_MODE.EXCL) {
        const exists = await fs.get(p).then(
          () => true,
          () => false, // not there (or not visible): the exclusive create goes on and startUpload judges the name
        );
        if (exists) return void sftp.status(reqid, STATUS_CODE.FAILURE, `${clientPath}: already exists`);
      }
      // Without TRUNC the old content is kept (resume, or a write in the middle): copied into the temporary.
      const up = await fs.startUpload(p, { append: !(flags & OPEN_MODE.TRUNC) });
      let fh: FileHandle;
      try {
        // O_EXCL on a new temporary: never opened through a link planted at its name.
        fh = await open(up.temp, up.prefix > 0 ? fsc.O_RDWR : fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o644);
      } catch (err) {
        await fs.abortUpload(up, 0);
        throw err;
      }
      const id = newHandle({ kind: 'write', fh, up, clientPath: up.clientPath, size: up.prefix, written: 0, t0: Date.now() });
      if (!id) {
        await fh.close();
        await fs.abortUpload(up, 0);
        return void sftp.status(reqid, STATUS_CODE.FAILURE, 'Too many open handles');
      }
      return void sftp.handle(reqid, id);
    }
    const { real, clientPath } = await fs.plainFile(p);
    // `real` has no links left in it (the jail resolved it), so this opens what was checked.
    const fh = await open(real, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
    const id = newHandle({ kind: 'read', fh, clientPath, bytes: 0, t0: Date.now() });
    if (!id) {
      await fh.close();
      return void sftp.status(reqid, STATUS_CODE.FAILURE, 'Too many open handles');
    }
    sftp.handle(reqid, id);
  });

  on('READ', async (reqid, id: Buffer, offset: number, length: number) => {
    const h = handles.get(id.toString('hex'));
    if (h?.kind !== 'read') return void sftp.status(reqid, STATUS_CODE.FAILURE, 'Not a file open for reading');
    const buf = Buffer.allocUnsafe(Math.min(length, 256 * 1024));
    const { bytesRead } = await h.fh.read(buf, 0, buf.length, offset);
    if (bytesRead === 0) return void sftp.status(reqid, STATUS_CODE.EOF);
    h.bytes += bytesRead;
    // false: held in memory because the client's window is shut. A client that goes on asking
    // without reading would have us hold every answer: past MAX_BACKLOG in a row, it is cut off.
    if (!windowShut(sftp)) backlog = 0;
    else if (++backlog > MAX_BACKLOG) return budget.overrun('reads ahead without taking the data');
    sftp.data(reqid, buf.subarray(0, bytesRead));
  });

  on('WRITE', async (reqid, id: Buffer, offset: number, data: Buffer) => {
    const h = handles.get(id.toString('hex'));
    if (h?.kind !== 'write') return void sftp.status(reqid, STATUS_CODE.FAILURE, 'Not a file open for writing');
    if (h.failed) return void sftp.status(reqid, STATUS_CODE.FAILURE, h.failed);
    const growth = Math.max(0, offset + data.length - h.size);
    if (!fs.usage.fits(growth, h.up.oldSize)) {
      h.failed = `Quota exceeded: ${h.clientPath} not stored (quota ${fs.usage.quota} bytes)`;
      log.info({ path: h.clientPath, quota: fs.usage.quota }, 'sftp upload cut off: quota exceeded');
      return void sftp.status(reqid, STATUS_CODE.FAILURE, h.failed);
    }
    fs.usage.used += growth;
    h.size += growth;
    h.written += growth;
    await h.fh.write(data, 0, data.length, offset);
    sftp.status(reqid, STATUS_CODE.OK);
  });

  const setTimes = async (reqid: number, target: string | Handle, attrs: Attributes) => {
    // Modes are the suite's to set (as FTP's SITE CHMOD): only the modification time is kept.
    if (attrs.mtime !== undefined) {
      const when = new Date(Number(attrs.mtime) * 1000);
      if (typeof target === 'string') {
        await fs.setModified(target, when);
        ctx.siteChanges?.changed(user.tenant);
      } else if (target.kind === 'write') target.mtime = when;
    }
    sftp.status(reqid, STATUS_CODE.OK);
  };
  on('SETSTAT', (reqid, p: string, attrs: Attributes) => setTimes(reqid, p, attrs));
  on('FSETSTAT', async (reqid, id: Buffer, attrs: Attributes) => {
    const h = handles.get(id.toString('hex'));
    if (!h) return void sftp.status(reqid, STATUS_CODE.FAILURE, 'No such handle');
    await setTimes(reqid, h, attrs);
  });
  on('FSTAT', async (reqid, id: Buffer) => {
    const h = handles.get(id.toString('hex'));
    if (!h || h.kind === 'dir') return void sftp.status(reqid, STATUS_CODE.FAILURE, 'Not a file handle');
    sftp.attrs(reqid, attrsOf(await h.fh.stat()));
  });

  on('CLOSE', async (reqid, id: Buffer) => {
    const key = id.toString('hex');
    const h = handles.get(key);
    if (!h) return void sftp.status(reqid, STATUS_CODE.FAILURE, 'No such handle');
    handles.delete(key);
    budget.handles--;
    if (h.kind === 'dir') return void sftp.status(reqid, STATUS_CODE.OK);
    if (h.kind === 'read') {
      await h.fh.close();
      ctx.transferLog(user, 'SFTP-GET', h.clientPath, h.bytes, h.t0, 'ok');
      return void sftp.status(reqid, STATUS_CODE.OK);
    }
    const failed = await finishUpload(h);
    sftp.status(reqid, failed ? STATUS_CODE.FAILURE : STATUS_CODE.OK, failed ?? undefined);
  });

  /** Commits an upload (or drops it when it failed or the session ended); returns why it failed, or null. */
  async function finishUpload(h: Extract<Handle, { kind: 'write' }>, cut?: string): Promise<string | null> {
    let why = cut ?? h.failed ?? null;
    try {
      await h.fh.close();
    } catch (err) {
      why ??= `Local error writing ${h.clientPath}`;
      log.error({ path: h.clientPath, err: (err as Error).message }, 'sftp upload failed at close');
    }
    if (why === null) {
      try {
        await fs.commitUpload(h.up);
        if (h.mtime) await fs.setModified(h.clientPath, h.mtime);
        ctx.siteChanges?.changed(user.tenant);
        ctx.transferLog(user, 'SFTP-PUT', h.clientPath, h.written, h.t0, 'ok');
        return null;
      } catch (err) {
        why = `Local error storing ${h.clientPath}`;
        log.error({ path: h.clientPath, err: (err as Error).message }, 'sftp upload failed at commit');
      }
    }
    await fs.abortUpload(h.up, h.written);
    ctx.transferLog(user, 'SFTP-PUT', h.clientPath, h.written, h.t0, h.failed ? 'quota' : cut ? 'aborted' : 'failed');
    return why;
  }

  on('REMOVE', async (reqid, p: string) => {
    if ((await fs.get(p)).isDirectory()) throw new FtpError(550, `${p}: is a folder (remove it with rmdir)`);
    await fs.delete(p);
    ctx.siteChanges?.changed(user.tenant);
    sftp.status(reqid, STATUS_CODE.OK);
  });
  on('RMDIR', async (reqid, p: string) => {
    if (!(await fs.get(p)).isDirectory()) throw new FtpError(550, `${p}: not a folder`);
    await fs.delete(p);
    ctx.siteChanges?.changed(user.tenant);
    sftp.status(reqid, STATUS_CODE.OK);
  });
  on('MKDIR', async (reqid, p: string) => {
    await fs.mkdir(p);
    ctx.siteChanges?.changed(user.tenant);
    sftp.status(reqid, STATUS_CODE.OK);
  });

  // RENAME replaces an existing file (never a folder), as posix-rename@openssh.com does: one
  // rename(2), so a page renamed over a served one is never missing. Draft-02 §6.5 lets a server
  // refuse instead; ssh2 advertises no extensions, so OpenSSH's client would have no atomic way.
  const rename = async (reqid: number, from: string, to: string) => {
    await fs.rename(from, to);
    ctx.siteChanges?.changed(user.tenant);
    sftp.status(reqid, STATUS_CODE.OK);
  };
  on('RENAME', (reqid, from: string, to: string) => rename(reqid, from, to));
  on('EXTENDED', (reqid, name: string, data: Buffer) => {
    if (name === 'posix-rename@openssh.com') {
      const from = readString(data, 0);
      const to = readString(data, from.end);
      return rename(reqid, from.value, to.value);
    }
    sftp.status(reqid, STATUS_CODE.OP_UNSUPPORTED, `${name} is not supported`);
  });

  // Links are the operator's to make: a client could otherwise point one anywhere.
  on('SYMLINK', (reqid) => {
    log.info({ why: 'symlink' }, 'sftp request refused');
    sftp.status(reqid, STATUS_CODE.PERMISSION_DENIED, 'Symbolic links are not allowed');
  });
  on('READLINK', (reqid) => sftp.status(reqid, STATUS_CODE.OP_UNSUPPORTED, 'Symbolic links are not shown'));

  // The client's EOF ends the session: answered with ours, or OpenSSH's client waits for it forever.
  sftp.on('end', () => sftp.end());
  sftp.on('close', () => {
    for (const h of handles.values()) {
      if (h.kind === 'write') void finishUpload(h, 'session closed before the upload was closed');
      else if (h.kind === 'read') {
        // Only read from: a failing close loses nothing.
        void h.fh.close().catch(() => undefined);
      }
    }
    budget.handles -= handles.size;
    handles.clear();
  });
}

/** An SSH string (uint32 length, bytes) at `at`. */
function readString(buf: Buffer | undefined, at: number): { value: string; end: number } {
  if (!buf || at + 4 > buf.length) throw new FtpError(501, 'Malformed request');
  const len = buf.readUInt32BE(at);
  if (at + 4 + len > buf.length) throw new FtpError(501, 'Malformed request');
  return { value: buf.toString('utf8', at + 4, at + 4 + len), end: at + 4 + len };
}
