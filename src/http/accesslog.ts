import { appendFile, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../core/log.ts';

/** Log folder for requests that matched no tenant (tenant ids never start with "_"). */
export const DEFAULT_SITE = '_default';

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n: number) => (n < 10 ? `0${n}` : String(n));

let stampSecond = -1;
let stamp = '';
/** `[10/Oct/2000:13:55:36 +0000]`, computed once per second. */
function clfTime(nowMs: number): string {
  const s = Math.floor(nowMs / 1000);
  if (s !== stampSecond) {
    const d = new Date(s * 1000);
    stamp = `[${pad(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000]`;
    stampSecond = s;
  }
  return stamp;
}

/** Escapes like Apache's mod_log_config: `"` and `\` backslashed, control and non-ASCII bytes as \xNN. */
export function escapeField(value: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/["\\\x00-\x1f\x7f-\uffff]/.test(value)) return value;
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    if (byte === 0x22) out += '\\"';
    else if (byte === 0x5c) out += '\\\\';
    else if (byte < 0x20 || byte >= 0x7f) out += `\\x${byte.toString(16).padStart(2, '0')}`;
    else out += String.fromCharCode(byte);
  }
  return out;
}

export interface AccessRecord {
  remote: string;
  method: string;
  url: string;
  httpVersion: string;
  status: number;
  bytes: number;
  referer: string | undefined;
  userAgent: string | undefined;
}

/** One line of the Combined Log Format, which GoAccess and AWStats read as is. */
export function combinedLine(r: AccessRecord, nowMs = Date.now()): string {
  return (
    `${r.remote} - - ${clfTime(nowMs)} "${escapeField(r.method)} ${escapeField(r.url)} HTTP/${r.httpVersion}" ` +
    `${r.status} ${r.bytes > 0 ? r.bytes : '-'} "${r.referer === undefined ? '-' : escapeField(r.referer)}" ` +
    `"${r.userAgent === undefined ? '-' : escapeField(r.userAgent)}"\n`
  );
}

interface Sink {
  lines: string[];
  size: number;
  /** Writes for one file are serialised, and so is rotation. */
  chain: Promise<void>;
  dirMade: boolean;
}

/**
 * Per-tenant access logs at `<logsDir>/<tenant>/access.log`. Lines are
 * buffered in memory and appended at most every `flushMs` (or at 64 KiB),
 * so a request costs no I/O; {@link close} writes what is left.
 */
export class AccessLogs {
  private readonly sinks = new Map<string, Sink>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly logsDir: string,
    private readonly log: Logger,
    private readonly flushMs = 250,
  ) {}

  fileFor(tenant: string): string {
    return path.join(this.logsDir, tenant, 'access.log');
  }

  write(tenant: string, line: string): void {
    let sink = this.sinks.get(tenant);
    if (!sink) {
      sink = { lines: [], size: 0, chain: Promise.resolve(), dirMade: false };
      this.sinks.set(tenant, sink);
    }
    sink.lines.push(line);
    sink.size += line.length;
    if (sink.size >= 64 * 1024) this.flushOne(tenant, sink);
    else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        void this.flush();
      }, this.flushMs);
      this.timer.unref();
    }
  }

  private flushOne(tenant: string, sink: Sink): Promise<void> {
    if (sink.lines.length === 0) return sink.chain;
    const data = sink.lines.join('');
    sink.lines = [];
    sink.size = 0;
    const file = this.fileFor(tenant);
    sink.chain = sink.chain.then(async () => {
      try {
        if (!sink.dirMade) {
          await mkdir(path.dirname(file), { recursive: true });
          sink.dirMade = true;
        }
        await appendFile(file, data);
      } catch (err) {
        this.log.error({ tenant, err: (err as Error).message }, 'cannot write access log');
      }
    });
    return sink.chain;
  }

  /** Appends every buffered line; resolves when they are on disk. */
  async flush(): Promise<void> {
    await Promise.all([...this.sinks].map(([tenant, sink]) => this.flushOne(tenant, sink)));
  }

  /**
   * Daily rotation: `access.log` becomes `access.log.<YYYY-MM-DD>` (the day
   * it covers, UTC) and logs older than `keepDays` are removed.
   */
  async rotate(keepDays: number, now = new Date()): Promise<void> {
    await this.flush();
    const yesterday = new Date(now.getTime() - 86_400_000).toISOString().slice(0, 10);
    const oldest = new Date(now.getTime() - keepDays * 86_400_000).toISOString().slice(0, 10);
    let dirs: string[];
    try {
      dirs = await readdir(this.logsDir);
    } catch {
      return;
    }
    for (const tenant of dirs) {
      const dir = path.join(this.logsDir, tenant);
      const sink = this.sinks.get(tenant);
      const work = async () => {
        const current = path.join(dir, 'access.log');
        try {
          const st = await stat(current);
          if (st.size > 0) await rename(current, `${current}.${yesterday}`);
        } catch {
          // no current log: nothing to rotate
        }
        for (const name of await readdir(dir).catch(() => [] as string[])) {
          const m = /^access\.log\.(\d{4}-\d{2}-\d{2})$/.exec(name);
          if (m && m[1]! < oldest) await rm(path.join(dir, name), { force: true });
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
