import { once } from 'node:events';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { lingerOnBody } from '../../../src/lib/linger.ts';

// A server that refuses every upload from its headers with 413, then lingers on the body within `limits`.
async function refusingServer(limits: { ms: number; bytes: number }): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    res.writeHead(413, { 'content-type': 'text/plain', 'content-length': '9' });
    res.end('too large');
    lingerOnBody(req, limits);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

/** Connects, sends an upload's head, and collects what comes back until the server closes. */
async function upload(server: http.Server, head: string): Promise<{ sock: net.Socket; answer: () => string; closed: Promise<unknown> }> {
  const sock = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
  await once(sock, 'connect');
  let text = '';
  sock.on('data', (d) => (text += d.toString('latin1')));
  sock.on('error', () => undefined /* a reset after the close is what some cases expect */);
  sock.write(head);
  return { sock, answer: () => text, closed: new Promise((resolve) => sock.on('close', resolve)) };
}

describe('lingerOnBody: what follows an early refusal', () => {
  let server: http.Server | undefined;
  afterEach(() => server?.close());

  it('closes a connection whose body never ends, once the time limit passes', async () => {
    server = await refusingServer({ ms: 150, bytes: 1 << 20 });
    const c = await upload(server, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n');
    const drip = setInterval(() => c.sock.writable && c.sock.write('x'.repeat(10)), 20);
    await c.closed;
    clearInterval(drip);
    expect(c.answer()).toMatch(/^HTTP\/1\.1 413 /);
    expect(c.answer()).toContain('too large');
  });

  it('closes a connection that sends more than the byte limit, well before the time limit', async () => {
    server = await refusingServer({ ms: 60_000, bytes: 64 * 1024 });
    const c = await upload(server, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n');
    const chunk = Buffer.alloc(16 * 1024, 0x61);
    let sent = 0;
    c.sock.on('drain', function more() {
      while (c.sock.writable && sent < 4 * 1024 * 1024 && c.sock.write(chunk)) sent += chunk.length;
    });
    c.sock.emit('drain');
    await c.closed;
    expect(c.answer()).toMatch(/^HTTP\/1\.1 413 /);
    expect(sent).toBeLessThan(4 * 1024 * 1024);
  });

  it('a body that ends within the limits leaves the connection open for the next request', async () => {
    server = await refusingServer({ ms: 60_000, bytes: 1 << 20 });
    const c = await upload(server, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n');
    c.sock.write('y'.repeat(5000));
    c.sock.write('GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    await c.closed;
    expect(c.answer().match(/HTTP\/1\.1 413 /g)).toHaveLength(2);
  });
});
