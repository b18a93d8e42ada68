/** Commands answered without a data connection: path commands (CWD, MKD, DELE, RNFR/RNTO, SIZE, MDTM, MFMT), MLST, FEAT. */
import type { Command, FtpContext, Session } from './context.ts';
import { factLine, MLST_FACTS, timeVal } from './facts.ts';
import { FtpError } from './jailfs.ts';

/** Path commands without a data connection, answered with the jail's own reply codes (ftp-srv's use fixed ones). */
export async function fileCommand(ctx: FtpContext, s: Session, cmd: Command): Promise<void> {
  const conn = s.conn;
  const fs = s.fs!;
  const quoted = (p: string) => `"${p.replace(/"/g, '""')}"`; // RFC 959 §7: a quote in a 257 path is doubled
  try {
    switch (cmd.directive) {
      case 'CWD':
      case 'XCWD':
        await conn.reply(250, `Folder is now ${quoted(await fs.chdir(cmd.arg ?? '/'))}`);
        break;
      case 'CDUP':
      case 'XCUP':
        await conn.reply(250, `Folder is now ${quoted(await fs.chdir('..'))}`);
        break;
      case 'MKD':
      case 'XMKD': {
        const made = await fs.mkdir(cmd.arg);
        ctx.siteChanges?.changed(s.tenant!); // a folder can turn a 404 into a listing or a redirect
        await conn.reply(257, `${quoted(made)} created`);
        break;
      }
      case 'RMD':
      case 'XRMD':
      case 'DELE': {
        const st = await fs.get(cmd.arg ?? '');
        if (cmd.directive === 'DELE' && st.isDirectory()) throw new FtpError(550, `${fs.parse(cmd.arg).clientPath}: is a folder; use RMD`);
        if (cmd.directive !== 'DELE' && !st.isDirectory()) throw new FtpError(550, `${fs.parse(cmd.arg).clientPath}: not a folder; use DELE`);
        await fs.delete(cmd.arg);
        ctx.siteChanges?.changed(s.tenant!);
        await conn.reply(250, `${fs.parse(cmd.arg).clientPath} removed`);
        break;
      }
      case 'RNFR': {
        await fs.get(cmd.arg ?? '');
        s.renameFrom = fs.parse(cmd.arg).clientPath;
        await conn.reply(350, 'Ready for RNTO');
        break;
      }
      case 'RNTO': {
        const from = s.renameFrom;
        s.renameFrom = undefined;
        if (!from) throw new FtpError(503, 'RNFR first');
        await fs.rename(from, cmd.arg ?? '');
        ctx.siteChanges?.changed(s.tenant!);
        await conn.reply(250, `Renamed to ${fs.parse(cmd.arg).clientPath}`);
        break;
      }
      case 'SIZE': {
        const st = await fs.get(cmd.arg ?? '');
        if (!st.isFile()) throw new FtpError(550, `${fs.parse(cmd.arg).clientPath}: not a plain file`);
        await conn.reply(213, String(st.size));
        break;
      }
      case 'MDTM': {
        const st = await fs.get(cmd.arg ?? '');
        await conn.reply(213, timeVal(st.mtime));
        break;
      }
      case 'MFMT': {
        // draft-somers-ftp-mfxx §3: MFMT YYYYMMDDHHMMSS[.sss] path, in UTC; answered with the time set.
        const m = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:\.\d{1,3})?\s+(\S.*)$/.exec(cmd.arg ?? '');
        const [y, mo, d, h, mi, sec] = (m?.slice(1, 7) ?? []).map(Number) as number[];
        const when = m ? new Date(Date.UTC(y!, mo! - 1, d, h, mi, sec)) : undefined;
        if (!m || !when || when.getUTCMonth() !== mo! - 1 || when.getUTCDate() !== d || when.getUTCHours() !== h || when.getUTCMinutes() !== mi || when.getUTCSeconds() !== sec) {
          throw new FtpError(501, 'Syntax: MFMT YYYYMMDDHHMMSS path (UTC)');
        }
        const clientPath = await fs.setModified(m[7], when);
        ctx.siteChanges?.changed(s.tenant!); // Last-Modified and the ETag follow the file time
        await conn.reply(213, `Modify=${timeVal(when)}; ${clientPath}`);
        break;
      }
    }
  } catch (err) {
    if (cmd.directive === 'RNFR') s.renameFrom = undefined;
    await ctx.replyError(s, err, cmd.directive);
  }
}

export async function mlst(ctx: FtpContext, s: Session, cmd: Command): Promise<void> {
  try {
    const fs = s.fs!;
    const { clientPath } = fs.parse(cmd.arg ?? '.');
    const st = await fs.get(cmd.arg ?? '.');
    await s.conn.reply(250, `Listing ${clientPath}`, [{ raw: true, message: ` ${factLine(st, s.mlstFacts)} ${clientPath}` }], 'End');
  } catch (err) {
    await ctx.replyError(s, err, 'MLST');
  }
}

export function feat(ctx: FtpContext, s: Session): Promise<unknown> {
  const lines = [
    ...(ctx.tls ? ['AUTH TLS', 'PBSZ', 'PROT'] : []),
    'EPRT',
    'EPSV',
    'MDTM',
    'MFMT',
    `MLST ${MLST_FACTS.map((f) => `${f === 'unix.mode' ? 'UNIX.mode' : f}${s.mlstFacts.has(f) ? '*' : ''};`).join('')}`,
    'PASV',
    'REST STREAM',
    'SIZE',
    'TVFS',
    'UTF8',
  ];
  return s.conn.reply(211, 'Extensions supported:', lines.map((l) => ({ raw: true as const, message: ` ${l}` })), 'End');
}
