/** One command line of a session: answered here, by one of the service's own handlers, or by ftp-srv's. */
import { refusal } from '../core/errors.ts';
import type { Command, FtpContext, Session } from './context.ts';
import { feat, fileCommand, mlst } from './commands.ts';
import { active, passive } from './datachannel.ts';
import { MLST_FACTS } from './facts.ts';
import { checkedTransfer, mlsd, retrieve } from './transfers.ts';
import { store } from './upload.ts';

/** Commands this service answers itself once a session is logged in. */
const OWN = new Map<string, (ctx: FtpContext, s: Session, cmd: Command) => Promise<void>>([
  ['PORT', active],
  ['EPRT', active],
  ['PASV', passive],
  ['EPSV', passive],
  ['STOR', store],
  ['APPE', store],
  ['STOU', store],
  ['MLSD', mlsd],
  ['MLST', mlst],
  ['LIST', checkedTransfer],
  ['NLST', checkedTransfer],
  ['RETR', retrieve],
  ...['CWD', 'XCWD', 'CDUP', 'XCUP', 'MKD', 'XMKD', 'RMD', 'XRMD', 'DELE', 'RNFR', 'RNTO', 'SIZE', 'MDTM', 'MFMT'].map((d) => [d, fileCommand] as const),
]);

export async function handleLine(ctx: FtpContext, s: Session, line: string): Promise<void> {
  const conn = s.conn;
  // Telnet IP/Synch bytes some clients send before ABOR (RFC 959 §4.1.3) are not part of the command.
  const clean = line.replace(/^[\u0000-\u001f\u007f-\u00ff\ufffd]+/, '');
  if (clean === '') return;
  const cmd = conn.parse(clean);
  switch (cmd.directive) {
    case 'USER':
      if (ctx.cfg.tls?.required && !conn.secure) {
        s.log.info({ why: 'tls required' }, 'ftp login refused');
        const r = refusal('POLICY_DENIED', 'ftp', 'TLS required: send AUTH TLS before logging in');
        await conn.reply(r.code, r.text);
        return;
      }
      conn.forgetUser();
      await conn.delegate(cmd);
      return;
    case 'PASS':
      await conn.delegate(cmd);
      // ftp-srv keeps a failed user name and would refuse a new USER; RFC 959 lets a client try again.
      conn.forgetUser();
      return;
    case 'ABOR':
      // No transfer running (one running is aborted as the line arrives, see attach()). ftp-srv's
      // handler would wait for a data connection that may never come.
      conn.endData();
      await conn.reply(225, 'No transfer to abort');
      return;
    case 'SITE': {
      const chmod = /^CHMOD\s+[0-7]{3,4}\s+(\S.*)$/i.exec(cmd.arg ?? '');
      if (chmod) {
        // Upload tools (lftp mirror -R, FileZilla) send it after each file and fail the run on an
        // error. Modes are the suite's to set: the file must exist in the jail, and nothing changes.
        if (!conn.authenticated || !s.fs) {
          await conn.reply(530, 'Please log in with USER and PASS first');
          return;
        }
        try {
          const st = await s.fs.get(chmod[1]);
          await conn.reply(200, `SITE CHMOD: ${st.name} keeps the modes the host sets; nothing changed`);
        } catch (err) {
          await ctx.replyError(s, err, 'SITE CHMOD');
        }
        return;
      }
      s.log.info({ why: 'SITE' }, 'ftp command refused');
      await conn.reply(502, 'SITE commands are not available');
      return;
    }
    case 'FEAT':
      await feat(ctx, s);
      return;
    case 'OPTS': {
      if (!(cmd.arg ?? '').trim()) {
        // RFC 2389 §4: OPTS names a command; ftp-srv's own handler throws on a missing argument.
        s.log.info({ why: 'OPTS without an option' }, 'ftp command refused');
        await conn.reply(501, 'OPTS needs an option: UTF8 ON or MLST facts');
        return;
      }
      // RFC 2640 §3.1 (and what clients send before USER): UTF-8 is the only encoding spoken.
      const utf8 = /^UTF-?8(?:\s+(ON|OFF))?\s*$/i.exec(cmd.arg ?? '');
      if (utf8) {
        if ((utf8[1] ?? 'ON').toUpperCase() === 'ON') await conn.reply(200, 'UTF-8 is always on');
        else await conn.reply(504, 'UTF-8 cannot be turned off');
        return;
      }
      if (/^MLST\b/i.test(cmd.arg ?? '')) {
        const wanted = (cmd.arg ?? '').slice(4).trim().toLowerCase().split(';').filter(Boolean);
        s.mlstFacts = new Set(MLST_FACTS.filter((f) => wanted.includes(f)));
        await conn.reply(200, `MLST OPTS ${[...s.mlstFacts].map((f) => `${f === 'unix.mode' ? 'UNIX.mode' : f};`).join('')}`);
        return;
      }
      await conn.delegate(cmd);
      return;
    }
    default: {
      const own = OWN.get(cmd.directive);
      if (own) {
        if (conn.authenticated && s.fs) await own(ctx, s, cmd);
        else await conn.reply(530, 'Please log in with USER and PASS first');
        return;
      }
      // ftp-srv itself answers 530 to commands that need a login.
      await conn.delegate(cmd);
    }
  }
}
