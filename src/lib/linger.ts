import type { IncomingMessage } from 'node:http';

/** How much of a refused request's body is read and dropped, at most, before the connection is closed. */
export const LINGER_LIMITS = { ms: 5_000, bytes: 32 * 1024 * 1024 };

/**
 * For an answer given before the request's body was read (a refusal from its
 * headers, a limit reached part-way): reads what is left of the body and
 * drops it, for at most `limits.ms` and `limits.bytes`, then closes the
 * connection if the body has not ended by then. Closed at once instead, a
 * client still sending meets a broken pipe or a reset and may never read the
 * answer (curl: "Send failure"); nginx's lingering close does the same. A body
 * that ends within the limits leaves the connection open for the next
 * request. HTTP/2 needs none of this: a stream is reset on its own.
 */
export function lingerOnBody(req: IncomingMessage, limits = LINGER_LIMITS): void {
  if (req.httpVersionMajor !== 1 || req.complete) return;
  const socket = req.socket;
  let seen = 0;
  const stop = () => {
    clearTimeout(timer);
    req.off('data', drop);
    socket.destroy();
  };
  const drop = (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > limits.bytes) stop();
  };
  const timer = setTimeout(stop, limits.ms);
  timer.unref();
  req.once('end', () => clearTimeout(timer));
  req.once('close', () => clearTimeout(timer));
  // Whatever read it so far (a form parser that gave up) reads no more: the rest is dropped here.
  req.unpipe();
  req.on('data', drop);
  req.resume();
}
