import net from 'node:net';
import { Readable, Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { createLogger } from '../../../src/core/log.ts';
import { RelayDeliverer } from '../../../src/mail/deliver.ts';
import { NODEMAILER_INTERNALS, PIPELINE_FAULT, SmtpPool, SmtpSession, type SmtpError } from '../../../src/mail/smtp-client.ts';

/**
 * A next hop on a raw socket that records what each 'data' event brought,
 * so a test sees which commands came in one write, and everything each
 * connection received (`conns`). It answers every command line in order
 * (pipelined or not), `reply` deciding the answer; null: the connection is
 * dropped without one.
 */
function nextHop(pipelining: boolean, reply: (cmd: string) => string | null = () => '250 2.0.0 Ok') {
  const reads: string[] = [];
  const messages: string[] = [];
  const conns: Array<{ received: string; closed: Promise<void> }> = [];
  const server = net.createServer((sock) => {
    sockets.add(sock);
    const conn = { received: '', closed: new Promise<void>((r) => sock.on('close', () => r())) };
    conns.push(conn);
    sock.on('close', () => sockets.delete(sock));
    let buf = '';
    let body: string | null = null;
    sock.write('220 hop.test ESMTP\r\n');
    sock.on('data', (chunk) => {
      reads.push(chunk.toString('latin1'));
      conn.received += chunk.toString('latin1');
      buf += chunk.toString('latin1');
      for (;;) {
        if (body !== null) {
          const end = buf.indexOf('\r\n.\r\n');
          if (end < 0) return;
          messages.push(body + buf.slice(0, end));
          buf = buf.slice(end + 5);
          body = null;
          sock.write('250 2.0.0 queued\r\n');
          continue;
        }
        const eol = buf.indexOf('\r\n');
        if (eol < 0) return;
        const line = buf.slice(0, eol);
        buf = buf.slice(eol + 2);
        const verb = line.split(/[ :]/)[0]!.toUpperCase();
        if (verb === 'EHLO') {
          sock.write(`250-hop.test\r\n250-8BITMIME\r\n${pipelining ? '250-PIPELINING\r\n' : ''}250 SMTPUTF8\r\n`);
        } else if (verb === 'QUIT') {
          sock.end('221 2.0.0 Bye\r\n');
        } else {
          const r = reply(line);
          if (r === null) return void sock.destroy();
          if (verb === 'DATA' && r.startsWith('354')) body = '';
          sock.write(r + '\r\n');
        }
      }
    });
    sock.on('error', () => {
      // The client closes a broken session without QUIT; nothing to do here.
    });
  });
  return { server, reads, messages, conns };
}

const servers: net.Server[] = [];
const sockets = new Set<net.Socket>();
afterEach(async () => {
  // A failed test may leave a session open; the server's close waits for it otherwise.
  for (const s of sockets) s.destroy();
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

async function start(hop: ReturnType<typeof nextHop>) {
  servers.push(hop.server);
  await new Promise<void>((r) => hop.server.listen(0, '127.0.0.1', r));
  const port = (hop.server.address() as net.AddressInfo).port;
  return { host: '127.0.0.1', port, secure: false, name: 'client.test', tls: {}, connectTimeout: 5000 };
}

const DATA_OK = (cmd: string) => (cmd === 'DATA' ? '354 go ahead' : '250 2.0.0 Ok');
const message = () => Buffer.from('Subject: hi\r\n\r\nbody\r\n');

/** A logger whose lines (parsed) land in `lines`. */
function capturedLog() {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: createLogger({ level: 'info', destination }), lines };
}

/**
 * Makes the lines the session writes early differ from what nodemailer
 * writes later, as a nodemailer that formats RCPT TO differently would:
 * each RCPT TO of its next group gets a parameter nodemailer does not add.
 */
function skewGroup(session: SmtpSession) {
  let group: string[] = [];
  Object.defineProperty(session, 'group', {
    configurable: true,
    get: () => group,
    set: (lines: string[]) => (group = lines.map((l) => (l.startsWith('RCPT') ? `${l} NOTIFY=NEVER` : l))),
  });
}

/** The pool's idle sessions (private). */
const idleOf = (pool: SmtpPool) => (pool as unknown as { idle: SmtpSession[] }).idle;

describe('the next hop with and without PIPELINING', () => {
  it(`nodemailer internals: ${NODEMAILER_INTERNALS.connection.join('; ')}`, async () => {
    expect(typeof (SMTPConnection.prototype as unknown as Record<string, unknown>)._sendCommand).toBe('function');
    const hop = nextHop(true, DATA_OK);
    const session = await SmtpSession.open(await start(hop));
    const conn = (session as unknown as { conn: { _supportedExtensions?: string[] } }).conn;
    expect(conn._supportedExtensions).toContain('PIPELINING');
    session.close();
  });

  it('PIPELINING offered: MAIL, every RCPT and DATA arrive in one read, then the message', async () => {
    const hop = nextHop(true, DATA_OK);
    const pool = new SmtpPool(await start(hop), 1);
    const info = await pool.send('a@here.test', ['b@hop.test', 'c@hop.test'], message, { eightBit: true, smtputf8: 0 });
    expect(info.response).toMatch(/^250 2\.0\.0 queued/);
    expect(hop.reads).toContain('MAIL FROM:<a@here.test> BODY=8BITMIME\r\nRCPT TO:<b@hop.test>\r\nRCPT TO:<c@hop.test>\r\nDATA\r\n');
    expect(hop.reads.filter((r) => /RCPT|DATA/.test(r))).toHaveLength(1);
    // The session is reused, and the second message is pipelined too.
    await pool.send('a@here.test', ['d@hop.test'], message, { eightBit: false, smtputf8: 1 });
    expect(hop.reads).toContain('MAIL FROM:<a@here.test> SMTPUTF8\r\nRCPT TO:<d@hop.test>\r\nDATA\r\n');
    expect(hop.messages).toHaveLength(2);
    expect(hop.reads.filter((r) => r.startsWith('EHLO'))).toHaveLength(1);
    pool.close();
  });

  it('PIPELINING not offered: the commands arrive one by one', async () => {
    const hop = nextHop(false, DATA_OK);
    const pool = new SmtpPool(await start(hop), 1);
    await pool.send('a@here.test', ['b@hop.test', 'c@hop.test'], message);
    const i = hop.reads.findIndex((r) => r.startsWith('MAIL'));
    expect(hop.reads.slice(i, i + 4)).toEqual(['MAIL FROM:<a@here.test>\r\n', 'RCPT TO:<b@hop.test>\r\n', 'RCPT TO:<c@hop.test>\r\n', 'DATA\r\n']);
    expect(hop.messages).toHaveLength(1);
    pool.close();
  });

  it('a refused recipient among accepted ones: the others get the message, the refused one its own error', async () => {
    const hop = nextHop(true, (cmd) => (cmd === 'RCPT TO:<dead@hop.test>' ? '550 5.1.1 no such user' : DATA_OK(cmd)));
    const pool = new SmtpPool(await start(hop), 1);
    const info = await pool.send('a@here.test', ['b@hop.test', 'dead@hop.test', 'c@hop.test'], message);
    expect(info.rejectedErrors?.map((e) => [e.recipient, e.responseCode])).toEqual([['dead@hop.test', 550]]);
    expect(hop.messages).toHaveLength(1);
    expect(hop.reads.filter((r) => /RCPT|DATA/.test(r))).toHaveLength(1);
    pool.close();
  });

  it('every recipient refused: the server refuses DATA, no message is sent, each recipient has its error', async () => {
    let refusedAll = true;
    const hop = nextHop(true, (cmd) => (cmd.startsWith('RCPT') ? '550 5.1.1 no such user' : cmd === 'DATA' ? (refusedAll ? '554 5.5.1 no valid recipients' : '354 go') : '250 2.0.0 Ok'));
    const pool = new SmtpPool(await start(hop), 1);
    const err = (await pool.send('a@here.test', ['x@hop.test', 'y@hop.test'], message).catch((e: unknown) => e)) as SmtpError;
    expect(err.code).toBe('EENVELOPE');
    expect(err.rejectedErrors?.map((e) => [e.recipient, e.responseCode])).toEqual([['x@hop.test', 550], ['y@hop.test', 550]]);
    // A server that answers DATA with 354 all the same gets no message either: the session is closed.
    refusedAll = false;
    const err2 = (await pool.send('a@here.test', ['z@hop.test'], message).catch((e: unknown) => e)) as SmtpError;
    expect(err2.rejectedErrors?.map((e) => e.recipient)).toEqual(['z@hop.test']);
    expect(hop.messages).toHaveLength(0);
    pool.close();
  });

  it('a 4xx on MAIL: the transaction fails with it and no message is sent', async () => {
    const hop = nextHop(true, (cmd) => (cmd.startsWith('MAIL') ? '451 4.3.0 try again later' : DATA_OK(cmd)));
    const pool = new SmtpPool(await start(hop), 1);
    const err = (await pool.send('a@here.test', ['b@hop.test'], message).catch((e: unknown) => e)) as SmtpError;
    expect(err.responseCode).toBe(451);
    expect(err.code).toBe('EENVELOPE');
    expect(hop.messages).toHaveLength(0);
    pool.close();
  });

  it('nodemailer asks to write a line other than the one pipelined: not written, the send fails with 451, the pool opens a new session', async () => {
    const hop = nextHop(true, DATA_OK);
    const { log, lines } = capturedLog();
    const pool = new SmtpPool({ ...(await start(hop)), log }, 1);
    await pool.send('a@here.test', ['b@hop.test', 'c@hop.test'], message);
    const session = idleOf(pool)[0]!;
    skewGroup(session);
    const err = (await pool.send('a@here.test', ['b@hop.test', 'c@hop.test'], message).catch((e: unknown) => e)) as SmtpError;
    expect(err).toBeInstanceOf(Error);
    expect([err.code, err.responseCode, err.response]).toEqual(['EPIPELINE', 451, PIPELINE_FAULT]);
    expect(session.broken).toBe(true);
    expect(idleOf(pool)).not.toContain(session);
    // Everything the server got on that connection, once it was closed: no command twice, no message.
    await hop.conns[0]!.closed;
    const received = hop.conns[0]!.received.split('\r\n');
    const second = received.slice(received.lastIndexOf('MAIL FROM:<a@here.test>'));
    expect(second).toEqual(['MAIL FROM:<a@here.test>', 'RCPT TO:<b@hop.test> NOTIFY=NEVER', 'RCPT TO:<c@hop.test> NOTIFY=NEVER', 'DATA', '']);
    expect(hop.messages).toHaveLength(1);
    const errors = lines.filter((l) => l.level === 50);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ host: '127.0.0.1', expected: 'RCPT TO:<b@hop.test> NOTIFY=NEVER', got: 'RCPT TO:<b@hop.test>' });
    expect(errors[0]!.msg).toMatch(/out of step/);
    // The next message goes on a new connection.
    await pool.send('a@here.test', ['b@hop.test'], message);
    expect(hop.conns).toHaveLength(2);
    expect(hop.messages).toHaveLength(2);
    pool.close();
  });

  it('out of step in a delivery: every recipient is a temporary failure (retried later), never a bounce', async () => {
    const hop = nextHop(true, DATA_OK);
    const { port } = await start(hop);
    const { log, lines } = capturedLog();
    const relay = new RelayDeliverer({ url: `smtp://127.0.0.1:${port}`, hostname: 'client.test', maxConnections: 1, log });
    const req = { id: 'q1', sender: 'a@here.test', recipients: ['b@hop.test', 'c@hop.test'], open: () => Readable.from([message()]) };
    expect((await relay.deliver(req)).map((o) => o.status)).toEqual(['sent', 'sent']);
    skewGroup(idleOf((relay as unknown as { pool: SmtpPool }).pool)[0]!);
    const outcomes = await relay.deliver({ ...req, id: 'q2' });
    expect(outcomes.map((o) => [o.rcpt, o.status, o.reply])).toEqual([
      ['b@hop.test', 'temp', PIPELINE_FAULT],
      ['c@hop.test', 'temp', PIPELINE_FAULT],
    ]);
    expect(lines.filter((l) => l.level === 50)).toHaveLength(1);
    expect(hop.messages).toHaveLength(1);
    relay.close();
  });

  it('a next hop that closes the connection before its greeting: the attempt fails (it does not wait forever) and frees its place in the pool', async () => {
    // As an overloaded or unwilling MTA does: the TCP connection is accepted, then ended with no reply at all.
    let accepted = 0;
    const server = net.createServer((sock) => {
      accepted++;
      sock.end();
    });
    const { port } = await start({ server, reads: [], messages: [], conns: [] });
    const relay = new RelayDeliverer({ url: `smtp://127.0.0.1:${port}`, hostname: 'client.test', maxConnections: 1 });
    const req = { id: 'q1', sender: 'a@here.test', recipients: ['b@hop.test'], open: () => Readable.from([message()]) };
    const first = await relay.deliver(req);
    expect(first.map((o) => o.status)).toEqual(['temp']);
    expect(first[0]!.reply).toMatch(/^4\.4\.1 /);
    // The one connection the pool may open was given back: the next attempt connects again.
    expect((await relay.deliver({ ...req, id: 'q2' })).map((o) => o.status)).toEqual(['temp']);
    expect(accepted).toBe(2);
    relay.close();
  });

  it('the connection drops in the middle of a transaction: the send fails (it does not wait forever)', async () => {
    const hop = nextHop(true, (cmd) => (cmd.startsWith('RCPT') ? null : DATA_OK(cmd)));
    const session = await SmtpSession.open(await start(hop));
    const err = (await session.send('a@here.test', ['b@hop.test'], message()).catch((e: unknown) => e)) as SmtpError;
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe('ECONNECTION');
    expect(err.responseCode).toBeUndefined();
    expect(session.broken).toBe(true);
    expect(hop.messages).toHaveLength(0);
    session.close();
  });
});
