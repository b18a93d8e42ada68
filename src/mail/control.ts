import { randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import type { Logger } from '../core/log.ts';
import { replaceFile } from '../lib/ownfile.ts';
import { tokenPath, type ControlRequest, type ControlResponse } from '../core/control.ts';
import type { MailQueue } from './queue.ts';

/**
 * How `makewaves queue flush|delete` reaches the running server: a Unix
 * socket `<data>/mail.sock`, mode 0600. Tenants' handlers may run under
 * the server's own uid (the service-user setup), so the socket's mode is
 * not what keeps them out: every request must carry the token the server
 * writes at start to `<data>/mail.sock.token` (0600, fresh each start),
 * a file under data/ that handlers cannot read (the permission model
 * grants them their site and their scratch folder only). A request
 * without it is answered `not authorized` and logged. A socket file left
 * by a crash is replaced; one that answers means another server owns
 * this data folder, and starting fails.
 */
export class ControlServer {
  private server: net.Server | undefined;
  private token: Buffer | undefined;

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
    // Written under another name, then renamed: a reader never sees half a token, nor a file that was ever wider than 0600.
    const token = randomBytes(32).toString('hex');
    const file = tokenPath(this.socketPath);
    // Never through a link: <data> is the service user's, and this runs as root before the drop to it.
    replaceFile(file, `${token}\n`, 0o600);
    this.token = Buffer.from(token);
    const server = net.createServer((sock) => this.session(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // Made 0600 by the umask during its bind (synchronous for a Unix socket), not by a chmod of its name
      // afterwards: that name is in the service user's folder, who could have swapped it for a link by then.
      const umask = process.umask(0o177);
      try {
        server.listen(this.socketPath, () => {
          server.removeListener('error', reject);
          resolve();
        });
      } finally {
        process.umask(umask);
      }
    });
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) {
      await new Promise<void>((resolve) => s.close(() => resolve()));
      try {
        unlinkSync(tokenPath(this.socketPath));
      } catch {
        // already gone (removed by hand): nothing to clean up
      }
    }
  }

  private session(sock: net.Socket): void {
    let buf = '';
    sock.setEncoding('utf8');
    sock.setTimeout(10_000, () => sock.destroy());
    // A client that goes away mid-request: the socket closes, nothing was changed for it.
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
    let req: ControlRequest & { token?: unknown };
    try {
      req = JSON.parse(line) as typeof req;
    } catch {
      return { ok: false, error: 'not JSON' };
    }
    if (!this.authorized(req?.token)) {
      this.log.warn({ cmd: typeof req?.cmd === 'string' ? req.cmd.slice(0, 20) : undefined, why: 'missing or wrong token' }, 'control request refused');
      return { ok: false, error: 'not authorized' };
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

  /** True when `token` is the one written at start (compared in constant time). */
  private authorized(token: unknown): boolean {
    if (typeof token !== 'string' || !this.token) return false;
    const given = Buffer.from(token);
    return given.length === this.token.length && timingSafeEqual(given, this.token);
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
