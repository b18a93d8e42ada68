/**
 * What is left of `buffers` once their first `written` bytes are out: for
 * writev loops, since the kernel may take only part of a vectored write
 * (near a full disk, or past IOV_MAX buffers). Empty buffers are dropped.
 */
export function afterWritten(buffers: readonly Buffer[], written: number): Buffer[] {
  let skip = written;
  const left: Buffer[] = [];
  for (const b of buffers) {
    if (b.length === 0) continue;
    if (skip >= b.length) skip -= b.length;
    else {
      left.push(skip > 0 ? b.subarray(skip) : b);
      skip = 0;
    }
  }
  return left;
}
