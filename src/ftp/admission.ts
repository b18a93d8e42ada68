import type { Socket } from 'node:net';
import { replyCode } from '../core/errors.ts';
import { plainIp } from './connectors.ts';
import type { FtpContext } from './context.ts';

/**
 * The connection caps (all sessions, per address) and the idle sweep:
 * `admit` sees every accepted TCP connection before ftp-srv greets it;
 * `sweep` runs every few seconds; `sockets` holds every accepted control
 * socket, so stop() can end the ones that never became sessions.
 */
export function createAdmission(ctx: FtpContext): { admit(sock: Socket, accept: () => void): void; sweep(): void; sockets: Set<Socket> } {
  const { cfg } = ctx;
  const idleMs = cfg.idleTimeout * 1000;
  const perIp = new Map<string, number>();
  const sockets = new Set<Socket>();

  /** Closes sessions idle for longer than idleTimeout, and transfers whose data stopped moving for as long. */
  function sweep(): void {
    const now = Date.now();
    for (const s of ctx.sessions) {
      if (s.busy) {
        const ds = s.conn.dataSocket;
        const bytes = ds ? ds.bytesRead + ds.bytesWritten : -1;
        if (bytes !== s.lastBytes) {
          s.lastBytes = bytes;
          s.lastActivity = now;
          continue;
        }
        if (now - s.lastActivity > idleMs && ds) {
          s.log.info({ why: 'stalled transfer' }, 'ftp transfer aborted: no data moved');
          ds.destroy();
          s.lastActivity = now;
        }
        continue;
      }
      if (now - s.lastActivity > idleMs) {
        s.log.info({ why: 'idle' }, 'ftp session closed: idle timeout');
        ctx.sessions.delete(s);
        void s.conn.close(421, `Idle for ${ctx.cfg.idleTimeout} seconds; closing the connection`);
      }
    }
  }

  /** Every accepted TCP connection: the connection caps, then ftp-srv's greeting (`accept`). */
  function admit(sock: Socket, accept: () => void): void {
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
    // Without TCP_NODELAY each completion reply waits for the client's delayed ACK (~40 ms per transfer).
    sock.setNoDelay(true);
    const ip = plainIp(sock.remoteAddress);
    const n = perIp.get(ip) ?? 0;
    if (ctx.sessions.size >= cfg.maxConnections || n >= cfg.maxConnectionsPerIp) {
      const why = n >= cfg.maxConnectionsPerIp ? 'per-IP connection limit' : 'connection limit';
      ctx.log.info({ remote: ip, why }, 'ftp connection refused');
      // Refused already (logged above): a reset while the 421 goes out changes nothing.
      sock.on('error', () => undefined);
      sock.end(`${replyCode('RATE_LIMITED', 'ftp')} Too many connections${n >= cfg.maxConnectionsPerIp ? ' from your address' : ''}; try again later\r\n`);
      return;
    }
    perIp.set(ip, n + 1);
    sock.once('close', () => {
      const left = (perIp.get(ip) ?? 1) - 1;
      if (left > 0) perIp.set(ip, left);
      else perIp.delete(ip);
    });
    accept();
  }

  return { admit, sweep, sockets };
}
