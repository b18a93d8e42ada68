import { chmodSync, existsSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import type { Logger } from '../core/log.ts';
import type { MailQueue } from './queue.ts';

/** A request on the control socket: one JSON object per line. */
export type ControlRequest = { cmd: 'flush' } | { cmd: 'delete'; id: string } | { cmd: 'ping' };
/** The answer: one JSON line. */
export type ControlResponse = { ok: true; queued?: number; deleted?: boolean } | { ok: false; error: string };

/**
 * How `makewaves queue flush|delete` reaches the running server: a Unix
 * socket `<data>/mail.sock`, mode 0600 (the file system decides who may
 * talk to it: whoever may write the data folder). A socket file left by a
 * crash is replaced; one that answers means another server owns this data
 * folder, and starting fails.
 */
export class ControlServer {
  private server: net.Server | undefined;

  constructor(
    readonly socketPath: string,
    private readonly queue: MailQueue,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    if (existsSync(this.socketPath)) {
      if (await isAlive(this.socketPath)) {
        throw new Error(`another makewaves server is using ${this.socketPath} (the same data folder)`);
      }
      unlinkSync(this.socketPath);
    }
    const server = net.createServer((sock) => this.session(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
    chmodSync(this.socketPath, 0o600);
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private session(sock: net.Socket): void {
    let buf = '';
    sock.setEncoding('utf8');
    sock.setTimeout(10_000, () => sock.destroy());
    sock.on('error', () => undefined);
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 4096) return void sock.destroy();
      const nl = buf.indexOf('\n');
      if (nl === -1) return;
      const line = buf.slice(0, nl);
      buf = '';
      void this.answer(line).then((res) => sock.end(`${JSON.stringify(res)}\n`));
    });
  }

  private async answer(line: string): Promise<ControlResponse> {
    let req: ControlRequest;
    try {
      req = JSON.parse(line) as ControlRequest;
    } catch {
      return { ok: false, error: 'not JSON' };
    }
    switch (req.cmd) {
      case 'ping':
        return { ok: true };
      case 'flush': {
        const queued = this.queue.flush();
        this.log.info({ queued }, 'queue flush requested by the operator');
        return { ok: true, queued };
      }
      case 'delete': {
        if (typeof req.id !== 'string' || !/^[A-Z0-9]+$/i.test(req.id)) return { ok: false, error: 'bad queue id' };
        const deleted = await this.queue.delete(req.id.toUpperCase());
        return deleted ? { ok: true, deleted } : { ok: false, error: `no message ${req.id} in the queue` };
      }
      default:
        return { ok: false, error: 'unknown command' };
    }
  }
}

function isAlive(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socketPath);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** Sends one request to the running server. Rejects with a clear message when none is running. */
export function controlRequest(socketPath: string, req: ControlRequest, timeoutMs = 15_000): Promise<ControlResponse> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socketPath);
    let buf = '';
    c.setEncoding('utf8');
    c.setTimeout(timeoutMs, () => {
      c.destroy();
      reject(new Error('the running server did not answer in time'));
    });
    c.once('connect', () => c.write(`${JSON.stringify(req)}\n`));
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
