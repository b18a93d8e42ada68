import net from 'node:net';
import { Readable } from 'node:stream';
import type { ConnectionOptions } from 'node:tls';
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { refusal } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';

/** An error as nodemailer's SMTP client reports it. */
export interface SmtpError extends Error {
  code?: string;
  responseCode?: number;
  response?: string;
  rejectedErrors?: SmtpError[];
  recipient?: string;
}

/** What a successful transaction returns (nodemailer's SentMessageInfo, the parts we read). */
export interface SentInfo {
  response: string;
  rejectedErrors?: SmtpError[];
}

/** MAIL FROM parameters a message arrived with, to pass on. */
export interface MailParams {
  /** BODY=8BITMIME (RFC 6152), given when the next hop offers it. */
  eightBit: boolean;
  /** SMTPUTF8 (RFC 6531): 0 not asked; 1 asked, given when offered; 2 needed: a next hop without it refuses the message. */
  smtputf8: 0 | 1 | 2;
}

export interface ClientOptions {
  host: string;
  port: number;
  /** TLS from the first byte (smtps); otherwise STARTTLS when offered. */
  secure: boolean;
  /** Our name in EHLO. */
  name: string;
  tls: ConnectionOptions;
  auth?: { user: string; pass: string } | undefined;
  connectTimeout: number;
  /** Where a fault of ours in a session is logged (at error level); absent, it is only in the error a send rejects with. */
  log?: Logger | undefined;
}

/** What {@link SmtpSession} relies on inside nodemailer's SMTPConnection (checked by test/unit/mail/smtp-pipelining.test.ts). */
export const NODEMAILER_INTERNALS = {
  connection: ['_sendCommand(line) writes line + CRLF in one write', '_supportedExtensions: the EHLO keywords'],
  /** The commands a transaction writes, in order, when the server offers PIPELINING; {@link SmtpSession} writes the RCPTs and DATA early. */
  pipelined: ['MAIL FROM:<from>', 'RCPT TO:<to> (each, after the MAIL reply)', 'DATA (after the last RCPT reply, unless all were refused)'],
  /**
   * Checked at run time too: when nodemailer asks to write a line other than
   * the next one already written (a nodemailer that formats or orders them
   * differently), the line is not written, the connection is closed, the
   * transaction fails with {@link PIPELINE_FAULT} (a temporary failure: the
   * queue retries the message later) and the log says which line was
   * expected and which came.
   */
  guard: 'a line other than the next one already written: not written; the session is closed and the send fails with 451 4.3.0',
};

/** The reply a transaction fails with when nodemailer went out of step with the commands {@link SmtpSession} wrote early (see the log). */
const pipelineFault = refusal('INTERNAL', 'smtp', 'Local error in the SMTP client: its pipelined commands went out of step (see the log); the message will be tried again');
export const PIPELINE_FAULT = `${pipelineFault.code} ${pipelineFault.text}`;

/**
 * One SMTP client session (nodemailer's SMTPConnection, without the mail
 * composer around it: our messages are finished bytes). The TCP connection
 * is ours, with TCP_NODELAY: the client writes the message and the final
 * "." separately, and with Nagle's algorithm the second write waits for the
 * receiver's delayed ACK (~40 ms per message, measured).
 */
export class SmtpSession {
  private readonly conn: SMTPConnection;
  /** Set once the session cannot carry another message. */
  broken = false;

  /** Set for one transaction: add SMTPUTF8 to MAIL FROM even when the addresses are ASCII (the headers may not be). */
  private forceUtf8 = false;

  /** Set while a transaction runs: ends it with an error (once) when the connection fails under it. */
  private abort: ((err: Error) => void) | undefined;

  /** Set when nodemailer went out of step with the commands written early: what the transaction fails with. */
  private fault: SmtpError | undefined;

  private constructor(
    conn: SMTPConnection,
    private readonly sock: net.Socket,
    private readonly o: ClientOptions,
  ) {
    this.conn = conn;
    // nodemailer calls a transaction's callback only for replies: when the
    // connection fails under it (closed, reset, timed out) it emits 'error'
    // and 'end' instead, and the transaction must end here.
    conn.on('error', (err: Error) => {
      this.broken = true;
      this.abort?.(err);
    });
    conn.on('end', () => {
      this.broken = true;
      this.abort?.(Object.assign(new Error('Connection closed during the transaction'), { code: 'ECONNECTION' }));
    });
    // nodemailer adds SMTPUTF8 only for non-ASCII addresses; RFC 6531 §3.4
    // asks for it whenever the message may carry UTF-8 (headers too). Its
    // command writer is private; this file is the one that touches it.
    //
    // It also pipelines only the RCPTs: MAIL, the RCPTs, DATA and the message
    // cost 4 round trips. When the server offers PIPELINING (RFC 2920), MAIL
    // FROM goes out with every RCPT TO and DATA in one write (DATA last in
    // the group, §3.1), and the commands nodemailer writes later, once each
    // reply has come, are dropped: its reply handlers still read the replies
    // in order, so per-recipient results, the refusal of DATA when every
    // recipient was refused and a refused MAIL are handled as without it.
    // After a refused MAIL or when every RCPT was refused the replies left
    // over are never read: the session is broken and closed, not reused.
    //
    // A line other than the next one written early (a nodemailer that
    // formats or orders them differently) is never written: the server
    // would get that command twice and each later reply would be read for
    // the wrong command. The session stops there (outOfStep).
    const internals = conn as unknown as { _sendCommand(cmd: string): void };
    const sendCommand = internals._sendCommand.bind(conn);
    internals._sendCommand = (cmd: string) => {
      // Out of step: nothing more goes to the server on this connection.
      if (this.fault) return;
      if (/^MAIL FROM:/i.test(cmd)) {
        if (this.forceUtf8 && !/ SMTPUTF8\b/i.test(cmd)) cmd += ' SMTPUTF8';
        if (this.group.length) {
          this.sent = this.group;
          this.group = [];
          return sendCommand([cmd, ...this.sent].join('\r\n'));
        }
      }
      if (this.sent.length) {
        if (cmd === this.sent[0]) {
          this.sent.shift();
          return;
        }
        return this.outOfStep(this.sent[0]!, cmd);
      }
      sendCommand(cmd);
    };
  }

  /**
   * nodemailer asked to write `got` while `expected` was the next command
   * already written: a fault of ours (its internals changed under this
   * file), not of the server or the message. The session is broken, the
   * connection closed at once, and the transaction fails with a temporary
   * error (451: the queue tries the message again later, on a new session;
   * the server saw no complete transaction, so nothing was sent).
   */
  private outOfStep(expected: string, got: string): void {
    this.fault = Object.assign(new Error(PIPELINE_FAULT), { code: 'EPIPELINE', responseCode: pipelineFault.code, response: PIPELINE_FAULT });
    this.broken = true;
    this.o.log?.error(
      { host: this.o.host, port: this.o.port, expected, got },
      'SMTP client out of step with nodemailer: it asked to write a command other than the next one already pipelined; not written, connection closed, the message will be tried again',
    );
    this.abort?.(this.fault);
    this.sock.destroy();
    this.conn.close();
  }

  /** Set for one transaction when the server offers PIPELINING: the commands to write with MAIL FROM. */
  private group: string[] = [];
  /** The commands of the group already written, which nodemailer will ask to write again, in this order. */
  private sent: string[] = [];

  /** The extensions the server announced in its EHLO reply (nodemailer keeps them privately). */
  private offers(ext: string): boolean {
    return ((this.conn as unknown as { _supportedExtensions?: string[] })._supportedExtensions ?? []).includes(ext);
  }

  /** Connects, greets, upgrades to TLS when offered (or from the start), logs in if asked. */
  static open(o: ClientOptions): Promise<SmtpSession> {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: o.host, port: o.port });
      const fail = (err: Error) => {
        sock.destroy();
        reject(err);
      };
      sock.setTimeout(o.connectTimeout, () => fail(Object.assign(new Error(`connect to ${o.host}:${o.port} timed out`), { code: 'ETIMEDOUT' })));
      sock.once('error', fail);
      sock.once('connect', () => {
        sock.removeListener('error', fail);
        sock.setTimeout(0);
        sock.setNoDelay(true);
        const conn = new SMTPConnection({
          connection: sock,
          host: o.host,
          port: o.port,
          secure: o.secure,
          name: o.name,
          tls: o.tls,
          connectionTimeout: o.connectTimeout,
          greetingTimeout: o.connectTimeout,
          socketTimeout: 120_000,
        });
        const session = new SmtpSession(conn, sock, o);
        conn.once('error', reject);
        // Closed before the session opened (before or after the greeting: an unwilling or overloaded next hop), nodemailer
        // emits 'end' alone, no 'error':
        // without this the open, and the attempt and the pool's place it holds, would wait forever. (Once open: no-op.)
        conn.once('end', () => reject(Object.assign(new Error(`${o.host}:${o.port} closed the connection before the session opened`), { code: 'ECONNECTION' })));
        conn.connect((err) => {
          if (err) return reject(err);
          if (!o.auth) return resolve(session);
          conn.login(o.auth, (e) => (e ? reject(e) : resolve(session)));
        });
      });
    });
  }

  /** One transaction. Rejects with nodemailer's error (responseCode, response, rejectedErrors). */
  send(from: string, to: readonly string[], message: Readable | Buffer, params?: MailParams): Promise<SentInfo> {
    const utf8 = this.offers('SMTPUTF8');
    if (params?.smtputf8 === 2 && !utf8) {
      // RFC 6531 §3.4: never send UTF-8 to a server that did not agree to it; the message is refused, not downgraded.
      if (message instanceof Readable) message.destroy();
      const response = '553 5.6.7 The next hop does not support SMTPUTF8, which this message needs (RFC 6531 section 3.4)';
      return Promise.reject(Object.assign(new Error(response), { code: 'EENVELOPE', responseCode: 553, response }));
    }
    this.forceUtf8 = (params?.smtputf8 ?? 0) > 0 && utf8;
    // The RCPT TO and DATA lines exactly as nodemailer writes them (no DSN parameters: we never ask for them).
    this.group = this.offers('PIPELINING') ? [...to.map((a) => `RCPT TO:<${a.trim()}>`), 'DATA'] : [];
    this.sent = [];
    return new Promise((resolve, reject) => {
      let settled = false;
      const done = (err: Error | null, info?: SentInfo) => {
        if (settled) return;
        settled = true;
        if (this.abort === abort) this.abort = undefined;
        if (!err) return resolve(info!);
        this.broken = true;
        // A message not read yet (the transaction ended before DATA) is closed here, not left open.
        if (message instanceof Readable) message.destroy();
        reject(err);
      };
      const abort = (err: Error) => done(err);
      this.abort = abort;
      this.conn.send({ from, to: [...to], use8BitMime: params?.eightBit ?? false } as Parameters<SMTPConnection['send']>[0], message, (err, info) =>
        done(err, info as unknown as SentInfo),
      );
    });
  }

  close(): void {
    const wasBroken = this.broken;
    this.broken = true;
    if (wasBroken) this.conn.close();
    else this.conn.quit();
  }
}

/**
 * A pool of up to `max` sessions to one host, each reused for message
 * after message (like nodemailer's pooled transport). A session that
 * failed is closed, never reused. When a reused session turns out to be
 * dead (the server closed it while idle), the message is tried once more on
 * a new one rather than waiting for the next retry.
 */
export class SmtpPool {
  private readonly idle: SmtpSession[] = [];
  private readonly waiting: Array<() => void> = [];
  private open = 0;
  private closed = false;

  constructor(
    private readonly o: ClientOptions,
    private readonly max: number,
  ) {}

  async send(from: string, to: readonly string[], message: () => Readable | Buffer, params?: MailParams): Promise<SentInfo> {
    for (let attempt = 0; ; attempt++) {
      const { session, reused } = await this.acquire();
      try {
        const info = await session.send(from, to, message(), params);
        this.release(session);
        return info;
      } catch (err) {
        this.discard(session);
        const e = err as SmtpError;
        const connectionLevel = !e.responseCode || e.responseCode === 421;
        if (reused && connectionLevel && attempt === 0) continue;
        throw err;
      }
    }
  }

  private async acquire(): Promise<{ session: SmtpSession; reused: boolean }> {
    for (;;) {
      if (this.closed) throw Object.assign(new Error('delivery is stopping'), { code: 'ESTOPPED' });
      const s = this.idle.pop();
      if (s && !s.broken) return { session: s, reused: true };
      if (s) {
        this.discard(s);
        continue;
      }
      if (this.open < this.max) {
        this.open++;
        try {
          return { session: await SmtpSession.open(this.o), reused: false };
        } catch (err) {
          this.open--;
          this.wake();
          throw err;
        }
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }

  private release(s: SmtpSession): void {
    if (this.closed || s.broken) return this.discard(s);
    this.idle.push(s);
    this.wake();
  }

  private discard(s: SmtpSession): void {
    s.close();
    this.open--;
    this.wake();
  }

  private wake(): void {
    this.waiting.shift()?.();
  }

  close(): void {
    this.closed = true;
    for (const s of this.idle.splice(0)) s.close();
    for (const w of this.waiting.splice(0)) w();
  }
}
