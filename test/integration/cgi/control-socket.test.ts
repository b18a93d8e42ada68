import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { detectSandbox } from '../../../src/cgi/sandbox.ts';
import { boxMissing, call } from '../../helpers/cgi.ts';
import { cli } from '../../helpers/cli.ts';
import { freePort } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

// The operator's mail control socket (`makewaves queue flush|delete`) is
// out of reach of tenants' handlers, which may run under the suite's own
// uid: data/ does not exist in their box, so they cannot even connect to
// the socket file; and every request must carry the token in a file only
// the operator's side can read (for any other process of that uid).

const fixture = (name: string) => readFileSync(path.join(import.meta.dirname, '../../fixtures/cgi', name));
let t: TestSuite;

beforeAll(async () => {
  // A relay nobody listens on: the handler's message stays queued.
  const relayPort = await freePort();
  t = await startTestSuite({
    main: { smtp: { listen: ['127.0.0.1:0'], relay: `smtp://127.0.0.1:${relayPort}`, queue: { minBackoff: 3600, maxBackoff: 3600 } } },
    tenants: { 'evil.test': { domains: ['evil.test'], cgi: true, forms: { recipients: ['owner@evil.example'] } } },
    // The service-user setup (`user:` in makewaves.yaml): handlers run under the suite's own uid.
    sandbox: (user) => detectSandbox(user, { uid: process.getuid!(), gid: process.getgid!() }),
    files: { 'evil.test/cgi-bin/control.js': fixture('control.js'), 'evil.test/cgi-bin/mailer.js': fixture('mailer.js') },
  });
});
afterAll(async () => {
  await t?.stop();
});

async function fromHandler(req: unknown): Promise<{ answer: { connected: boolean; reply?: string; error?: string }; token: { read: boolean } }> {
  const sock = path.join(t.dataDir, 'mail.sock');
  const q = new URLSearchParams({ sock, token: `${sock}.token`, req: JSON.stringify(req) });
  const res = await call(t.http, 'evil.test', `/cgi-bin/control?${q}`);
  expect(res.status).toBe(200);
  return (await res.json()) as Awaited<ReturnType<typeof fromHandler>>;
}

describe.skipIf(boxMissing)('mail control socket and tenants\' handlers', () => {
  it('refuses flush, delete and ping from a handler, while the operator\'s CLI still drives the queue', async () => {
    const sent = await call(t.http, 'evil.test', '/cgi-bin/mailer', { method: 'POST', body: JSON.stringify({ text: 'keep me' }) });
    const { id } = (await sent.json()) as { ok: boolean; id: string };
    expect(id).toMatch(/^[A-Z0-9]+$/i);
    await waitFor(() => t.suite.state.mailQueue.count() === 1, 5_000, 'the message queued');

    for (const req of [{ cmd: 'delete', id }, { cmd: 'flush' }, { cmd: 'ping' }, { cmd: 'delete', id, token: '' }, { cmd: 'flush', token: 'guess' }]) {
      const out = await fromHandler(req);
      // The socket is not in the handler's box: the server never hears the request.
      expect(out.answer).toMatchObject({ connected: false, error: 'ENOENT' });
      expect(out.token.read).toBe(false);
    }
    expect(t.suite.state.mailQueue.list().map((m) => m.id)).toEqual([id]);
    expect(t.logs().some((l) => l.msg === 'queue flush requested by the operator')).toBe(false);

    const flush = await cli('queue', 'flush', '--config', t.configDir);
    expect(flush).toMatchObject({ code: 0, out: 'flushing 1 queued message(s)\n' });
    expect(await cli('queue', 'delete', id, '--config', t.configDir)).toMatchObject({ code: 0, out: `deleted ${id}\n` });
    expect(t.suite.state.mailQueue.count()).toBe(0);
  });
});

/** One raw request line to the control socket from this process (the suite's own uid, no token file read). */
function direct(req: unknown): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const c = net.connect(path.join(t.dataDir, 'mail.sock'));
    let buf = '';
    c.setEncoding('utf8');
    c.once('connect', () => c.write(`${JSON.stringify(req)}\n`));
    c.on('data', (d: string) => (buf += d));
    c.once('end', () => resolve(JSON.parse(buf) as Record<string, unknown>));
    c.once('error', reject);
  });
}

describe('mail control socket and other processes of the suite\'s uid', () => {
  it('refuses flush and delete without the token or with a wrong one, logging why; the CLI with the token works', async () => {
    const sent = await call(t.http, 'evil.test', '/cgi-bin/mailer', { method: 'POST', body: JSON.stringify({ text: 'not yours to delete' }) });
    const { id } = (await sent.json()) as { ok: boolean; id: string };
    await waitFor(() => t.suite.state.mailQueue.list().some((m) => m.id === id), 5_000, 'the message queued');
    const right = readFileSync(path.join(t.dataDir, 'mail.sock.token'), 'utf8').trim();
    const wrong = `${right.slice(0, -1)}${right.endsWith('0') ? '1' : '0'}`; // same length, one character off
    const before = t.logs().filter((l) => l.msg === 'control request refused').length;
    const flushes = t.logs().filter((l) => l.msg === 'queue flush requested by the operator').length;
    const attempts = [{ cmd: 'flush' }, { cmd: 'delete', id }, { cmd: 'flush', token: '' }, { cmd: 'delete', id, token: 'guess' }, { cmd: 'flush', token: wrong }, { cmd: 'delete', id, token: wrong }, { cmd: 'delete', id, token: 42 }];
    for (const req of attempts) expect(await direct(req)).toEqual({ ok: false, error: 'not authorized' });
    const refused = t.logs().filter((l) => l.msg === 'control request refused').slice(before);
    expect(refused).toHaveLength(attempts.length);
    expect(refused.map((l) => l.cmd)).toEqual(attempts.map((a) => a.cmd));
    for (const l of refused) expect(l.why).toBe('missing or wrong token');
    expect(t.suite.state.mailQueue.list().some((m) => m.id === id)).toBe(true);
    expect(t.logs().filter((l) => l.msg === 'queue flush requested by the operator')).toHaveLength(flushes);

    expect(await direct({ cmd: 'ping', token: right })).toEqual({ ok: true });
    expect(await cli('queue', 'delete', id, '--config', t.configDir)).toMatchObject({ code: 0, out: `deleted ${id}\n` });
    expect(t.suite.state.mailQueue.list().some((m) => m.id === id)).toBe(false);
  });
});
