/**
 * Node's private stream internals, touched here only (named in
 * test/unit/lib/handles.test.ts, which fails when a Node release changes
 * them).
 */

/** The libuv handle of a socket or pipe stream, as Node keeps it (`_handle`). */
interface StreamHandle {
  readStop?: () => number;
  reading?: boolean;
}

/**
 * Stops this process reading from a pipe or socket it will hand over to
 * another process (Node has no public call for it): a stream Node creates
 * for a pipe, or for a handle it received, starts reading at once, and
 * what it reads here is lost to the process the handle goes to.
 */
export function holdReads(stream: unknown): void {
  const handle = (stream as { _handle?: StreamHandle } | null)?._handle;
  if (!handle?.readStop) return;
  handle.readStop();
  handle.reading = false;
}
