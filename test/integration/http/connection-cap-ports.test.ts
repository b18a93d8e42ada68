import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';

// Two connections over the cap from one client address and one source port, to two listeners: TCP tells them apart
// by the listener's address and port, and so must the cap. Keyed by the client's address and port alone, the close
// of the one forgot that the other is over the cap, and every request of the other was served, uncounted: a way
// past the cap, one source port at a time.
const CAP = 1;
let t: TestSuite;
let one: URL;
let two: URL;
const sockets: net.Socket[] = [];

beforeAll(async () => {
  t = await startTestSuite({
    main: { http: { listen: ['127.0.0.1:0', '127.0.0.2:0'], maxConnectionsPerIp: CAP } },
    tenants: { 'a.test': { domains: ['a.test'] } },
    files: { 'a.test/index.html': 'home' },
  });
  [one, two] = t.suite.urls.http!.map((u) => new URL(u)) as [URL, URL];
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await t?.stop();
});

/** A connection from 127.0.0.1 (`localPort`, if given) to `to`, once connected. */
async function open(to: URL, localPort?: number): Promise<net.Socket> {
  const s = net.connect({ host: to.hostname, port: Number(to.port), localAddress: '127.0.0.1', ...(localPort ? { localPort } : {}) });
  s.on('error', () => undefined);
  s.setEncoding('latin1');
  sockets.push(s);
  await new Promise((r) => s.once('connect', r));
  return s;
}

/** What `s` gets back for one request, up to the end of the answer's head. */
function ask(s: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const on = (d: string) => {
      got += d;
      if (got.includes('\r\n\r\n')) {
        s.off('data', on);
        resolve(got);
      }
    };
    s.on('data', on);
    s.once('close', () => resolve(got));
    s.write('GET / HTTP/1.1\r\nHost: a.test\r\n\r\n');
  });
}

/** A local port nobody holds now. */
async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((r) => probe.close(r));
  return port;
}

describe('per-client HTTP connection cap, one source port to two listeners', () => {
  it('still refuses the one over the cap when the other closes', async () => {
    const held = await open(one);
    expect(await ask(held)).toMatch(/^HTTP\/1\.1 200 /);
    const port = await freePort();
    const first = await open(one, port);
    const second = await open(two, port);
    expect(first.localPort).toBe(second.localPort);
    // The first goes (answered 503, closed by the server): the second is over the cap still.
    expect(await ask(first)).toMatch(/^HTTP\/1\.1 503 /);
    if (!first.destroyed) await new Promise((r) => first.once('close', r));
    expect(await ask(second)).toMatch(/^HTTP\/1\.1 503 /);
  });
});
