/** Downloads and listings (RETR, MLSD, LIST, NLST), and the data connection every transfer opens with its 150. */
import type { Socket } from 'node:net';
import { pipeline } from 'node:stream/promises';
import type { Command, FtpContext, Session } from './context.ts';
import { factLine } from './facts.ts';
import { FtpError } from './jailfs.ts';

/**
 * The data connection of a transfer command, with its 150. Over TLS the
 * data connection's handshake completes only once the client starts it,
 * and clients such as lftp start it after the 150 (as vsftpd answers):
 * then the 150 comes first. Without a connection: `cleanup`, 425, and
 * undefined.
 */
export async function dataConnection(s: Session, text: string, cleanup?: () => unknown): Promise<Socket | undefined> {
  const conn = s.conn;
  const early = conn.secure;
  if (early) await conn.reply(150, text);
  let socket: Socket;
  try {
    socket = await conn.waitForData();
  } catch {
    await cleanup?.();
    conn.endData();
    await conn.reply(425, 'No data connection: send PASV, EPSV, PORT or EPRT first');
    return undefined;
  }
  if (!early) await conn.reply(150, text);
  return socket;
}

export async function mlsd(ctx: FtpContext, s: Session, cmd: Command): Promise<void> {
  const conn = s.conn;
  let lines: string;
  try {
    const fs = s.fs!;
    const dir = await fs.get(cmd.arg ?? '.');
    if (!dir.isDirectory()) throw new FtpError(501, 'MLSD needs a folder; use MLST for a file');
    const entries = await fs.list(cmd.arg ?? '.');
    lines = `${factLine(dir, s.mlstFacts, 'cdir')} .\r\n` + entries.map((e) => `${factLine(e, s.mlstFacts)} ${e.name}\r\n`).join('');
  } catch (err) {
    conn.endData();
    await ctx.replyError(s, err, 'MLSD');
    return;
  }
  const socket = await dataConnection(s, 'Listing follows');
  if (!socket) return;
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.resume();
      socket.end(lines, () => resolve());
    });
    await conn.reply(226, 'Listing complete');
  } catch {
    await conn.reply(426, 'Connection closed; listing aborted');
  } finally {
    conn.endData();
  }
}

/**
 * LIST, NLST: the path is checked before ftp-srv waits for the data
 * connection, so a refused path gets 550 (ftp-srv would answer 451 or 551)
 * and no data connection is left waiting.
 */
export async function checkedTransfer(ctx: FtpContext, s: Session, cmd: Command): Promise<void> {
  try {
    await s.fs!.get(cmd.arg);
  } catch (err) {
    s.conn.endData();
    await ctx.replyError(s, err, cmd.directive);
    return;
  }
  if (!s.conn.secure) {
    await s.conn.delegate(cmd);
    return;
  }
  // Over TLS the 150 comes before the data connection's handshake (see dataConnection()). ftp-srv's own
  // handlers send theirs only after it, so ours goes first and theirs is left out.
  await s.conn.reply(150, 'Listing follows');
  await s.conn.delegateWithout150(cmd);
}

/**
 * RETR, here rather than in ftp-srv, whose handler pauses the file after
 * every chunk until the socket has taken it (one 64 KiB chunk in flight:
 * 300–600 MiB/s against vsftpd's 1.5–2.4 GiB/s here). The file is piped
 * to the data connection in 1 MiB reads with the usual backpressure; REST
 * sets where it starts.
 */
export async function retrieve(ctx: FtpContext, s: Session, cmd: Command): Promise<void> {
  const conn = s.conn;
  const start = conn.takeRest();
  const t0 = Date.now();
  let opened;
  try {
    opened = await s.fs!.read(cmd.arg, { start });
  } catch (err) {
    conn.endData();
    await ctx.replyError(s, err, 'RETR');
    return;
  }
  const { stream, clientPath } = opened;
  const socket = await dataConnection(s, `Sending ${clientPath}`, () => stream.destroy());
  if (!socket) return;
  const before = socket.bytesWritten;
  // Which side failed first: pipeline() passes the other side's error on to the file stream too.
  let socketGone = false;
  let fileFailed = false;
  socket.once('close', () => (socketGone = true));
  socket.once('error', () => (socketGone = true));
  stream.once('error', () => (fileFailed = !socketGone));
  try {
    await pipeline(stream, socket);
    ctx.transferLog(s, 'RETR', clientPath, socket.bytesWritten - before, t0, 'ok');
    await conn.reply(226, `Transfer complete: ${clientPath}`);
  } catch (err) {
    stream.destroy();
    ctx.transferLog(s, 'RETR', clientPath, socket.bytesWritten - before, t0, 'aborted');
    if (fileFailed) {
      await ctx.replyError(s, err, 'RETR');
    } else {
      s.log.info({ path: clientPath, err: (err as Error).message }, 'ftp download aborted by the client or the network');
      await conn.reply(426, `Connection closed; transfer aborted: ${clientPath}`);
    }
  } finally {
    conn.endData();
  }
}
