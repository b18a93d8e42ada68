import { createHash, pbkdf2 } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adoptForDirectReads, DiskError, receive } from '../../../src/ftp/receive.ts';

let dir: string;
let server: Server;
let port: number;
const accepted: Array<(s: Socket) => void> = [];

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'mw-receive-'));
  server = createServer({ pauseOnConnect: true }, (s) => accepted.shift()!(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as { port: number }).port;
});
afterAll(() => {
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A data connection as the FTP service gets it (paused on accept; plain ones
 * then moved to direct reads, TLS ones read as a stream), and the client's end.
 */
async function pair(mode: 'direct' | 'stream'): Promise<{ server: Socket; client: Socket }> {
  const got = new Promise<Socket>((r) => accepted.push(r));
  const client = connect(port, '127.0.0.1');
  client.on('error', () => undefined);
  const raw = await got;
  return { server: mode === 'direct' ? adoptForDirectReads(raw) : raw, client };
}

/** Writes `data` in chunks of uneven sizes, with backpressure, then ends. */
async function send(client: Socket, data: Buffer): Promise<void> {
  const sizes = [1, 7_000, 65_536, 300_001, 13];
  for (let at = 0, i = 0; at < data.length; i++) {
    const chunk = data.subarray(at, at + sizes[i % sizes.length]!);
    at += chunk.length;
    if (!client.write(chunk)) await new Promise((r) => client.once('drain', r));
  }
  client.end();
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe("adoptForDirectReads (Node's private Socket#_handle, used only in src/ftp/receive.ts)", () => {
  it('finds the handle of an accepted socket in _handle and moves it to the new socket, which reads', async () => {
    const got = new Promise<Socket>((r) => accepted.push(r));
    const client = connect(port, '127.0.0.1');
    const raw = await got;
    expect(typeof (raw as unknown as { _handle: unknown })._handle, 'net.Socket#_handle').toBe('object');
    expect((raw as unknown as { _handle: unknown })._handle).not.toBeNull();
    const s = adoptForDirectReads(raw);
    expect((raw as unknown as { _handle: unknown })._handle).toBeNull();
    const fd = openSync(path.join(dir, 'adopted'), 'wx');
    const done = receive(s, fd, () => true);
    client.end('moved');
    await done;
    closeSync(fd);
    expect(readFileSync(path.join(dir, 'adopted'), 'utf8')).toBe('moved');
  });
});

describe.each(['direct', 'stream'] as const)('receive (an upload from its data connection into a file), %s reads', (mode) => {
  it('stores a small upload whole (written in one piece at the end)', async () => {
    const { server: s, client } = await pair(mode);
    const file = path.join(dir, `small-${mode}`);
    const fd = openSync(file, 'wx');
    const done = receive(s, fd, () => true);
    client.end('<html>small page</html>');
    await done;
    closeSync(fd);
    expect(readFileSync(file, 'utf8')).toBe('<html>small page</html>');
  });

  it('stores a large upload byte for byte while reading on during writes', async () => {
    const data = Buffer.alloc(6 * 1024 * 1024 + 12_344);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i, i);
    const { server: s, client } = await pair(mode);
    const file = path.join(dir, `large-${mode}`);
    const fd = openSync(file, 'wx');
    const done = receive(s, fd, () => true);
    await send(client, data);
    await done;
    closeSync(fd);
    expect(sha(readFileSync(file))).toBe(sha(data));
  });

  it('appends at the file position (a kept prefix stays) and drops the chunks accept() refuses', async () => {
    const file = path.join(dir, `append-${mode}`);
    writeFileSync(file, 'prefix:');
    const { server: s, client } = await pair(mode);
    const fd = openSync(file, 'a');
    let allowed = 100_000;
    const done = receive(s, fd, (chunk) => (allowed -= chunk.length) >= 0);
    const data = Buffer.alloc(400_000, 0x41);
    await send(client, data);
    await done;
    closeSync(fd);
    const stored = readFileSync(file);
    expect(stored.subarray(0, 7).toString()).toBe('prefix:');
    expect(stored.length).toBeLessThanOrEqual(7 + 100_000);
    expect(stored.subarray(7).every((b) => b === 0x41)).toBe(true);
  });

  it('rejects (not as a disk error) when the connection closes before the end of the upload (ABOR, idle sweep)', async () => {
    const { server: s, client } = await pair(mode);
    const fd = openSync(path.join(dir, `cut-${mode}`), 'wx');
    // Cut from our side (as ABOR and the idle sweep do) once the first data has come in.
    const done = receive(s, fd, () => {
      setImmediate(() => s.destroy());
      return true;
    });
    client.write(Buffer.alloc(10_000));
    const err = await done.then(() => undefined, (e: Error) => e);
    closeSync(fd);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(DiskError);
  });

  it('rejects at once when the connection was already cut before the upload was taken in (ABOR during the open)', async () => {
    const { server: s, client } = await pair(mode);
    const fd = openSync(path.join(dir, `precut-${mode}`), 'wx');
    s.destroy();
    await new Promise((r) => s.once('close', r)); // gone and done with before receive() is called
    const err = await receive(s, fd, () => true).then(() => undefined, (e: Error) => e);
    closeSync(fd);
    client.destroy();
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(DiskError);
  });

  it('settles only after the write in flight is done, so the caller never closes a file still being written', async () => {
    // Every thread-pool thread busy: the upload's write waits in the queue when the cut comes.
    const busy = Array.from({ length: 8 }, () => new Promise((r) => pbkdf2('x', 'y', 150_000, 32, 'sha256', r)));
    const fileA = path.join(dir, `inflight-a-${mode}`);
    const fileB = path.join(dir, `inflight-b-${mode}`);
    const { server: s, client } = await pair(mode);
    const fdA = openSync(fileA, 'wx');
    let got = 0;
    const done = receive(s, fdA, (chunk) => {
      got += chunk.length;
      if (got >= 128 * 1024) setImmediate(() => s.destroy()); // ABOR
      return true;
    });
    client.write(Buffer.alloc(256 * 1024, 0x41));
    await done.then(() => undefined, () => undefined);
    closeSync(fdA); // what the FTP service does next
    const fdB = openSync(fileB, 'wx'); // another upload, likely given the same number
    await Promise.all(busy);
    closeSync(fdB);
    client.destroy();
    expect(readFileSync(fileB).length).toBe(0);
    expect(readFileSync(fileA).length).toBeGreaterThan(0);
  });

  it('rejects with a DiskError naming the failed system call when the file cannot be written, small or large', async () => {
    for (const size of [100, 3 * 1024 * 1024]) {
      const file = path.join(dir, `ro-${mode}-${size}`);
      writeFileSync(file, '');
      const { server: s, client } = await pair(mode);
      const fd = openSync(file, 'r'); // writes fail with EBADF
      const done = receive(s, fd, () => true);
      void send(client, Buffer.alloc(size, 1)).catch(() => undefined);
      const err = await done.then(() => undefined, (e: Error) => e);
      closeSync(fd);
      client.destroy();
      expect(err).toBeInstanceOf(DiskError);
      expect((err as DiskError).cause.code).toBe('EBADF');
    }
  });
});
