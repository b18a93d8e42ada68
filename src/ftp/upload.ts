/** Uploads (STOR, APPE, STOU): atomic, within the tenant's quota, into the jail. */
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { replyCode } from '../core/errors.ts';
import type { Command, FtpContext, Session } from './context.ts';
import { FtpError } from './jailfs.ts';
import { DiskError, receive, SMALL_UPLOAD } from './receive.ts';
import { dataConnection } from './transfers.ts';

/** After a quota cut, at most this much of the rest of an upload is read (and dropped) before the connection is reset. */
const DISCARD_MAX = 64 * 1024 * 1024;

/** STOR, APPE, STOU: into a hidden temporary, renamed over the target when complete (atomic for HTTP readers). */
export async function store(ctx: FtpContext, s: Session, cmd: Command): Promise<void> {
  const conn = s.conn;
  const fs = s.fs!;
  const start = conn.takeRest();
  const t0 = Date.now();
  const unique = cmd.directive === 'STOU';
  // A bare STOU names no file: one is made up in the working folder (RFC 1123 §4.1.2.9).
  const arg = unique && !cmd.arg?.trim() ? fs.getUniqueName('upload') : cmd.arg;
  let up;
  try {
    up = await fs.startUpload(arg, { append: cmd.directive === 'APPE', start, unique });
  } catch (err) {
    conn.endData();
    await ctx.replyError(s, err, cmd.directive);
    return;
  }
  // 'wx' (O_EXCL): never opens through a link planted at the temporary's name. Opened in
  // place, before the 150 (see resolveInJailSync): a thread-pool round trip cost the loop
  // more than the open itself, and a failure is answered before any data moves.
  let fd: number;
  try {
    fd = openSync(up.temp, up.prefix > 0 ? 'a' : 'wx', 0o644);
  } catch (err) {
    conn.endData();
    await fs.abortUpload(up, 0);
    await ctx.replyError(s, err, cmd.directive);
    return;
  }
  // RFC 1123 §4.1.2.9: the reply to STOU names the file ("150 FILE: name"), relative to the working folder when in it.
  const inCwd = path.posix.dirname(up.clientPath) === fs.currentDirectory();
  const text = unique ? `FILE: ${inCwd ? path.posix.basename(up.clientPath) : up.clientPath}` : `Ready to receive ${up.clientPath}`;
  const socket = await dataConnection(s, text, async () => {
    closeSync(fd);
    await fs.abortUpload(up, 0);
  });
  if (!socket) return;
  let written = 0;
  let quotaHit = false;
  const usage = fs.usage;
  let discarded = 0;
  let cut: FtpError | undefined;
  const accept = (chunk: Buffer): boolean => {
    if (quotaHit || !fs.uploadFits(up, chunk.length)) {
      // Over quota: nothing more is written; the rest is read and dropped so the client
      // finishes sending and reads a clean 552 (a reset data connection makes clients
      // report a network error instead). Past DISCARD_MAX the connection is cut.
      quotaHit = true;
      discarded += chunk.length;
      if (discarded > DISCARD_MAX && !cut) {
        cut = FtpError.of('QUOTA_EXCEEDED', 'quota');
        socket.destroy(cut);
      }
      return false;
    }
    usage.used += chunk.length;
    written += chunk.length;
    return true;
  };
  let diskError: Error | undefined;
  try {
    let transferError: unknown;
    try {
      await receive(socket, fd, accept);
    } catch (err) {
      if (err instanceof DiskError) diskError = err.cause;
      else transferError = err;
      socket.destroy();
    }
    try {
      closeSync(fd); // a file just written: no flush is due at its close, so in place (see resolveInJailSync)
    } catch (err) {
      diskError ??= err as Error; // a late write error (NFS, quota of the file system) shows at close
    }
    if (transferError === undefined && !diskError && !quotaHit) {
      try {
        await fs.commitUpload(up, up.prefix + written < SMALL_UPLOAD);
        ctx.siteChanges?.changed(s.tenant!);
        const replied = conn.reply(226, `Transfer complete: ${up.clientPath}`); // the logs need not delay it
        ctx.transferLog(s, cmd.directive, up.clientPath, written, t0, 'ok');
        s.log.debug({ path: up.clientPath, bytes: written }, 'ftp upload');
        await replied;
        return;
      } catch (err) {
        diskError = err as Error;
      }
    }
    await fs.abortUpload(up, written);
    if (quotaHit) {
      ctx.transferLog(s, cmd.directive, up.clientPath, written, t0, 'quota');
      s.log.info({ path: up.clientPath, bytes: written, quota: usage.quota }, 'ftp upload cut off: quota exceeded');
      await conn.reply(replyCode('QUOTA_EXCEEDED', 'ftp'), `Quota exceeded: ${up.clientPath} not stored (quota ${usage.quota} bytes)`);
    } else if (diskError) {
      ctx.transferLog(s, cmd.directive, up.clientPath, written, t0, 'failed');
      await ctx.replyError(s, diskError, cmd.directive);
    } else {
      ctx.transferLog(s, cmd.directive, up.clientPath, written, t0, 'aborted');
      s.log.info({ path: up.clientPath, bytes: written, err: (transferError as Error).message }, 'ftp upload aborted by the client or the network; nothing stored');
      await conn.reply(426, `Connection closed; transfer aborted, ${up.clientPath} not stored`);
    }
  } finally {
    conn.endData();
  }
}
