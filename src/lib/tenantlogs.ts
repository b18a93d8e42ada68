import { constants } from 'node:fs';
import { appendFile, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
/** The one logger method a tenant log needs (pino's, structurally; lib imports nothing of the suite's). */
interface Logger {
  error(obj: object, msg: string): void;
}

interface Sink {
  /**
   * The lines not yet appended, as bytes: each line is encoded into it when
   * written, so no line string outlives its request (strings kept for the
   * flush interval would be promoted to the old generation, and joined and
   * flattened at the flush). Empty after a flush, so an idle tenant holds none.
   */
  buf: Buffer;
  /** Bytes of `buf` in use. */
  used: number;
  /** The size the next buffer is made at: what the last one needed, so a busy log does not grow it again each time. */
  want: number;
  /** Writes for one file are serialised, and so is rotation. */
  chain: Promise<void>;
  dirMade: boolean;
}

/**
 * One log file per tenant at `<logsDir>/<tenant>/<name>` (the HTTP access
 * log, the FTP transfer log). Lines are buffered in memory and appended at
 * most every `flushMs` (or at 64 KiB), so a request or a transfer costs no
 * I/O of its own; {@link close} writes what is left. A crash loses at most
 * the last `flushMs` of lines, as with a buffered nginx access log.
 */
/** The access log each tenant's folder holds, as the HTTP service writes it. */
export const ACCESS_LOG = 'access.log';

/**
 * What a file in a tenant's log folder is, for logs named `base`: `'current'`
 * for `base` itself, the day (`YYYY-MM-DD`) for a rotated `base.<day>`,
 * undefined for anything else.
 */
export function logFileDay(base: string, fileName: string): string | undefined {
  if (fileName === base) return 'current';
  if (fileName.length !== base.length + 11 || !fileName.startsWith(`${base}.`)) return undefined;
  const day = fileName.slice(base.length + 1);
  return /^\d{4}-\d{2}-\d{2}$/.test(day) ? day : undefined;
}

/** Buffered lines are appended once they reach this many bytes, before the flush interval is up. */
const FLUSH_AT = 64 * 1024;
const APPEND = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW;
const MIN_BUFFER = 4 * 1024;
const EMPTY = Buffer.alloc(0);

/** The largest buffer made for ordinary lines: the flush threshold and room for the line that crosses it. */
const MAX_BUFFER = FLUSH_AT + MIN_BUFFER;

/**
 * Makes room for `room` more bytes: a buffer of the size the last one
 * reached, or twice the full one, up to {@link MAX_BUFFER} (larger only for
 * a line that would not fit otherwise).
 */
function grow(sink: Sink, room: number): void {
  const size = Math.max(Math.min(Math.max(sink.want, sink.buf.length * 2), MAX_BUFFER), sink.used + room);
  const next = Buffer.allocUnsafe(size);
  sink.buf.copy(next, 0, 0, sink.used);
  sink.buf = next;
  sink.want = Math.min(size, MAX_BUFFER);
}

export class TenantLogFiles {
  private readonly sinks = new Map<string, Sink>();
  private timer: NodeJS.Timeout | undefined;
  constructor(
    private readonly logsDir: string,
    /** The file name in each tenant's folder: letters, digits, dots (`access.log`). */
    private readonly name: string,
    private readonly log: Logger,
    private readonly flushMs = 250,
  ) {
    if (!/^[a-z0-9.]+$/i.test(name)) throw new Error(`bad log file name: ${name}`);
  }

  fileFor(tenant: string): string {
    return path.join(this.logsDir, tenant, this.name);
  }

  write(tenant: string, line: string): void {
    let sink = this.sinks.get(tenant);
    if (!sink) {
      sink = { buf: EMPTY, used: 0, want: MIN_BUFFER, chain: Promise.resolve(), dirMade: false };
      this.sinks.set(tenant, sink);
    }
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    const room = line.length * 3;
    if (sink.used + room > sink.buf.length) grow(sink, room);
    sink.used += sink.buf.write(line, sink.used);
    if (sink.used >= FLUSH_AT) this.flushOne(tenant, sink);
    else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        void this.flush();
      }, this.flushMs);
      this.timer.unref();
    }
  }

  private flushOne(tenant: string, sink: Sink): Promise<void> {
    if (sink.used === 0) return sink.chain;
    // The bytes are the file's until appended: the next line starts a new buffer.
    const data = sink.buf.subarray(0, sink.used);
    sink.buf = EMPTY;
    sink.used = 0;
    const file = this.fileFor(tenant);
    sink.chain = sink.chain.then(async () => {
      try {
        if (!sink.dirMade) {
          await mkdir(path.dirname(file), { recursive: true, mode: 0o750 });
          sink.dirMade = true;
        }
        // Never through a link: <data>/logs is the service user's, and HTTP and FTP answer (and log) from their listen on,
        // before a start as root drops to it.
        await appendFile(file, data, { mode: 0o640, flag: APPEND });
      } catch (err) {
        this.log.error({ tenant, file: this.name, err: (err as Error).message }, 'cannot write a tenant log');
      }
    });
    return sink.chain;
  }

  /** Appends every buffered line; resolves when they are on disk. */
  async flush(): Promise<void> {
    await Promise.all([...this.sinks].map(([tenant, sink]) => this.flushOne(tenant, sink)));
  }

  /**
   * Daily rotation: `<name>` becomes `<name>.<YYYY-MM-DD>` (the day it
   * covers, UTC) and logs older than `keepDays` are removed.
   */
  async rotate(keepDays: number, now = new Date()): Promise<void> {
    await this.flush();
    const yesterday = new Date(now.getTime() - 86_400_000).toISOString().slice(0, 10);
    const oldest = new Date(now.getTime() - keepDays * 86_400_000).toISOString().slice(0, 10);
    let dirs: string[];
    try {
      dirs = await readdir(this.logsDir);
    } catch {
      // No logs folder yet: nothing to prune.
      return;
    }
    for (const tenant of dirs) {
      const dir = path.join(this.logsDir, tenant);
      const sink = this.sinks.get(tenant);
      const work = async () => {
        const current = path.join(dir, this.name);
        try {
          const st = await stat(current);
          if (st.size > 0) await rename(current, `${current}.${yesterday}`);
        } catch {
          // no current log: nothing to rotate
        }
        for (const name of await readdir(dir).catch(() => [] as string[])) {
          const day = logFileDay(this.name, name);
          if (day && day !== 'current' && day < oldest) await rm(path.join(dir, name), { force: true });
        }
      };
      if (sink) {
        sink.chain = sink.chain.then(work);
        await sink.chain;
      } else {
        await work();
      }
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}
