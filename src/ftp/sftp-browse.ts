import ssh2, { type Attributes } from 'ssh2';
import { FtpError, type Entry } from './jailfs.ts';
import type { SftpSession } from './sftp-session.ts';

const { STATUS_CODE } = ssh2.utils.sftp;

/** Entries sent per READDIR reply. */
const DIR_BATCH = 100;

export function attrsOf(st: { mode: number; size: number; atimeMs: number; mtimeMs: number }): Attributes {
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

/** Paths, attributes and folder listings: REALPATH, STAT, LSTAT, FSTAT, OPENDIR, READDIR. */
export function serveBrowsing({ sftp, fs, handles, newHandle, on }: SftpSession): void {
  on('REALPATH', (reqid, p: string) => {
    const { clientPath } = fs.parse(p === '' ? '.' : p);
    sftp.name(reqid, [{ filename: clientPath, longname: clientPath, attrs: {} as Attributes }]);
  });

  const statPath = async (reqid: number, p: string) => {
    const e = await fs.entryAt(p);
    sftp.attrs(reqid, attrsOf(e));
  };
  on('STAT', statPath);
  // Links that lead out are refused by the jail; those inside are shown as what they point to.
  on('LSTAT', statPath);

  on('OPENDIR', async (reqid, p: string) => {
    const e = await fs.entryAt(p);
    if (!e.isDirectory()) throw new FtpError(550, `${p}: not a folder`);
    const id = newHandle({ kind: 'dir', clientPath: fs.parse(p).clientPath });
    if (!id) return void sftp.status(reqid, STATUS_CODE.FAILURE, 'Too many open handles');
    sftp.handle(reqid, id);
  });

  on('READDIR', async (reqid, id: Buffer) => {
    const h = handles.get(id.toString('hex'));
    if (h?.kind !== 'dir') return void sftp.status(reqid, STATUS_CODE.FAILURE, 'Not a folder handle');
    h.entries ??= fs.list(h.clientPath);
    const entries = await h.entries;
    if (entries.length === 0) return void sftp.status(reqid, STATUS_CODE.EOF);
    const batch = entries.splice(0, DIR_BATCH);
    sftp.name(reqid, batch.map((e) => ({ filename: e.name, longname: longname(e), attrs: attrsOf(e) })));
  });

  on('FSTAT', async (reqid, id: Buffer) => {
    const h = handles.get(id.toString('hex'));
    if (!h || h.kind === 'dir') return void sftp.status(reqid, STATUS_CODE.FAILURE, 'Not a file handle');
    sftp.attrs(reqid, attrsOf(await h.fh.stat()));
  });
}
