/**
 * Setting up data connections: PASV and EPSV (a listener that takes only
 * the client's own connection, see PassiveConnector), PORT and EPRT (only
 * toward the client's own address: no FTP bounce), EPSV ALL.
 */
import { isIP } from 'node:net';
import { formatAddress } from '../lib/listen.ts';
import { ActiveConnector, PassiveConnector, plainIp, sameIp } from './connectors.ts';
import type { Command, FtpContext, Session } from './context.ts';

/** Parses a PORT (RFC 959 §4.1.2) or EPRT (RFC 2428 §2) argument; undefined when malformed. */
export function activeTarget(directive: 'PORT' | 'EPRT', arg: string | null): { host: string; port: number } | undefined {
  if (!arg) return undefined;
  if (directive === 'PORT') {
    const m = /^\s*(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})\s*$/.exec(arg);
    if (!m) return undefined;
    const n = m.slice(1).map(Number);
    if (n.some((x) => x > 255)) return undefined;
    return { host: n.slice(0, 4).join('.'), port: n[4]! * 256 + n[5]! };
  }
  const d = arg.trim()[0];
  if (!d) return undefined;
  const parts = arg.trim().split(d);
  if (parts.length !== 5 || parts[0] !== '' || parts[4] !== '') return undefined;
  const [, proto, host, portText] = parts;
  const port = Number(portText);
  if (!/^\d{1,5}$/.test(portText!) || port > 65535) return undefined;
  if ((proto === '1' && isIP(host!) !== 4) || (proto === '2' && isIP(host!) !== 6) || (proto !== '1' && proto !== '2')) return undefined;
  return { host: host!, port };
}

/** PASV (RFC 959) and EPSV (RFC 2428): one data listener per session at a time. */
export async function passive(ctx: FtpContext, s: Session, cmd: Command): Promise<void> {
  const conn = s.conn;
  if (cmd.directive === 'EPSV' && cmd.arg?.trim()) {
    // RFC 2428 §3: EPSV <net-prt> asks for a protocol; only the control connection's own is offered.
    const arg = cmd.arg.trim().toUpperCase();
    const own = isIP(plainIp(conn.commandSocket.localAddress)) === 6 ? '2' : '1';
    if (arg === 'ALL') {
      s.epsvAll = true;
      await conn.reply(200, 'EPSV ALL ok: PORT, PASV and EPRT are refused from now on');
      return;
    }
    if (arg !== own) {
      await conn.reply(522, `Network protocol not supported, use (${own})`);
      return;
    }
  }
  if (cmd.directive === 'PASV' && (await refusedAfterEpsvAll(ctx, s, cmd))) return;
  const addr = plainIp(ctx.cfg.passive?.address ?? conn.commandSocket.localAddress);
  if (cmd.directive === 'PASV' && isIP(addr) !== 4) {
    await conn.reply(425, 'PASV needs an IPv4 address; use EPSV');
    return;
  }
  conn.endData();
  const connector = new PassiveConnector(conn, { ...ctx.passive, tls: s.tls, log: s.log });
  conn.connector = connector;
  let port: number;
  try {
    port = await connector.listen();
  } catch (err) {
    s.log.warn({ err: (err as Error).message }, 'no passive port available');
    await conn.reply(425, 'No passive port available; try again');
    return;
  }
  if (cmd.directive === 'PASV') await conn.reply(227, `Entering Passive Mode (${addr.replace(/\./g, ',')},${port >> 8},${port & 255})`);
  else await conn.reply(229, `Entering Extended Passive Mode (|||${port}|)`);
}

/** After EPSV ALL (RFC 2428 §4) every other way of setting up a data connection is refused. */
async function refusedAfterEpsvAll(ctx: FtpContext, s: Session, cmd: Command): Promise<boolean> {
  if (!s.epsvAll) return false;
  s.log.info({ why: 'EPSV ALL', command: cmd.directive }, 'ftp command refused');
  await s.conn.reply(503, `EPSV ALL is in effect: ${cmd.directive} refused; use EPSV`);
  return true;
}

/** PORT/EPRT: only toward the client's own address and an unprivileged port (FTP bounce, CVE-2020-15152 class). */
export async function active(ctx: FtpContext, s: Session, cmd: Command): Promise<void> {
  const conn = s.conn;
  if (await refusedAfterEpsvAll(ctx, s, cmd)) return;
  const t = activeTarget(cmd.directive as 'PORT' | 'EPRT', cmd.arg);
  if (!t && cmd.directive === 'EPRT' && /^(.)(\d+)\1/.test(cmd.arg?.trim() ?? '') && !/^.[12]\D/.test(cmd.arg!.trim())) {
    await conn.reply(522, 'Network protocol not supported, use (1,2)'); // RFC 2428 §2
    return;
  }
  if (!t) {
    await conn.reply(501, `Syntax error in ${cmd.directive} argument`);
    return;
  }
  if (!sameIp(t.host, conn.commandSocket.remoteAddress) || t.port < 1024) {
    s.log.warn({ target: formatAddress(t), why: t.port < 1024 ? 'privileged port' : 'not the client address' }, 'ftp active connection refused (bounce)');
    await conn.reply(500, `Illegal ${cmd.directive} command: data connections go only to your own address, port 1024 or above`);
    return;
  }
  conn.endData();
  conn.connector = new ActiveConnector(conn, t.host, t.port, s.tls, s.log);
  await conn.reply(200, `${cmd.directive} command successful`);
}

