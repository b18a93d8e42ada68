import type { Socket } from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import type { TLSSocket } from 'node:tls';
import { plainIp } from './connectors.ts';
import type { FtpContext, Session } from './context.ts';
import { handleLine } from './dispatch.ts';
import { MLST_FACTS } from './facts.ts';
import type { ControlConnection } from './ftpsrv-adapter.ts';

/** Commands read but not yet answered, per session, before reading pauses. */
const MAX_PENDING = 64;

/** Longest command line accepted (RFC 959 sets none; 4 KiB is ample for a 1 KiB path). */
const MAX_LINE = 4096;

/**
 * A new session on `conn`: takes over ftp-srv's command reading (lines
 * across packets, a length limit, one command at a time, idle tracking)
 * and AUTH TLS. The session is in `ctx.sessions` until its socket closes.
 */
export function openSession(ctx: FtpContext, conn: ControlConnection, id: number): Session {
  const socket = conn.commandSocket;
  const remote = plainIp(socket.remoteAddress);
  const s: Session = {
    conn,
    remote,
    log: ctx.log.child({ conn: id, remote }),
    busy: false,
    lastActivity: Date.now(),
    lastBytes: -1,
    mlstFacts: new Set(MLST_FACTS),
    queue: Promise.resolve(),
  };
  ctx.sessions.add(s);
  s.log.debug('ftp connection');
  const decoder = new StringDecoder('utf8');
  let buf = '';
  let discarding = false;
  let pending = 0;
  /** Where commands are read from: the TCP socket, then the TLS socket over it after AUTH TLS. */
  let reader: Socket = socket;
  /** Between the AUTH TLS line and the TLS wrap, nothing may resume the TCP socket (see below). */
  let tlsPending = false;
  const onData = (chunk: Buffer | string) => {
    s.lastActivity = Date.now();
    buf += typeof chunk === 'string' ? chunk : decoder.write(chunk);
    for (;;) {
      const nl = buf.indexOf('\n');
      if (nl === -1) break;
      const line = buf.slice(0, nl).replace(/\r$/, '');
      buf = buf.slice(nl + 1);
      if (/^\s*AUTH\s+TLS\s*$/i.test(line) && ctx.tls && !conn.secure) {
        // RFC 4217 §4: the client starts its TLS handshake as soon as it reads the 234. From
        // here on no byte may reach this reader: the socket is paused so that the ClientHello
        // stays in its buffer for the TLS layer (read as a command, it would be lost and the
        // session would hang). A client may not send more before the 234; whatever did come is dropped.
        tlsPending = true;
        reader.pause();
        reader.off('data', onData);
        if (buf !== '') s.log.info({ bytes: buf.length }, 'ftp: data sent after AUTH TLS before the reply dropped');
        buf = '';
        s.queue = s.queue.then(startTls).catch(async (err) => {
          await ctx.replyError(s, err, 'AUTH');
        });
        return;
      }
      if (discarding || line.length > MAX_LINE) {
        if (!discarding) {
          s.log.info({ why: 'line too long' }, 'ftp command refused');
          s.queue = s.queue.then(() => conn.reply(500, 'Command line too long')).then(() => undefined);
        }
        discarding = false;
        continue;
      }
      if (pending > 0 && /^[^A-Za-z]*ABOR\s*$/i.test(line)) {
        // RFC 959 §4.1.3: ABOR during a transfer ends it (the transfer answers 426), then ABOR gets 226.
        // Commands otherwise wait their turn, so this one is acted on as it arrives, also when the
        // transfer it aborts came in the same packet and has not started yet.
        s.log.info('ftp transfer aborted by the client (ABOR)');
        conn.abortData();
        s.queue = s.queue.then(() => conn.reply(226, 'Abort successful')).then(() => undefined);
        continue;
      }
      // A client that pipelines faster than commands complete is read no further
      // until the backlog shrinks, so the queue (and memory) stays bounded.
      if (++pending >= MAX_PENDING) reader.pause();
      s.queue = s.queue.then(async () => {
        s.busy = true;
        s.lastBytes = -1;
        try {
          await handleLine(ctx, s, line);
        } catch (err) {
          await ctx.replyError(s, err, 'command');
        } finally {
          s.busy = false;
          s.lastActivity = Date.now();
          if (--pending === MAX_PENDING / 4 && !tlsPending) reader.resume();
        }
      });
    }
    if (buf.length > MAX_LINE) {
      buf = '';
      discarding = true;
      s.log.info({ why: 'line too long' }, 'ftp command refused');
      s.queue = s.queue.then(() => conn.reply(500, 'Command line too long')).then(() => undefined);
    }
  };
  socket.on('data', onData);

  /**
   * AUTH TLS (RFC 4217 §4), here rather than in ftp-srv, whose handler wraps the socket only
   * some ticks after writing the 234 while this reader would go on consuming what arrives.
   */
  async function startTls(): Promise<void> {
    // Paused again: a command queued before AUTH TLS (ftp-srv's LIST ends with a resume) may
    // have set it flowing, and with no 'data' listener left the ClientHello would be lost.
    socket.pause();
    await new Promise<void>((resolve, reject) => socket.write('234 Ready for TLS\r\n', (err) => (err ? reject(err) : resolve())));
    let secure: TLSSocket;
    try {
      s.tls = ctx.tls!.newAcceptor();
      secure = await s.tls.accept(socket, s.log, 'control');
    } catch (err) {
      s.log.info({ err: (err as Error).message }, 'ftp TLS handshake failed; connection closed');
      socket.destroy();
      return;
    }
    secure.on('data', onData);
    reader = secure;
    tlsPending = false;
    conn.secured(secure);
    s.log.debug('ftp control connection: TLS started');
  }
  socket.once('close', () => {
    ctx.sessions.delete(s);
    s.log.debug('ftp connection closed');
  });
  return s;
}
