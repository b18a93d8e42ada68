import { constants as fsc } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import ssh2, { type Attributes } from 'ssh2';
import type { Handle, SftpSession } from './sftp-session.ts';

const { STATUS_CODE, OPEN_MODE } = ssh2.utils.sftp;

/**
 * Most bytes one READ answers: OpenSSH's sftp-server's SFTP_MAX_READ_LENGTH,
 * so the whole answer fits the 256 KiB message its client accepts (a full
 * 256 KiB of data, with the packet's header, did not: "Received message too
 * long"). A shorter answer is what a client expects near the end of a file
 * anyway: it asks again from where the data stopped.
 */
const MAX_READ = 256 * 1024 - 1024;

/**
 * Files opened, read, written and closed: OPEN, READ, WRITE, SETSTAT,
 * FSETSTAT, CLOSE. An upload is committed at CLOSE; `finishUpload` drops
 * the ones still open when the session ends.
 */
export function serveTransfers({ ctx, sftp, fs, user, log, budget, handles, newHandle, on }: SftpSession) {
  on('OPEN', async (reqid, p: string, flags: number) => {
    if (flags & OPEN_MODE.WRITE) {
      const clientPath = fs.parse(p).clientPath;
      if (!(flags & OPEN_MODE.CREAT)) {
        // Without CREAT the file must exist (draft-02 §6.3).
        await fs.plainFile(p);
      }
      if (flags & OPEN_MODE.EXCL) {
        const exists = await fs.entryAt(p).then(
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
    const buf = Buffer.allocUnsafe(Math.min(length, MAX_READ));
    const { bytesRead } = await h.fh.read(buf, 0, buf.length, offset);
    if (bytesRead === 0) return void sftp.status(reqid, STATUS_CODE.EOF);
    h.bytes += bytesRead;
    // A client that asks on without reading is cut off before its next request (sftp-files.ts).
    sftp.data(reqid, buf.subarray(0, bytesRead));
  });

  on('WRITE', async (reqid, id: Buffer, offset: number, data: Buffer) => {
    const h = handles.get(id.toString('hex'));
    if (h?.kind !== 'write') return void sftp.status(reqid, STATUS_CODE.FAILURE, 'Not a file open for writing');
    if (h.failed) return void sftp.status(reqid, STATUS_CODE.FAILURE, h.failed);
    const growth = Math.max(0, offset + data.length - h.size);
    if (!fs.uploadFits(h.up, growth)) {
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
    if (attrs.size !== undefined) {
      // A size is kept only for an upload under way (its temporary, within the quota); an existing file is replaced by uploading it again.
      if (typeof target === 'string' || target.kind !== 'write') {
        log.info({ path: typeof target === 'string' ? target : target.clientPath, size: attrs.size }, 'sftp size change refused: only an upload under way may be resized');
        return void sftp.status(reqid, STATUS_CODE.OP_UNSUPPORTED, 'Changing the size of a stored file is not supported; upload it again');
      }
      const size = Number(attrs.size);
      const growth = Math.max(0, size - target.size);
      if (!Number.isSafeInteger(size) || size < 0 || !fs.uploadFits(target.up, growth)) {
        log.info({ path: target.clientPath, size, quota: fs.usage.quota }, 'sftp size change refused: past the quota');
        return void sftp.status(reqid, STATUS_CODE.FAILURE, `Quota exceeded: ${target.clientPath} cannot grow to ${attrs.size} bytes (quota ${fs.usage.quota} bytes)`);
      }
      await target.fh.truncate(size);
      fs.usage.used += size - target.size;
      target.written += size - target.size;
      target.size = size;
    }
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

  return { finishUpload };
}
