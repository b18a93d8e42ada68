import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveSwaks, queueDrained, smtpPort, swaks } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

/**
 * The next hop: a real smtp-server on loopback that refuses dead@ (550),
 * defers busy@ (451) and never answers RCPT for slow@ until released.
 */
interface Peer {
  url: string;
  got: Array<{ from: string; to: string[]; raw: string }>;
  stalled: Array<() => void>;
  sessions: number;
  close(): Promise<void>;
}

async function startPeer(): Promise<Peer> {
  const peer: Peer = { url: '', got: [], stalled: [], sessions: 0, close: async () => undefined };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    hideENHANCEDSTATUSCODES: true,
    logger: false,
    closeTimeout: 200,
    onConnect(_s, done) {
      peer.sessions++;
      done();
    },
    onRcptTo(address, _s, done) {
      const to = address.address;
      if (to.startsWith('dead@')) return done(Object.assign(new Error('5.1.1 <dead@remote.test>: no such user'), { responseCode: 550 }));
      if (to.startsWith('busy@')) return done(Object.assign(new Error('4.2.1 mailbox busy, try later'), { responseCode: 451 }));
      if (to.startsWith('slow@')) return void peer.stalled.push(() => done());
      done();
    },
    onData(stream, session, done) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        peer.got.push({ from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address), raw: Buffer.concat(chunks).toString() });
        done();
      });
    },
  });
  server.on('error', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  peer.url = `smtp://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
  peer.close = () => {
    for (const release of peer.stalled.splice(0)) release();
    return new Promise((resolve) => server.close(() => resolve()));
  };
  return peer;
}

let peer: Peer;
let t: TestSuite;
let port: number;

beforeAll(async () => {
  peer = await startPeer();
  t = await startTestSuite({
    main: {
      smtp: {
        listen: ['127.0.0.1:0'],
        relay: peer.url,
        waitForNextHop: 1.5,
        bouncesPerDomainPerHour: 2,
        queue: { minBackoff: 3600, maxBackoff: 3600 },
      },
    },
    tenants: {
      'a.test': {
        domains: ['a.test'],
        mail: { forward: { gone: 'dead@remote.test', soft: 'busy@remote.test', slow: 'slow@remote.test', ok: 'live@remote.test', mixed: ['dead@remote.test', 'live@remote.test'] } },
      },
    },
  });
  port = smtpPort(t.suite);
});
afterAll(async () => {
  await t?.stop();
  await peer?.close();
});

const queued = () => t.suite.state.mailQueue.list();
const dsnsTo = (who: string) => peer.got.filter((m) => m.from === '' && m.to.includes(who));

describe.skipIf(!haveSwaks)('backscatter: forwarded mail is offered to the next hop while the sender waits (swaks)', () => {
  it('a 550 from the next hop is the sender’s 550 in the session, and no bounce is ever sent', async () => {
    const r = await swaks(port, '--from', 'innocent@third.test', '--to', 'gone@a.test', '--header', 'Subject: forged');
    expect(r.out).toMatch(/<\*\*\s+550 5\.1\.1 .*no such user/);
    expect(r.code).not.toBe(0);
    expect(queued()).toEqual([]);
    expect(t.logs().some((l) => l.msg === 'refused by the next hop while the sender waited: no bounce')).toBe(true);
    // Let anything that would bounce run: the queue is empty and nothing went to the innocent third party.
    await queueDrained(t.suite);
    expect(dsnsTo('innocent@third.test')).toEqual([]);
  });

  it('a 451 from the next hop: 250 to the sender, the message waits in the durable queue', async () => {
    const r = await swaks(port, '--from', 's@third.test', '--to', 'soft@a.test');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/<-\s+250 2\.6\.0 Ok: queued as/);
    const q = queued();
    expect(q).toHaveLength(1);
    expect(q[0]!.attempts).toBe(1);
    expect(q[0]!.lastReply).toMatch(/^451 4\.2\.1 mailbox busy/);
  });

  it('a next hop that stalls past the deadline: 250 after the deadline, the message stays queued', async () => {
    const before = queued().length;
    const started = Date.now();
    const pending = swaks(port, '--from', 's@third.test', '--to', 'slow@a.test');
    // Asked while it is being stored; spooled and in state long before the deadline: a crash now loses nothing.
    await waitFor(() => peer.stalled.length > 0, 5_000, 'the stalled RCPT');
    await waitFor(() => queued().length === before + 1, 5_000, 'the queued message');
    const r = await pending;
    const took = Date.now() - started;
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/<-\s+250 2\.6\.0 Ok: queued as/);
    expect(took).toBeGreaterThanOrEqual(1_400);
    expect(took).toBeLessThan(10_000);
    expect(queued()).toHaveLength(before + 1);
    expect(t.logs().some((l) => l.msg === 'the next hop did not answer while the sender waited; the message is queued')).toBe(true);
  });

  it('delivered while the sender waits: 250 and the queue is empty; the relay connection is reused', async () => {
    const n = peer.got.length;
    for (const i of [1, 2]) {
      const r = await swaks(port, '--from', 's@third.test', '--to', 'ok@a.test', '--header', `Subject: ok ${i}`);
      expect(r.out).toMatch(/<-\s+250 2\.6\.0 Ok: queued as/);
    }
    // Delivered before the 250 was given: no polling needed.
    expect(peer.got.length).toBe(n + 2);
    expect(queued().some((m) => m.sender.includes('ok'))).toBe(false);
    const sessions = peer.sessions;
    await swaks(port, '--from', 's@third.test', '--to', 'ok@a.test');
    expect(peer.sessions).toBe(sessions);
  });

  it('the next hop took it but it could not be stored here: 452 to the sender (it sends again), logged, nothing left queued', async () => {
    const n = peer.got.length;
    const before = queued().length;
    t.suite.state.db.exec(`CREATE TEMP TRIGGER refuse_row BEFORE INSERT ON mail_queue WHEN NEW.return_path = 'unlucky@third.test' BEGIN SELECT RAISE(ABORT, 'disk full'); END`);
    try {
      const r = await swaks(port, '--from', 'unlucky@third.test', '--to', 'ok@a.test', '--header', 'Subject: not stored');
      expect(r.out).toMatch(/<\*\*\s+452 4\.3\.1 Cannot queue the message now, try again later/);
    } finally {
      t.suite.state.db.exec('DROP TRIGGER refuse_row');
    }
    expect(queued()).toHaveLength(before);
    await waitFor(() => t.logs().find((l) => l.msg === 'the next hop took a message that could not be queued here; its sender was told to retry, so it may arrive twice'), 5_000, 'the warning');
    expect(peer.got.slice(n).map((m) => m.from)).toEqual([expect.stringContaining('unlucky')]);
  });

  it('a partly refused message is accepted; its bounce carries headers only and is rate-limited per domain', async () => {
    const body = 'the secret body text';
    for (const i of [1, 2, 3]) {
      const r = await swaks(port, '--from', `s${i}@flood.test`, '--to', 'mixed@a.test', '--header', `Subject: mixed ${i}`, '--body', body);
      expect(r.out).toMatch(/<-\s+250 2\.6\.0 Ok: queued as/);
    }
    await waitFor(() => t.logs().some((l) => l.msg === 'bounce not sent: too many bounces to this domain in the last hour'), 5_000, 'the rate limit');
    await waitFor(() => peer.got.filter((m) => m.from === '' && m.to[0]!.endsWith('@flood.test')).length === 2, 5_000, 'two bounces');
    const dsns = peer.got.filter((m) => m.from === '' && m.to[0]!.endsWith('@flood.test'));
    expect(dsns.map((d) => d.to[0]).sort()).toEqual(['s1@flood.test', 's2@flood.test']);
    for (const d of dsns) {
      expect(d.raw).toMatch(/^Subject: mixed \d$/m);
      expect(d.raw).not.toContain(body);
    }
  });
});
