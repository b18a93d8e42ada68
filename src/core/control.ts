import { readFileSync } from 'node:fs';
import net from 'node:net';

/**
 * The operator's control channel to the running server (`<data>/mail.sock`,
 * served by mail/control.ts): its wire protocol and the client the CLI uses.
 */

/** A request on the control socket: one JSON object per line (the wire form also carries `token`). */
export type ControlRequest = { cmd: 'flush' } | { cmd: 'delete'; id: string } | { cmd: 'ping' };
/** The answer: one JSON line. */
export type ControlResponse = { ok: true; queued?: number; deleted?: boolean } | { ok: false; error: string };

/** The file beside the socket that holds the current token. */
export function tokenPath(socketPath: string): string {
  return `${socketPath}.token`;
}

/**
 * Sends one request to the running server, with the token it wrote at
 * start. Rejects with a clear message when none is running, or when this
 * user may not read the token (not the server's user, not root).
 */
export function controlRequest(socketPath: string, req: ControlRequest, timeoutMs = 15_000): Promise<ControlResponse> {
  let token: string;
  try {
    token = readFileSync(tokenPath(socketPath), 'utf8').trim();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return Promise.reject(new Error(`no makewaves server is running with this data folder (nothing answers on ${socketPath})`));
    if (code === 'EACCES') return Promise.reject(new Error(`cannot read ${tokenPath(socketPath)}: run this as the user the server runs as, or as root`));
    return Promise.reject(err as Error);
  }
  return new Promise((resolve, reject) => {
    const c = net.connect(socketPath);
    let buf = '';
    c.setEncoding('utf8');
    c.setTimeout(timeoutMs, () => {
      c.destroy();
      reject(new Error('the running server did not answer in time'));
    });
    c.once('connect', () => c.write(`${JSON.stringify({ ...req, token })}\n`));
    c.on('data', (d: string) => (buf += d));
    c.once('end', () => {
      try {
        resolve(JSON.parse(buf) as ControlResponse);
      } catch {
        reject(new Error('the running server sent an unreadable answer'));
      }
    });
    c.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
          ? new Error(`no makewaves server is running with this data folder (nothing answers on ${socketPath})`)
          : err,
      );
    });
  });
}
