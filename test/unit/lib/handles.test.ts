import { once } from 'node:events';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { holdReads } from '../../../src/lib/handles.ts';

// Node's private stream internals, used only in src/lib/handles.ts: a Node release that changes them fails here.
describe("holdReads (Node's private Socket#_handle.readStop and .reading)", () => {
  it('stops a socket reading: what the peer writes stays in the kernel, for the process the handle goes to', async () => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    const [peer] = await accepted;
    try {
      const handle = (client as unknown as { _handle: { readStop?: unknown; reading?: unknown } })._handle;
      expect(typeof handle.readStop, 'Socket#_handle.readStop').toBe('function');
      expect(handle.reading, 'Socket#_handle.reading (a connected socket reads at once)').toBe(true);
      holdReads(client);
      expect(handle.reading).toBe(false);
      peer.end('written while held');
      await once(peer, 'finish');
      // Two turns of the event loop: an unheld socket has read the bytes by then (the row below without holdReads).
      await new Promise((r) => setTimeout(r, 0));
      await new Promise((r) => setImmediate(r));
      expect(client.bytesRead).toBe(0);
    } finally {
      client.destroy();
      peer.destroy();
      server.close();
    }
  });

  it('leaves a stream without a handle (ended, or not a socket) alone', () => {
    expect(() => holdReads(null)).not.toThrow();
    expect(() => holdReads({})).not.toThrow();
  });
});
