import ssh2 from 'ssh2';
import { FtpError } from './jailfs.ts';
import type { SftpSession } from './sftp-session.ts';

const { STATUS_CODE } = ssh2.utils.sftp;

/** Names changed: REMOVE, RMDIR, MKDIR, RENAME (and posix-rename@openssh.com); links refused. */
export function serveNameChanges({ ctx, sftp, fs, user, log, on }: SftpSession): void {
  on('REMOVE', async (reqid, p: string) => {
    if ((await fs.entryAt(p)).isDirectory()) throw new FtpError(550, `${p}: is a folder (remove it with rmdir)`);
    await fs.delete(p);
    ctx.siteChanges?.changed(user.tenant);
    sftp.status(reqid, STATUS_CODE.OK);
  });
  on('RMDIR', async (reqid, p: string) => {
    if (!(await fs.entryAt(p)).isDirectory()) throw new FtpError(550, `${p}: not a folder`);
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
}

/** An SSH string (uint32 length, bytes) at `at`. */
function readString(buf: Buffer | undefined, at: number): { value: string; end: number } {
  if (!buf || at + 4 > buf.length) throw new FtpError(501, 'Malformed request');
  const len = buf.readUInt32BE(at);
  if (at + 4 + len > buf.length) throw new FtpError(501, 'Malformed request');
  return { value: buf.toString('utf8', at + 4, at + 4 + len), end: at + 4 + len };
}
