import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawSmtp, smtpPort } from '../../helpers/mailsink.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';

/** A next hop (real smtp-server) that records the MAIL FROM parameters it was given. */
interface Peer {
  url: string;
  got: Array<{ to: string[]; body: string; smtpUtf8: boolean; raw: string }>;
  close(): Promise<void>;
}

async function startPeer(opts: { smtputf8: boolean }): Promise<Peer> {
  const peer: Peer = { url: '', got: [], close: async () => undefined };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    hideSMTPUTF8: !opts.smtputf8,
    logger: false,
    closeTimeout: 200,
    onData(stream, session, done) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const args = (session.envelope.mailFrom ? session.envelope.mailFrom.args : {}) as Record<string, unknown>;
        peer.got.push({ to: session.envelope.rcptTo.map((r) => r.address), body: String(args.BODY ?? ''), smtpUtf8: args.SMTPUTF8 === true, raw: Buffer.concat(chunks).toString('utf8') });
        done();
      });
    },
  });
  server.on('error', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  peer.url = `smtp://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
  peer.close = () => new Promise((resolve) => server.close(() => resolve()));
  return peer;
}

const tenants = { 'a.test': { domains: ['a.test'], mail: { forward: { info: 'x@remote.test', 'grüße': 'y@remote.test' } } } };
let modern: Peer;
let old: Peer;
let t: TestSuite;
let tOld: TestSuite;

beforeAll(async () => {
  modern = await startPeer({ smtputf8: true });
  old = await startPeer({ smtputf8: false });
  t = await startTestSuite({ main: { smtp: { listen: ['127.0.0.1:0'], relay: modern.url } }, tenants });
  tOld = await startTestSuite({ main: { smtp: { listen: ['127.0.0.1:0'], relay: old.url } }, tenants });
});
afterAll(async () => {
  await t?.stop();
  await tOld?.stop();
  await modern?.close();
  await old?.close();
});

async function session(suite: TestSuite, mail: string, rcpt: string, data?: string): Promise<string[]> {
  const c = await RawSmtp.connect(smtpPort(suite.suite));
  const replies = [await c.cmd('EHLO client.test'), await c.cmd(mail)];
  if (replies[1]!.startsWith('250')) {
    replies.push(await c.cmd(rcpt));
    if (data !== undefined && replies[2]!.startsWith('250')) {
      replies.push(await c.cmd('DATA'));
      c.send(Buffer.from(`${data}\r\n.\r\n`, 'utf8'));
      replies.push(await c.reply());
    }
  }
  c.close();
  return replies;
}

const UTF8_MSG = 'From: Jörg <s@third.test>\r\nSubject: Grüße\r\n\r\nSchöne Grüße\r\n';
const BIT8_MSG = 'From: s@third.test\r\nSubject: plain\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSchöne Grüße\r\n';

describe('8BITMIME and SMTPUTF8 on relay', () => {
  it('passes BODY=8BITMIME and SMTPUTF8 on to the next hop', async () => {
    const r = await session(t, 'MAIL FROM:<s@third.test> BODY=8BITMIME SMTPUTF8', 'RCPT TO:<info@a.test>', UTF8_MSG);
    expect(r.at(-1)).toMatch(/^250 /);
    expect(modern.got.at(-1)).toMatchObject({ to: ['x@remote.test'], body: '8BITMIME', smtpUtf8: true });
    expect(modern.got.at(-1)!.raw).toContain('Subject: Grüße');
  });

  it('passes BODY=8BITMIME alone when SMTPUTF8 was not asked for', async () => {
    const r = await session(t, 'MAIL FROM:<s@third.test> BODY=8BITMIME', 'RCPT TO:<info@a.test>', BIT8_MSG);
    expect(r.at(-1)).toMatch(/^250 /);
    expect(modern.got.at(-1)).toMatchObject({ body: '8BITMIME', smtpUtf8: false });
  });

  it('a UTF-8 recipient with SMTPUTF8 is routed and forwarded with SMTPUTF8', async () => {
    const r = await session(t, 'MAIL FROM:<s@third.test> SMTPUTF8', 'RCPT TO:<grüße@a.test>', 'Subject: x\r\n\r\nx\r\n');
    expect(r.at(-1)).toMatch(/^250 /);
    expect(modern.got.at(-1)).toMatchObject({ to: ['y@remote.test'], smtpUtf8: true });
  });

  it('refuses a message that needs SMTPUTF8 when the next hop lacks it (RFC 6531 §3.4): 553 5.6.7, nothing sent as UTF-8', async () => {
    const r = await session(tOld, 'MAIL FROM:<s@third.test> BODY=8BITMIME SMTPUTF8', 'RCPT TO:<info@a.test>', UTF8_MSG);
    expect(r.at(-1)).toMatch(/^553 5\.6\.7 .*SMTPUTF8/);
    expect(old.got).toEqual([]);
    expect(tOld.suite.state.mailQueue.count()).toBe(0);
  });

  it('sends a message that asked for SMTPUTF8 but needs none to a next hop without it', async () => {
    const r = await session(tOld, 'MAIL FROM:<s@third.test> SMTPUTF8', 'RCPT TO:<info@a.test>', 'Subject: ascii\r\n\r\nascii\r\n');
    expect(r.at(-1)).toMatch(/^250 /);
    expect(old.got.at(-1)).toMatchObject({ to: ['x@remote.test'], smtpUtf8: false });
  });

  it('inbound: a UTF-8 address without the SMTPUTF8 parameter gets 553 5.6.7', async () => {
    const from = await session(t, 'MAIL FROM:<jörg@third.test>', 'RCPT TO:<info@a.test>');
    expect(from[1]).toMatch(/^553 5\.6\.7 /);
    const to = await session(t, 'MAIL FROM:<s@third.test>', 'RCPT TO:<grüße@a.test>');
    expect(to[1]).toMatch(/^250 /);
    expect(to[2]).toMatch(/^553 5\.6\.7 /);
  });
});
