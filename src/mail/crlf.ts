const CR = 13;
const LF = 10;
const CRLF = Buffer.from('\r\n');
const EMPTY = Buffer.alloc(0);

/**
 * Turns every bare CR and bare LF of a message into CRLF, across chunk
 * boundaries. RFC 5321 §2.3.8 allows CR and LF only together as a line end.
 * smtp-server already ends DATA only at <CRLF>.<CRLF>, so the CVE-2023-51764
 * sequences (`\n.\n`, `\r.\r`, `\n.\r\n`) cannot end a message here; but
 * passed on unchanged they could end it at the next hop, which may be
 * lenient. Normalised, each becomes an ordinary line holding a dot, which
 * the outbound client dot-stuffs (RFC 5321 §4.5.2). Postfix does the same
 * with `smtpd_forbid_bare_newline = normalize`.
 */
export class CrlfNormalizer {
  /** The previous chunk ended in a CR whose partner is not known yet. */
  private pendingCr = false;

  push(chunk: Buffer): Buffer {
    if (!this.pendingCr && isClean(chunk)) return chunk;
    const out = Buffer.allocUnsafe(chunk.length * 2 + 2);
    let o = 0;
    let i = 0;
    if (this.pendingCr) {
      this.pendingCr = false;
      out[o++] = CR;
      out[o++] = LF;
      if (chunk[0] === LF) i = 1;
    }
    for (; i < chunk.length; i++) {
      const c = chunk[i]!;
      if (c === CR) {
        if (i + 1 === chunk.length) {
          this.pendingCr = true;
        } else {
          out[o++] = CR;
          out[o++] = LF;
          if (chunk[i + 1] === LF) i++;
        }
      } else if (c === LF) {
        out[o++] = CR;
        out[o++] = LF;
      } else {
        out[o++] = c;
      }
    }
    return out.subarray(0, o);
  }

  /** What is still held back at the end of the message. */
  end(): Buffer {
    if (!this.pendingCr) return EMPTY;
    this.pendingCr = false;
    return CRLF;
  }
}

/** True when every CR is followed by LF and every LF preceded by CR, and the chunk does not end in CR. */
function isClean(chunk: Buffer): boolean {
  let i = chunk.indexOf(LF);
  while (i !== -1) {
    if (i === 0 || chunk[i - 1] !== CR) return false;
    i = chunk.indexOf(LF, i + 1);
  }
  i = chunk.indexOf(CR);
  while (i !== -1) {
    if (chunk[i + 1] !== LF) return false;
    i = chunk.indexOf(CR, i + 1);
  }
  return true;
}

/** Normalises a whole async stream of chunks. */
export async function* normalizeCrlf(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const n = new CrlfNormalizer();
  for await (const chunk of source) {
    const out = n.push(chunk);
    if (out.length > 0) yield out;
  }
  const tail = n.end();
  if (tail.length > 0) yield tail;
}
