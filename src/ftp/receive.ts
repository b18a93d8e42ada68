import { writev, writevSync } from 'node:fs';
import { Socket, type OnReadOpts } from 'node:net';
import { afterWritten } from '../lib/buffers.ts';

/** A write to the upload's file failed: the disk's fault, not the client's. */
export class DiskError extends Error {
  constructor(override readonly cause: NodeJS.ErrnoException) {
    super(cause.message);
  }
}

/**
 * Bytes that may wait in memory while a write is in flight; past this the
 * data connection is read no further until that write completes. An upload
 * holds at most twice this (the batch being written and the next one).
 */
const QUEUE_LIMIT = 1024 * 1024;

/** An upload smaller than this is written in one piece once it has all arrived. */
export const SMALL_UPLOAD = 64 * 1024;

/**
 * Copies an upload's data connection into the open file `fd` (written at
 * its current position), and calls `accept(chunk)` first for every chunk: false drops
 * the chunk (the quota cut keeps reading so the client can finish and read
 * the reply). Resolves when the client has closed its side and every byte
 * is written; rejects with a {@link DiskError} when a write fails (the
 * socket is destroyed), or with the socket's error when it fails or closes
 * without an end.
 *
 * Double-buffered by hand: the socket goes on being read while one writev
 * is in flight, and only a full second batch pauses it. A Writable with the
 * same budget pauses the socket for the whole of its second write (it
 * drains only when empty), which halved large-upload throughput here.
 */
export function receive(socket: Socket, fd: number, accept: (chunk: Buffer) => boolean): Promise<void> {
  // Cut before we got here (reset or ABOR while the 150 was going out): its 'close' has been and gone.
  if (socket.destroyed) return Promise.reject(new Error('data connection closed before the end of the upload'));
  const done = collect(socket, fd, accept);
  // A socket read the usual way (TLS) hands its chunks to the same sink, and is paused by hand
  // when the sink says so (direct reads are paused by Node on a false return).
  if (!direct.has(socket)) {
    const sink = sinks.get(socket)!;
    socket.on('data', (chunk: Buffer) => {
      if (!sink(chunk)) socket.pause();
    });
  }
  socket.resume();
  return done;
}

/** One writev, repeated for the rest when the kernel took only part (it may, near a full disk). */
async function writeAll(fd: number, buffers: Buffer[]): Promise<void> {
  let rest = buffers;
  while (rest.length > 0) {
    const written = await new Promise<number>((resolve, reject) => writev(fd, rest, (err, n) => (err ? reject(err) : resolve(n))));
    rest = afterWritten(rest, written);
  }
}

function writeAllSync(fd: number, buffers: Buffer[]): void {
  let rest = buffers;
  while (rest.length > 0) rest = afterWritten(rest, writevSync(fd, rest));
}

// ------------------------------------------------------------ direct reads

/**
 * Plain data connections are read into one shared buffer (Node's `onread`
 * option) and copied into 1 MiB chunks that are reused from upload to
 * upload. Read the usual way, every 64 KiB read is a new Buffer whose
 * memory V8 counts as external: a 100 MiB upload set off several full
 * garbage collections on four helper threads (seen with --trace-gc:
 * "external memory pressure"), which on two cores took the CPU the upload
 * needed, and the more so after an idle spell. TLS data connections are
 * read by their TLS layer, and their chunks copied the same way.
 */
const SHARED_READ = Buffer.allocUnsafeSlow(256 * 1024);
const CHUNK = 1024 * 1024;
/**
 * Spare buffers kept for the next uploads (more are made when many run at
 * once): an upload's first SMALL_UPLOAD bytes go into a small one, so a
 * connection that trickles a few bytes holds 64 KiB, not 1 MiB.
 */
const spares = new Map<number, { max: number; list: Buffer[] }>([
  [SMALL_UPLOAD, { max: 64, list: [] }],
  [CHUNK, { max: 8, list: [] }],
]);
const take = (size: number): Buffer => spares.get(size)!.list.pop() ?? Buffer.allocUnsafeSlow(size);
const give = (b: Buffer): void => {
  const pool = spares.get(b.length)!;
  if (pool.list.length < pool.max) pool.list.push(b);
};

/** Sockets read into SHARED_READ, and what consumes their reads (a copy must be taken before it returns). */
const direct = new WeakSet<Socket>();
const sinks = new WeakMap<Socket, (chunk: Buffer) => boolean>();

/** The `onread` option for a socket about to be made (active mode); `register` it once it exists. */
export function directReadOptions(): { onread: OnReadOpts; register(s: Socket): void } {
  let socket: Socket | undefined;
  return {
    onread: { buffer: SHARED_READ, callback: (n) => (socket ? (sinks.get(socket)?.(SHARED_READ.subarray(0, n)) ?? true) : true) },
    register(s) {
      socket = s;
      direct.add(s);
    },
  };
}

/**
 * Takes over an accepted connection (passive mode, still paused) as a
 * socket with direct reads: Node's public `onread` exists only for sockets
 * it creates on connect, so the accepted socket's handle is moved to a new
 * Socket made with it. Reading starts at the first resume(), as before.
 * Node's private `Socket#_handle` is touched here only (its shape is
 * checked by test/unit/ftp/receive.test.ts).
 */
export function adoptForDirectReads(raw: Socket): Socket {
  // The old Socket object is left without a handle and forgotten; its listener still counts it
  // as a connection (nothing here waits for that listener's 'close', which is why this is safe).
  const holder = raw as unknown as { _handle: unknown };
  const handle = holder._handle;
  holder._handle = null;
  const { onread, register } = directReadOptions();
  const s = new Socket({ handle, pauseOnCreate: true, readable: true, writable: true, onread } as ConstructorParameters<typeof Socket>[0]);
  register(s);
  return s;
}

/**
 * What receive() runs: registers the socket's sink (which copies each
 * chunk into pooled buffers) and writes them out, one writev in flight.
 */
function collect(socket: Socket, fd: number, accept: (chunk: Buffer) => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    let fill: Buffer | undefined;
    let fillLen = 0;
    /** Filled chunks waiting for the next write. */
    const waiting: Array<{ buf: Buffer; len: number }> = [];
    let waitingBytes = 0;
    /** The chunks of the write in flight: back to the pool only when it has finished. */
    let inFlight: Buffer[] | undefined;
    let total = 0;
    let ended = false;
    let settled = false;
    let wroteAny = false;
    /** Set when the upload failed while a write was in flight: told once that write is done (see receive()). */
    let failure: Error | undefined;
    const releaseIdle = () => {
      if (fill) give(fill);
      fill = undefined;
      for (const w of waiting.splice(0)) give(w.buf);
    };
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      sinks.delete(socket);
      if (!err) {
        releaseIdle();
        return resolve();
      }
      socket.destroy();
      if (inFlight) failure = err;
      else {
        releaseIdle();
        reject(err);
      }
    };
    const seal = () => {
      if (!fill || fillLen === 0) return;
      waiting.push({ buf: fill, len: fillLen });
      waitingBytes += fillLen;
      fill = undefined;
      fillLen = 0;
    };
    const pump = () => {
      if (inFlight || settled) return;
      // Nothing is written until a first batch fills or the upload ends (see SMALL_UPLOAD).
      if (!wroteAny && !ended && waitingBytes + fillLen < SMALL_UPLOAD) return;
      seal();
      if (waiting.length === 0) {
        if (ended) finish();
        return;
      }
      const batch = waiting.splice(0);
      waitingBytes = 0;
      const views = batch.map((w) => w.buf.subarray(0, w.len));
      const small = ended && !wroteAny && total < SMALL_UPLOAD;
      wroteAny = true;
      if (small) {
        try {
          writeAllSync(fd, views);
        } catch (err) {
          for (const w of batch) give(w.buf);
          return finish(new DiskError(err as NodeJS.ErrnoException));
        }
        for (const w of batch) give(w.buf);
        return finish();
      }
      inFlight = batch.map((w) => w.buf);
      // A read callback that returned false stopped reading without pausing the stream, so
      // isPaused() cannot tell; resume() restarts a stopped direct read and is a no-op otherwise.
      if (!ended) socket.resume();
      const done = (err?: NodeJS.ErrnoException) => {
        for (const b of inFlight!) give(b);
        inFlight = undefined;
        if (settled) {
          releaseIdle();
          if (failure) reject(failure);
          return;
        }
        if (err) return finish(new DiskError(err));
        pump();
      };
      writeAll(fd, views).then(() => done(), done);
    };
    sinks.set(socket, (chunk) => {
      if (settled || !accept(chunk)) return true;
      total += chunk.length;
      for (let at = 0; at < chunk.length; ) {
        if (!fill) {
          fill = take(total - (chunk.length - at) < SMALL_UPLOAD ? SMALL_UPLOAD : CHUNK);
          fillLen = 0;
        }
        const n = chunk.copy(fill, fillLen, at);
        fillLen += n;
        at += n;
        if (fillLen === fill.length) seal();
      }
      if (!inFlight) pump();
      // false: the socket is paused until the write in flight is done (pump resumes it).
      return !(inFlight && waitingBytes + fillLen >= QUEUE_LIMIT);
    });
    socket.once('end', () => {
      ended = true;
      pump();
    });
    socket.once('error', (err) => finish(err));
    socket.once('close', () => {
      if (!ended) finish(new Error('data connection closed before the end of the upload'));
    });
  });
}
