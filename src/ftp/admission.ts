import type { Socket } from 'node:net';
import { replyCode } from '../core/errors.ts';
import { clientFields, PeerCounter } from '../lib/peers.ts';
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
  /** Open control connections per client key (an IPv6 client by its /64). */
  const perClient = new PeerCounter();
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
    // As every FTP log line names the client: an IPv4 client of a dual-stack listener without its ::ffff: prefix.
    const ip = plainIp(sock.remoteAddress) || '-';
    const full = ctx.sessions.size >= cfg.maxConnections;
    const admitted = full ? undefined : perClient.acquire(ip, cfg.maxConnectionsPerIp);
    if (!admitted?.ok) {
      const why = full ? 'connection limit' : 'per-IP connection limit';
      ctx.log.info({ ...clientFields(ip), why, ...(admitted ? { open: admitted.open } : {}) }, 'ftp connection refused');
      // Refused already (logged above): a reset while the 421 goes out changes nothing.
      sock.on('error', () => undefined);
      sock.end(`${replyCode('RATE_LIMITED', 'ftp')} Too many connections${full ? '' : ' from your address'}; try again later\r\n`);
      return;
    }
    sock.once('close', admitted.release);
    accept();
  }

  return { admit, sweep, sockets };
}
