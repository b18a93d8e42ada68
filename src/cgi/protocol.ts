/**
 * Frames between the suite and a handler process, over the child's stdin
 * and stdout (never Node's IPC channel: its JSON lines have no size limit,
 * so a hostile handler could make the suite buffer without end).
 *
 * A frame is `u32 length | u8 type | u32 run | payload`, big-endian, where
 * `length` counts the run id and the payload. `run` ties output to the
 * request it belongs to, so late writes of a finished run are dropped.
 * The layout is mirrored in runner.mjs.
 */
export const T = {
  /** suite → handler: u32 JSON length, JSON {handler, env, site}, then the body bytes. */
  request: 0x52,
  /** suite → handler: JSON {id, result} answering a mail request. */
  answer: 0x41,
  /** handler → suite: raw bytes the handler wrote to its stdout. */
  output: 0x4f,
  /** handler → suite: JSON {id, message} asking to send mail. */
  mail: 0x4d,
  /** handler → suite: JSON {error?} — the run is over. */
  end: 0x45,
} as const;

export interface Frame {
  type: number;
  run: number;
  payload: Buffer;
}

/** Encodes one frame. */
export function encodeFrame(type: number, run: number, payload: Buffer): Buffer {
  const head = Buffer.allocUnsafe(9);
  head.writeUInt32BE(payload.length + 4, 0);
  head[4] = type;
  head.writeUInt32BE(run, 5);
  return Buffer.concat([head, payload]);
}

/** Encodes a request frame: its metadata as JSON, then the body. */
export function encodeRequest(run: number, meta: unknown, body: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify(meta));
  const len = Buffer.allocUnsafe(4);
  len.writeUInt32BE(json.length, 0);
  return encodeFrame(T.request, run, Buffer.concat([len, json, body]));
}

/**
 * Splits a byte stream into frames. A frame announcing more than `maxFrame`
 * bytes, or shorter than its own header, makes {@link push} throw before
 * anything is buffered for it: the caller kills the process.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly maxFrame: number) {}

  /** Adds bytes; returns the frames now complete. Throws a RangeError on a frame that breaks the limits. */
  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.size += chunk.length;
    const frames: Frame[] = [];
    for (;;) {
      if (this.size < 5) break;
      const head = this.peek(5);
      const len = head.readUInt32BE(0);
      if (len < 4 || len > this.maxFrame) throw new RangeError(`frame of ${len} bytes (limit ${this.maxFrame})`);
      if (this.size < 5 + len) break;
      const all = this.take(5 + len);
      frames.push({ type: all[4]!, run: all.readUInt32BE(5), payload: all.subarray(9) });
    }
    return frames;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!;
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined;
  }

  private take(n: number): Buffer {
    const joined = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.chunks = joined.length > n ? [joined.subarray(n)] : [];
    this.size -= n;
    return joined.subarray(0, n);
  }
}
