/** RFC 5322 §2.1.1: a line is at most 998 characters, not counting its CRLF. */
export const MAX_LINE = 998;

/**
 * Looks at a message as it streams in (after CRLF normalisation) for the
 * facts acceptance and delivery need without keeping it: whether a line is
 * longer than RFC 5322 allows, and whether the header section holds 8-bit
 * bytes (RFC 6532 UTF-8 headers, which a next hop may take only with
 * SMTPUTF8). Chunks may split lines anywhere.
 */
export class MessageScan {
  /** The longest finished line, in octets without its CRLF. */
  private longestLine = 0;
  /** True once a byte ≥ 0x80 was seen before the end of the header section. */
  eightBitHeaders = false;
  private line = 0;
  /** Until the first empty line (RFC 5322 §2.1). */
  private inHeaders = true;

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const lf = chunk.indexOf(10, start);
      const end = lf === -1 ? chunk.length : lf;
      if (this.inHeaders && !this.eightBitHeaders) {
        for (let i = start; i < end; i++) {
          if (chunk[i]! >= 0x80) {
            this.eightBitHeaders = true;
            break;
          }
        }
      }
      this.line += end - start;
      if (lf === -1) return;
      // The CR before this LF is not part of the line.
      const length = this.line > 0 ? this.line - 1 : 0;
      if (length > this.longestLine) this.longestLine = length;
      if (this.inHeaders && length === 0) this.inHeaders = false;
      this.line = 0;
      start = lf + 1;
    }
  }

  /** The longest line so far, the unfinished last one included. */
  get longest(): number {
    return Math.max(this.longestLine, this.line);
  }

  /** True when some line (the last one included, even without its CRLF) is longer than {@link MAX_LINE}. */
  get tooLong(): boolean {
    return this.longest > MAX_LINE;
  }
}

/** Passes `source` through unchanged while `scan` looks at each chunk. */
export async function* scanned(source: AsyncIterable<Buffer>, scan: MessageScan): AsyncGenerator<Buffer> {
  for await (const chunk of source) {
    scan.push(chunk);
    yield chunk;
  }
}
