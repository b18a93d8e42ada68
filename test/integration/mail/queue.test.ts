import path from 'node:path';
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/core/log.ts';
import { startSuite } from '../../../src/main.ts';
import { controlRequest } from '../../../src/core/control.ts';
import { freePort, type MailSink, queueDrained, smtpPort, startSink } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, writeConfig, type TestSuite, type TestSuiteOptions } from '../../helpers/suite.ts';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const tenants: TestSuiteOptions['tenants'] = {
  'a.test': { domains: ['a.test'], mail: { forward: { info: 'alice@remote.test', two: ['alice@remote.test', 'bob@remote.test'] } } },
};

async function suiteWith(relay: string, queue: Record<string, number> = {}): Promise<{ t: TestSuite; port: number }> {
  const t = await startTestSuite({
    main: { smtp: { listen: ['127.0.0.1:0'], relay, queue: { minBackoff: 0.2, maxBackoff: 0.4, ...queue } } },
    tenants,
  });
  cleanup.push(() => t.stop());
  return { t, port: smtpPort(t.suite) };
}

async function sink(port?: number): Promise<MailSink> {
  const s = await startSink(port);
  cleanup.push(() => s.close());
  return s;
}

function send(port: number, from: string, to: string[], subject = 'test'): Promise<unknown> {
  const c = nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true, name: 'client.test' });
  return c.sendMail({ envelope: { from, to }, raw: `From: <${from}>\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@client.test>\r\n\r\nbody\r\n` });
}

describe('queue: retry, flush, bounce', () => {
  it('keeps a message while the relay is down and delivers it after `queue flush` once it is up', async () => {
    const relayPort = await freePort();
    const { t, port } = await suiteWith(`smtp://127.0.0.1:${relayPort}`, { minBackoff: 3600, maxBackoff: 3600 });
    await send(port, 's@elsewhere.test', ['info@a.test'], 'waiting');
    await waitFor(() => t.logs().some((l) => l.msg === 'delivery attempt' && l.status === 'temp'), 5_000, 'a failed attempt');
    expect(t.suite.state.mailQueue.count()).toBe(1);
    const [m] = t.suite.state.mailQueue.list();
    expect(m!.attempts).toBe(1);
    expect(m!.nextAttempt - Date.now()).toBeGreaterThan(3_000_000);
    const relay = await sink(relayPort);
    const res = await controlRequest(path.join(t.dataDir, 'mail.sock'), { cmd: 'flush' });
    expect(res).toEqual({ ok: true, queued: 1 });
    await waitFor(() => relay.messages.length === 1, 5_000, 'delivery after flush');
    expect(relay.messages[0]!.raw.toString()).toContain('Subject: waiting');
    await queueDrained(t.suite);
  });

  it('reconnects to a relay that was restarted without a retry delay', async () => {
    const first = await startSink();
    const { t, port } = await suiteWith(first.url, { minBackoff: 3600, maxBackoff: 3600 });
    await send(port, 's@elsewhere.test', ['info@a.test'], 'before');
    await waitFor(() => first.messages.length === 1, 5_000, 'first delivery');
    await first.close();
    const second = await sink(first.port);
    await send(port, 's@elsewhere.test', ['info@a.test'], 'after');
    await waitFor(() => second.messages.length === 1, 5_000, 'delivery over a new connection');
    expect(t.logs().filter((l) => l.msg === 'delivery attempt' && l.status === 'temp')).toEqual([]);
  });

  it('retries a 4xx with backoff until it is accepted, without a flush', async () => {
    const relay = await sink();
    relay.rcptReply.set('alice@remote.test', [451, '4.2.0 try later']);
    const { t, port } = await suiteWith(relay.url);
    await send(port, 's@elsewhere.test', ['info@a.test'], 'retry');
    await waitFor(() => t.logs().filter((l) => l.msg === 'delivery attempt' && l.status === 'temp').length >= 2, 5_000, 'two deferrals');
    expect(t.suite.state.mailQueue.list()[0]!.lastReply).toMatch(/^451 4\.2\.0 try later/);
    relay.rcptReply.clear();
    await waitFor(() => relay.messages.length === 1, 5_000, 'delivery on retry');
    await queueDrained(t.suite);
  });

  it('bounces a 5xx to the original sender: RFC 3464 DSN from MAILER-DAEMON with a null envelope sender', async () => {
    const relay = await sink();
    relay.rcptReply.set('bob@remote.test', [550, '5.1.1 bob has left']);
    const { t, port } = await suiteWith(relay.url);
    await send(port, 'sender@elsewhere.test', ['two@a.test'], 'partly');
    await waitFor(() => relay.messages.length === 2, 5_000, 'delivery and DSN');
    const delivered = relay.messages.find((m) => m.to.includes('alice@remote.test'))!;
    expect(delivered.to).toEqual(['alice@remote.test']);
    const dsn = relay.messages.find((m) => m.to.includes('sender@elsewhere.test'))!;
    expect(dsn.from).toBe('');
    const text = dsn.raw.toString();
    expect(text).toMatch(/^From: Mail Delivery System <MAILER-DAEMON@mx\.test>$/m);
    expect(text).toMatch(/^Content-Type: multipart\/report; report-type=delivery-status; boundary=/m);
    expect(text).toMatch(/^Content-Type: message\/delivery-status$/m);
    expect(text).toMatch(/^Final-Recipient: rfc822; bob@remote\.test$/m);
    expect(text).toMatch(/^Original-Recipient: rfc822; two@a\.test$/m);
    expect(text).toMatch(/^Action: failed$/m);
    expect(text).toMatch(/^Status: 5\.1\.1$/m);
    expect(text).toMatch(/^Diagnostic-Code: smtp; 550 5\.1\.1 bob has left$/m);
    expect(text).toMatch(/^Content-Type: text\/rfc822-headers$/m);
    expect(text).toContain('Message-ID: <partly@client.test>');
    expect(text).not.toContain('\r\nbody\r\n');
    await queueDrained(t.suite);
  });

  it('never bounces a message whose sender is null', async () => {
    const relay = await sink();
    relay.rcptReply.set('alice@remote.test', [550, '5.1.1 gone']);
    const { t, port } = await suiteWith(relay.url);
    // Partly delivered (bob), so accepted: alice's failure comes later, and finds no one to bounce to.
    await send(port, '', ['two@a.test'], 'nullsender');
    await waitFor(() => t.logs().some((l) => l.msg === 'undeliverable message with a null sender: no bounce'), 5_000, 'no-bounce log');
    await queueDrained(t.suite);
    expect(relay.messages.map((m) => m.to)).toEqual([['bob@remote.test']]);
  });

  it('gives up after the lifetime and bounces with status 4.4.7', async () => {
    const relay = await sink();
    relay.rcptReply.set('alice@remote.test', [451, '4.3.0 still not']);
    const { t, port } = await suiteWith(relay.url, { lifetime: 0.5 });
    await send(port, 'sender@elsewhere.test', ['info@a.test'], 'expires');
    await waitFor(() => relay.messages.length === 1, 8_000, 'DSN');
    const text = relay.messages[0]!.raw.toString();
    expect(relay.messages[0]!.to).toEqual(['sender@elsewhere.test']);
    expect(text).toMatch(/^Status: 4\.4\.7$/m);
    expect(text).toMatch(/^Diagnostic-Code: smtp; 4\.4\.7 gave up after .* last reply: 451 4\.3\.0 still not$/m);
    await queueDrained(t.suite);
  });

  it('refuses `queue delete` of an unknown id and deletes a queued message', async () => {
    const { t, port } = await suiteWith(`smtp://127.0.0.1:${await freePort()}`, { minBackoff: 3600, maxBackoff: 3600 });
    await send(port, 's@elsewhere.test', ['info@a.test'], 'doomed');
    await waitFor(() => t.logs().some((l) => l.msg === 'delivery attempt'), 5_000, 'an attempt');
    const sock = path.join(t.dataDir, 'mail.sock');
    expect(await controlRequest(sock, { cmd: 'delete', id: 'NOSUCH' })).toEqual({ ok: false, error: 'no message NOSUCH in the queue' });
    const id = t.suite.state.mailQueue.list()[0]!.id;
    expect(await controlRequest(sock, { cmd: 'delete', id })).toEqual({ ok: true, deleted: true });
    expect(t.suite.state.mailQueue.count()).toBe(0);
  });
});

describe('large messages (streamed to a file of their own)', () => {
  it('forwards a 1 MB message byte for byte', async () => {
    const relay = await sink();
    const { t, port } = await suiteWith(relay.url);
    const body = Array.from({ length: 14_000 }, (_, i) => `line ${i} ${'z'.repeat(64)}`).join('\r\n');
    const c = nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true, name: 'client.test' });
    await c.sendMail({ envelope: { from: 's@elsewhere.test', to: ['info@a.test'] }, raw: `Subject: big\r\n\r\n${body}\r\n` });
    await waitFor(() => relay.messages.length === 1, 10_000, 'big message');
    const text = relay.messages[0]!.raw.toString();
    expect(text.slice(text.indexOf('Subject: big'))).toBe(`Subject: big\r\n\r\n${body}\r\n`);
    await queueDrained(t.suite);
    const { readdirSync } = await import('node:fs');
    expect(readdirSync(path.join(t.dataDir, 'spool', 'q')).filter((f) => f.startsWith('M'))).toEqual([]);
  });

  it('refuses DATA past maxMessageBytes on the streaming path too, leaving no file', async () => {
    const relay = await sink();
    const t = await startTestSuite({ main: { smtp: { listen: ['127.0.0.1:0'], relay: relay.url, maxMessageBytes: 200_000 } }, tenants });
    cleanup.push(() => t.stop());
    const port = smtpPort(t.suite);
    const c = nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true, name: 'client.test' });
    const err = await c
      .sendMail({ envelope: { from: 's@elsewhere.test', to: ['info@a.test'] }, raw: `Subject: huge\r\n\r\n${'y'.repeat(76)}\r\n`.repeat(4000) })
      .then(() => undefined, (e: Error & { responseCode?: number; response?: string }) => e);
    expect(err?.response).toMatch(/^552 5\.3\.4 /);
    const { readdirSync } = await import('node:fs');
    expect(readdirSync(path.join(t.dataDir, 'spool', 'tmp'))).toEqual([]);
    expect(readdirSync(path.join(t.dataDir, 'spool', 'q'))).toEqual([]);
    expect(t.suite.state.mailQueue.count()).toBe(0);
  });
});

describe('SRS', () => {
  it('a bounce to the SRS address goes back to the original sender', async () => {
    const relay = await sink();
    const { port } = await suiteWith(relay.url);
    await send(port, 'Bob.Original@elsewhere.test', ['info@a.test'], 'srs-out');
    await waitFor(() => relay.messages.length === 1, 5_000, 'forward');
    const srsAddr = relay.messages[0]!.from;
    expect(srsAddr).toMatch(/^SRS0=[A-Za-z0-9x]{6}=[A-Z2-7]{2}=elsewhere\.test=Bob\.Original@mx\.test$/);
    // The target's MX bounces it to the SRS address: we forward it to the original sender.
    await send(port, '', [srsAddr], 'srs-back');
    await waitFor(() => relay.messages.length === 2, 5_000, 'reverse');
    expect(relay.messages[1]!.to).toEqual(['bob.original@elsewhere.test']);
    expect(relay.messages[1]!.from).toBe('');
    // Case folded by a remote MTA still checks out.
    await send(port, '', [srsAddr.toUpperCase().replace('@MX.TEST', '@mx.test')], 'srs-folded');
    await waitFor(() => relay.messages.length === 3, 5_000, 'reverse of folded');
  });
});

describe('durability', () => {
  it('a message accepted while the relay is down is delivered by a new suite on the same data folder', async () => {
    const relayPort = await freePort();
    const t1 = await startTestSuite({
      main: { smtp: { listen: ['127.0.0.1:0'], relay: `smtp://127.0.0.1:${relayPort}`, queue: { minBackoff: 3600 } } },
      tenants,
    });
    let t1Stopped = false;
    cleanup.push(async () => {
      if (!t1Stopped) await t1.stop();
    });
    await send(smtpPort(t1.suite), 's@elsewhere.test', ['info@a.test'], 'survivor');
    expect(t1.suite.state.mailQueue.count()).toBe(1);
    await t1.suite.stop(0);
    t1Stopped = true;
    const relay = await sink(relayPort);
    writeConfig(t1.dir, { main: { smtp: { listen: ['127.0.0.1:0'], relay: relay.url } }, tenants });
    const suite2 = await startSuite({ configDir: t1.configDir, watch: false, log: createLogger({ level: 'silent' }) });
    cleanup.push(async () => {
      await suite2.stop(500);
      const { rmSync } = await import('node:fs');
      rmSync(t1.dir, { recursive: true, force: true });
    });
    await waitFor(() => relay.messages.length === 1, 5_000, 'delivery after restart');
    expect(relay.messages[0]!.raw.toString()).toContain('Subject: survivor');
    await queueDrained(suite2);
  });

  it('MailSubmitter.submit() resolves once queued, and the message is delivered', async () => {
    const relay = await sink();
    const { t } = await suiteWith(relay.url);
    const id = await t.suite.mail!.submit({ from: 'form@a.test', to: ['alice@remote.test'], raw: Buffer.from('Subject: form\n\nbare lf\n'), tenant: 'a.test' });
    expect(id).toMatch(/^[A-Z0-9]+$/);
    await waitFor(() => relay.messages.length === 1, 5_000, 'submitted message');
    expect(relay.messages[0]!.from).toBe('form@a.test');
    // Line ends made CRLF, then signed (the sender's domain is a tenant's): two DKIM-Signature fields in front.
    const raw = relay.messages[0]!.raw.toString();
    expect(raw.replace(/^(?:DKIM-Signature:.*\r\n(?:[ \t].*\r\n)*){2}/, '')).toBe('Subject: form\r\n\r\nbare lf\r\n');
    expect(raw).toMatch(/^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/relaxed; d=a\.test;/);
  });
});
