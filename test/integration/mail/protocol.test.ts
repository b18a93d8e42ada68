import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MailSink, queueDrained, RawSmtp, smtpPort, startRelaySuite, stopRelaySuite } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

let sink: MailSink;
let t: TestSuite;
let port: number;

beforeAll(async () => {
  ({ sink, t, port } = await startRelaySuite({
    smtp: { maxMessageBytes: 20_000, maxRecipients: 3 },
    tenants: {
      'a.test': { domains: ['a.test'], mail: { forward: { info: 'alice@remote.test', loop: 'loop@a.test' } } },
      'b.test': { domains: ['b.test'], mail: { catchAll: 'carol@remote.test' } },
    },
  }));
});
afterAll(() => stopRelaySuite(t, sink));

async function session(): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  expect(c.greeting).toMatch(/^220 mx\.test ESMTP/);
  expect(await c.cmd('EHLO client.test')).toMatch(/^250 /m);
  return c;
}

describe('RCPT refusals over the wire', () => {
  const table: Array<[string, RegExp]> = [
    ['<info@a.test>', /^250 2\.1\.5 /],
    ['<anyone@b.test>', /^250 2\.1\.5 /],
    ['<nobody@a.test>', /^550 5\.1\.1 <nobody@a\.test>: no such recipient here$/],
    ['<x@other.test>', /^550 5\.7\.1 <x@other\.test>: relay access denied$/],
    ['<@a.test:x@other.test>', /^550 5\.7\.1 /],
    ['<@other.test:info@a.test>', /^250 /],
    ['<x%other.test@a.test>', /^550 5\.7\.1 /],
    ['<other.test!x@a.test>', /^550 5\.7\.1 /],
    ['<"x%other.test"@a.test>', /^550 5\.7\.1 /],
    ['<"x@other.test"@a.test>', /^5\d\d /],
    ['<x@[127.0.0.1]>', /^550 5\.7\.1 /],
    ['<loop@a.test>', /^550 5\.4\.6 /],
    ['<SRS0=abcd=AA=remote.test=x@mx.test>', /^550 5\.7\.1 .*SRS hash does not match/],
  ];
  it.each(table)('RCPT TO:%s', async (rcpt, want) => {
    const c = await session();
    expect(await c.cmd('MAIL FROM:<s@elsewhere.test>')).toMatch(/^250 2\.1\.0/);
    expect(await c.cmd(`RCPT TO:${rcpt}`)).toMatch(want);
    c.close();
  });

  it('logs each refusal with the connection id and reason', () => {
    const line = t.logs().find((l) => l.msg === 'RCPT refused: relay-denied' && l.rcpt === 'x@other.test');
    expect(line).toBeDefined();
    expect(line!.conn).toEqual(expect.any(String));
    expect(line!.remote).toBe('127.0.0.1');
  });

  it('refuses the recipient after maxRecipients with 452 4.5.3', async () => {
    const c = await session();
    await c.cmd('MAIL FROM:<s@elsewhere.test>');
    for (const r of ['a1', 'a2', 'a3']) expect(await c.cmd(`RCPT TO:<${r}@b.test>`)).toMatch(/^250/);
    expect(await c.cmd('RCPT TO:<a4@b.test>')).toMatch(/^452 4\.5\.3 /);
    c.close();
  });
});

describe('size', () => {
  it('refuses SIZE= over the limit at MAIL FROM with 552 5.3.4', async () => {
    const c = await session();
    expect(await c.cmd('MAIL FROM:<s@elsewhere.test> SIZE=20001')).toMatch(/^552 5\.3\.4 /);
    expect(await c.cmd('MAIL FROM:<s@elsewhere.test> SIZE=20000')).toMatch(/^250/);
    c.close();
  });

  it('refuses an oversized DATA with 552 5.3.4, keeps nothing, and the session goes on', async () => {
    const before = sink.messages.length;
    const c = await session();
    await c.cmd('MAIL FROM:<s@elsewhere.test>');
    await c.cmd('RCPT TO:<info@a.test>');
    expect(await c.cmd('DATA')).toMatch(/^354/);
    const line = `${'x'.repeat(998)}\r\n`;
    for (let i = 0; i < 100; i++) c.send(line);
    expect(await c.cmd('.')).toMatch(/^552 5\.3\.4 /);
    expect(await c.cmd('RSET')).toMatch(/^250/);
    c.close();
    expect(readdirSync(path.join(t.dataDir, 'spool', 'tmp'))).toEqual([]);
    expect(t.suite.state.mailQueue.count()).toBe(0);
    expect(sink.messages.length).toBe(before);
  });
});

describe('a client that goes away during DATA', () => {
  it('leaves nothing queued and logs it as the client\'s doing', async () => {
    const c = await session();
    await c.cmd('MAIL FROM:<s@elsewhere.test>');
    await c.cmd('RCPT TO:<info@a.test>');
    expect(await c.cmd('DATA')).toMatch(/^354/);
    c.send('Subject: cut\r\n\r\nhalf a mess');
    c.close();
    await waitFor(() => t.logs().some((l) => l.msg === 'client went away during DATA; message dropped before acceptance'), 5_000, 'the log line');
    expect(t.suite.state.mailQueue.count()).toBe(0);
    expect(readdirSync(path.join(t.dataDir, 'spool', 'tmp'))).toEqual([]);
  });
});

describe('SMTP smuggling (CVE-2023-51764): only <CR><LF>.<CR><LF> ends DATA', () => {
  const sequences: Array<[string, string]> = [
    ['\\n.\\n', '\n.\n'],
    ['\\r.\\r', '\r.\r'],
    ['\\n.\\r\\n', '\n.\r\n'],
    ['\\r\\n.\\n', '\r\n.\n'],
    ['\\r.\\r\\n', '\r.\r\n'],
    ['\\n.\\r', '\n.\r'],
  ];
  it.each(sequences)('%s followed by a second MAIL FROM makes one message', async (_name, seq) => {
    const before = sink.messages.length;
    const c = await session();
    await c.cmd('MAIL FROM:<s@elsewhere.test>');
    await c.cmd('RCPT TO:<info@a.test>');
    expect(await c.cmd('DATA')).toMatch(/^354/);
    c.send(
      `Subject: first\r\n\r\nbody${seq}MAIL FROM:<evil@elsewhere.test>\r\nRCPT TO:<anyone@b.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n`,
    );
    expect(await c.reply()).toMatch(/^250 2\.6\.0 Ok: queued as/);
    // Nothing else was taken as a command: the next reply is QUIT's.
    expect(await c.cmd('QUIT')).toMatch(/^221/);
    c.close();
    await queueDrained(t.suite);
    expect(sink.messages.length).toBe(before + 1);
    const m = sink.messages[before]!;
    expect(m.to).toEqual(['alice@remote.test']);
    const text = m.raw.toString('latin1');
    expect(text).toContain('Subject: smuggled');
    // Passed on with every line end as CRLF, so no lenient next hop can split it either.
    expect(text.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
  });
});

describe('faults and limits', () => {
  it('answers 452 4.3.1 when the spool cannot be written, and 250 again once it can', async () => {
    // A suite of its own: the spool has no open segment yet, and q/ is made a plain file.
    const own = await startTestSuite({ main: { smtp: { listen: ['127.0.0.1:0'], relay: sink.url } }, tenants: { 'a.test': { domains: ['a.test'], mail: { forward: { info: 'alice@remote.test' } } } } });
    try {
      const ownPort = smtpPort(own.suite);
      const q = path.join(own.dataDir, 'spool', 'q');
      rmSync(q, { recursive: true });
      writeFileSync(q, 'not a folder');
      const attempt = async () => {
        const c = await RawSmtp.connect(ownPort);
        await c.cmd('EHLO client.test');
        await c.cmd('MAIL FROM:<s@elsewhere.test>');
        await c.cmd('RCPT TO:<info@a.test>');
        await c.cmd('DATA');
        const r = await c.cmd('Subject: x\r\n\r\ny\r\n.');
        c.close();
        return r;
      };
      expect(await attempt()).toMatch(/^452 4\.3\.1 Cannot queue the message now, try again later \(ref \w+\)$/);
      expect(own.logs().some((l) => l.msg === 'could not queue a message' && l.level === 50)).toBe(true);
      expect(own.suite.state.mailQueue.count()).toBe(0);
      rmSync(q);
      mkdirSync(q);
      expect(await attempt()).toMatch(/^250 /);
      await queueDrained(own.suite);
    } finally {
      await own.stop();
    }
  });

  it('refuses a connection over maxConnectionsPerIp with 421 4.7.0', async () => {
    const own = await startTestSuite({ main: { smtp: { listen: ['127.0.0.1:0'], relay: sink.url, maxConnectionsPerIp: 3 } }, tenants: { 'a.test': { domains: ['a.test'] } } });
    try {
      const ownPort = smtpPort(own.suite);
      const open = [await RawSmtp.connect(ownPort), await RawSmtp.connect(ownPort), await RawSmtp.connect(ownPort)];
      for (const c of open) expect(c.greeting).toMatch(/^220 /);
      const extra = await RawSmtp.connect(ownPort);
      expect(extra.greeting).toMatch(/^421 4\.7\.0 Too many connections from your address/);
      extra.close();
      // One ends with QUIT: once the server has closed it, its slot is free.
      expect(await open[0]!.cmd('QUIT')).toMatch(/^221 /);
      await open[0]!.closed;
      const next = await RawSmtp.connect(ownPort);
      expect(next.greeting).toMatch(/^220 /);
      expect((await RawSmtp.connect(ownPort)).greeting).toMatch(/^421 4\.7\.0 /);
      for (const c of [...open, next]) c.close();
      expect(own.logs().some((l) => l.msg === 'refused: too many connections from this address' && l.remote === '127.0.0.1')).toBe(true);
    } finally {
      await own.stop();
    }
  });

  it('listens on every smtp.listen address, one server: a client through a listener that sees it as ::ffff:127.0.0.1 shares its budget', async () => {
    // A list of two failed the start ("Listen method has been called more than once without closing").
    const own = await startTestSuite({ main: { smtp: { listen: ['127.0.0.1:0', '[::ffff:127.0.0.1]:0'], maxConnectionsPerIp: 2 } }, tenants: { 'a.test': { domains: ['a.test'] } } });
    try {
      expect(own.suite.urls.smtp).toHaveLength(2);
      const [plainPort, mappedPort] = own.suite.urls.smtp!.map((u) => Number(new URL(u).port)) as [number, number];
      const open = [await RawSmtp.connect(plainPort), await RawSmtp.connect(mappedPort)];
      for (const c of open) expect(c.greeting).toMatch(/^220 /);
      const over = await RawSmtp.connect(mappedPort);
      expect(over.greeting).toMatch(/^421 4\.7\.0 Too many connections from your address/);
      over.close();
      // smtp-server reports a mapped client by its IPv4 address already.
      expect(own.logs().some((l) => l.msg === 'refused: too many connections from this address' && l.remote === '127.0.0.1')).toBe(true);
      expect(await open[1]!.cmd('QUIT')).toMatch(/^221 /);
      await open[1]!.closed;
      const next = await RawSmtp.connect(plainPort);
      expect(next.greeting).toMatch(/^220 /);
      for (const c of [open[0]!, next]) c.close();
    } finally {
      await own.stop();
    }
  });

  it('a stop lets a transaction under way through a further smtp.listen address finish (its 250), then ends', async () => {
    // The further listeners hand their connections to the one server, whose own listener knew nothing of them: the
    // stop went on at once (queue, database) under a message being received, as if the server had no session.
    const own = await startTestSuite({ main: { smtp: { listen: ['127.0.0.1:0', '127.0.0.1:0'] } }, tenants: { 'a.test': { domains: ['a.test'], mail: { forward: { info: 'alice@remote.test' } } } } });
    const further = Number(new URL(own.suite.urls.smtp![1]!).port);
    const c = await RawSmtp.connect(further);
    expect(await c.cmd('EHLO client.test')).toMatch(/^250 /m);
    expect(await c.cmd('MAIL FROM:<s@elsewhere.test>')).toMatch(/^250 /);
    expect(await c.cmd('RCPT TO:<info@a.test>')).toMatch(/^250 /);
    expect(await c.cmd('DATA')).toMatch(/^354 /);
    c.send('Subject: under way\r\n\r\nbody\r\n');
    // A grace long enough for the end of the message to come within it; the same stop again (a no-op) cleans up.
    const stop = own.suite.stop(10_000);
    expect(await c.cmd('.')).toMatch(/^250 /);
    c.close();
    await stop;
    await own.stop();
  });

  it('refuses a connection over maxConnections in all with 421', async () => {
    const own = await startTestSuite({ main: { smtp: { listen: ['127.0.0.1:0'], maxConnections: 2 } }, tenants: { 'a.test': { domains: ['a.test'] } } });
    try {
      const ownPort = smtpPort(own.suite);
      const open = [await RawSmtp.connect(ownPort), await RawSmtp.connect(ownPort)];
      for (const c of open) expect(c.greeting).toMatch(/^220 /);
      const extra = await RawSmtp.connect(ownPort);
      expect(extra.greeting).toMatch(/^421 .*Too many connected clients/);
      extra.close();
      for (const c of open) c.close();
    } finally {
      await own.stop();
    }
  });

  it('answers a client that talks before the greeting with 421 (the 100 ms greeting pause is kept)', async () => {
    const c = await RawSmtp.connectEarly(port, 'EHLO early.test\r\n');
    expect(c.greeting).toMatch(/^421 .*talk too soon/i);
    c.close();
  });
});
