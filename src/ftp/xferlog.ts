import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../core/log.ts';

export interface Transfer {
  remote: string;
  user: string;
  /** STOR, APPE, STOU or RETR. */
  command: string;
  /** Jail-relative path. */
  path: string;
  bytes: number;
  ms: number;
  /** ok, or why it ended early: aborted, quota, stalled. */
  status: string;
}

/**
 * One transfer log per tenant at `<logs>/<tenant id>/ftp.log`, a line per
 * transfer: ISO time, remote, user, command, bytes, milliseconds, status, path
 * (last, as it may hold spaces). Files are opened on first use, appended to.
 */
export class TransferLogs {
  private readonly streams = new Map<string, WriteStream>();
  constructor(
    private readonly dir: string,
    private readonly log: Logger,
  ) {}

  write(tenant: string, t: Transfer): void {
    let s = this.streams.get(tenant);
    if (!s) {
      const dir = path.join(this.dir, tenant);
      try {
        mkdirSync(dir, { recursive: true });
      } catch (err) {
        this.log.error({ tenant, err: (err as Error).message }, 'cannot create the FTP transfer log folder');
        return;
      }
      s = createWriteStream(path.join(dir, 'ftp.log'), { flags: 'a' });
      s.on('error', (err) => this.log.error({ tenant, err: err.message }, 'FTP transfer log write failed'));
      this.streams.set(tenant, s);
    }
    const safePath = t.path.replace(/[\r\n]/g, '?');
    s.write(`${new Date().toISOString()} ${t.remote} ${t.user} ${t.command} ${t.bytes} ${t.ms} ${t.status} ${safePath}\n`);
  }

  async close(): Promise<void> {
    await Promise.all([...this.streams.values()].map((s) => new Promise<void>((r) => s.end(r))));
    this.streams.clear();
  }
}
