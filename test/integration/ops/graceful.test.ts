import { readdirSync, readFileSync, statSync } from 'node:fs';
import http, { type Server, type ServerResponse } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { openState } from '../../../src/state/index.ts';
import { type MailSink, RawSmtp, smtpPort, startSink } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import { ftpLogin } from '../ftp/helpers.ts';

let t: TestSuite;
let sink: MailSink;
let backend: Server;
const held: ServerResponse[] = [];
const PASS = 'graceful-test-pw';

/** A raw keep-alive HTTP connection: send requests, read whole responses, see when the server closes it. */
function keepAlive(base: string) {
  const u = new URL(base);
  const sock = net.connect(Number(u.port), u.hostname);
  let buf = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    wake?.();
  });
  sock.on('error', () => undefined);
  const closed = new Promise<void>((r) =>
    sock.once('close', () => {
      wake?.();
      r();
    }),
  );
  return {
    closed,
    isClosed: () => sock.destroyed,
    async get(p: string, host: string): Promise<{ head: string; body: string }> {
      sock.write(`GET ${p} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end !== -1) {
          const head = buf.subarray(0, end).toString();
          const len = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
          if (buf.length >= end + 4 + len) {
            const body = buf.subarray(end + 4, end + 4 + len).toString();
            buf = buf.subarray(end + 4 + len);
            return { head, body };
          }
        }
        if (sock.destroyed) throw new Error(`connection closed with ${JSON.stringify(buf.toString())}`);
        await new Promise<void>((r) => (wake = r));
      }
    },
  };
}

beforeAll(async () => {
  sink = await startSink();
  backend = http.createServer((_req, res) => held.push(res));
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
  t = await startTestSuite({
    main: { smtp: { listen: ['127.0.0.1:0'], relay: sink.url }, ftp: {} },
    tenants: {
      'a.test': {
        domains: ['a.test'],
        ftp: [{ user: 'ann', password: await hashPassword(PASS) }],
        mail: { forward: { info: ['ann@remote.test'] } },
        proxy: [{ path: '/slow/', to: `http://127.0.0.1:${(backend.address() as AddressInfo).port}` }],
      },
    },
    files: { 'a.test/index.html': 'site A' },
  });
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
  backend?.closeAllConnections();
  backend?.close();
});

describe('graceful stop with work in flight', () => {
  it('finishes the FTP upload, the HTTP request and the SMTP message under way, closes idle sessions (SMTP with 421), loses nothing', async () => {
    // FTP: an upload half sent.
    const ftp = await ftpLogin(t.ftp!, 'ann@a.test', PASS);
    const upload = new PassThrough();
    const half = Buffer.alloc(200_000, 'a');
    const uploaded = ftp.uploadFrom(upload, 'big.txt');
    upload.write(half);
    const root = path.join(t.sitesDir, 'a.test');
    await waitFor(() => readdirSync(root).some((n) => n.startsWith('.~mw-upload-') && statSync(path.join(root, n)).size > 0), 5_000, 'the upload to start');

    // HTTP: one idle keep-alive connection, one request waiting on a slow upstream.
    const idleHttp = keepAlive(t.http);
    expect((await idleHttp.get('/', 'a.test')).body).toBe('site A');
    const busyHttp = keepAlive(t.http);
    const slow = busyHttp.get('/slow/x', 'a.test');
    await waitFor(() => held.length === 1, 5_000, 'the upstream to get the request');

    // SMTP: one idle session, one in the middle of DATA.
    const idleSmtp = await RawSmtp.connect(smtpPort(t.suite));
    expect(await idleSmtp.cmd('EHLO idle.test')).toMatch(/^250/);
    const busySmtp = await RawSmtp.connect(smtpPort(t.suite));
    await busySmtp.cmd('EHLO busy.test');
    await busySmtp.cmd('MAIL FROM:<s@elsewhere.test>');
    expect(await busySmtp.cmd('RCPT TO:<info@a.test>')).toMatch(/^250/);
    expect(await busySmtp.cmd('DATA')).toMatch(/^354/);
    busySmtp.send('Subject: in flight at SIGTERM\r\n\r\nfirst half\r\n');

    const stopped = t.suite.stop(10_000);

    // FTP stops first: new connections are refused, the transfer under way may finish.
    await waitFor(
      () =>
        new Promise<boolean>((resolve) => {
          const u = new URL(t.ftp!);
          const s = net.connect(Number(u.port), u.hostname);
          s.once('connect', () => (s.destroy(), resolve(false)));
          s.once('error', () => resolve(true));
        }),
      5_000,
      'the FTP listener to close',
    );
    upload.end(half);
    expect((await uploaded).code).toBe(226);
    ftp.close();

    // HTTP next: the idle keep-alive connection is closed, the request under way gets its whole answer, then its connection closes.
    await idleHttp.closed;
    held[0]!.end('slow answer');
    const answer = await slow;
    expect(answer.head).toMatch(/^HTTP\/1\.1 200/);
    expect(answer.body).toBe('slow answer');
    expect(answer.head).toMatch(/\r\nconnection: close\r\n/i);
    await busyHttp.closed;

    // SMTP last: the idle session gets 421, the message under way is accepted.
    expect(await idleSmtp.reply(10_000)).toMatch(/^421 4\.4\.2 mx\.test Service shutting down, try again later$/);
    busySmtp.send('second half\r\n.\r\n');
    const accepted = await busySmtp.reply();
    expect(accepted).toMatch(/^250 /);
    const queueId = /queued as ([A-Z0-9]+)/.exec(accepted)![1]!;
    await stopped;

    // Nothing lost: the whole upload is published, the accepted message was delivered or is still queued.
    expect(readFileSync(path.join(root, 'big.txt')).length).toBe(400_000);
    expect(readdirSync(root).filter((n) => n.startsWith('.~mw-upload-'))).toEqual([]);
    const delivered = sink.messages.some((m) => m.raw.toString().includes('in flight at SIGTERM'));
    const state = openState(t.dataDir);
    const queued = state.mailQueue.list().some((m) => m.id === queueId);
    state.close();
    expect(delivered || queued).toBe(true);
    idleSmtp.close();
    busySmtp.close();
  });
});

describe('graceful stop past its grace', () => {
  it('cuts a stalled FTP upload cleanly: nothing half-written is published', async () => {
    const t2 = await startTestSuite({
      main: { ftp: {} },
      tenants: { 'b.test': { domains: ['b.test'], ftp: [{ user: 'bob', password: await hashPassword(PASS) }] } },
    });
    try {
      const ftp = await ftpLogin(t2.ftp!, 'bob@b.test', PASS);
      const upload = new PassThrough();
      const uploaded = ftp.uploadFrom(upload, 'stalled.txt').then(
        () => 'completed',
        (e: Error) => e.message,
      );
      upload.write(Buffer.alloc(100_000, 'b'));
      const root = path.join(t2.sitesDir, 'b.test');
      await waitFor(() => readdirSync(root).some((n) => n.startsWith('.~mw-upload-') && statSync(path.join(root, n)).size > 0), 5_000, 'the upload to start');
      await t2.suite.stop(300);
      expect(await uploaded).not.toBe('completed');
      expect(readdirSync(root).filter((n) => !n.startsWith('.~mw-upload-'))).toEqual([]);
      ftp.close();
    } finally {
      await t2.stop();
    }
  });
});
