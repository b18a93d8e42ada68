import { open, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { ACCESS_LOG, logFileDay } from '../lib/tenantlogs.ts';

/*
 * A tenant's traffic from its access logs (`data/logs/<tenant>/access.log`
 * and the rotated `access.log.<YYYY-MM-DD>`, Combined Log Format as the
 * HTTP service writes them): per UTC day, requests, bytes, 4xx and 5xx,
 * and the counts behind the top pages, referrers and 404s.
 *
 * Each file is read once: what was counted is kept with the file's size and
 * inode, and a view reads only what was appended since (the current log
 * grows by appends only; rotation renames it, so a new inode or a shorter
 * file is read again from the start).
 */

/** Days shown in the plots. */
export const PLOT_DAYS = 30;
/** Days behind the top tables. */
export const TOP_DAYS = 7;
/** Rows of each top table. */
export const TOP_ROWS = 10;
/** Distinct pages (referrers, 404s) kept per day; past it, the rest is counted under {@link OTHER}. */
const KEYS_PER_DAY = 2000;
export const OTHER = '(other)';
/** Bytes of a log read at a time. */
const READ_SLICE = 4 * 1024 * 1024;

export interface DayCounts {
  requests: number;
  bytes: number;
  c4xx: number;
  c5xx: number;
}

interface Day extends DayCounts {
  pages: Map<string, number>;
  referrers: Map<string, number>;
  notFound: Map<string, number>;
}

interface FileCount {
  ino: number;
  /** Bytes read so far (up to the last whole line). */
  offset: number;
  days: Map<string, Day>;
}

export interface Traffic {
  /** {@link PLOT_DAYS} days, oldest first, the last one today (UTC). */
  days: Array<DayCounts & { day: string }>;
  pages: Array<[string, number]>;
  referrers: Array<[string, number]>;
  notFound: Array<[string, number]>;
}

const MONTHS: Record<string, string> = { Jan: '01', Feb: '02', Mar: '03', Apr: '04', May: '05', Jun: '06', Jul: '07', Aug: '08', Sep: '09', Oct: '10', Nov: '11', Dec: '12' };
const FIELD = String.raw`"((?:[^"\\]|\\.)*)"`;
// remote ident user [dd/Mon/yyyy:hh:mm:ss zone] "request" status bytes "referer" "user-agent"
const LINE = new RegExp(String.raw`^\S+ \S+ \S+ \[(\d{2})/([A-Z][a-z]{2})/(\d{4}):[^\]]*\] ${FIELD} (\d{3}) (\d+|-) ${FIELD}`);

/** Undoes the log's escaping (`\"`, `\\`, `\xNN` bytes), back to the text that was sent. */
export function unescapeField(s: string): string {
  if (!s.includes('\\')) return s;
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x5c && s[i + 1] === 'x' && /^[0-9a-f]{2}$/i.test(s.slice(i + 2, i + 4))) {
      bytes.push(parseInt(s.slice(i + 2, i + 4), 16));
      i += 3;
    } else if (c === 0x5c && i + 1 < s.length) {
      bytes.push(s.charCodeAt(++i) & 0xff);
    } else bytes.push(c & 0xff);
  }
  return Buffer.from(bytes).toString('utf8');
}

function bump(m: Map<string, number>, key: string): void {
  const n = m.get(key);
  if (n !== undefined) m.set(key, n + 1);
  else if (m.size < KEYS_PER_DAY) m.set(key, 1);
  else m.set(OTHER, (m.get(OTHER) ?? 0) + 1);
}

/** The path of a request line's target, without its query (`GET /a?b HTTP/1.1` → `/a`); undefined for a line that is not a request. */
function pathOf(request: string): string | undefined {
  const m = /^\S+ (\S+) HTTP\/\d\.\d$/.exec(request);
  if (!m) return undefined;
  const target = m[1]!;
  const q = target.indexOf('?');
  return q === -1 ? target : target.slice(0, q);
}

/** Counts one log line into `days`; a line that is not in the Combined Log Format is skipped. */
export function countLine(days: Map<string, Day>, line: string): void {
  const m = LINE.exec(line);
  if (!m) return;
  const month = MONTHS[m[2]!];
  if (!month) return;
  const key = `${m[3]}-${month}-${m[1]}`;
  let d = days.get(key);
  if (!d) days.set(key, (d = { requests: 0, bytes: 0, c4xx: 0, c5xx: 0, pages: new Map(), referrers: new Map(), notFound: new Map() }));
  const status = Number(m[5]);
  d.requests++;
  if (m[6] !== '-') d.bytes += Number(m[6]);
  if (status >= 500) d.c5xx++;
  else if (status >= 400) d.c4xx++;
  const request = unescapeField(m[4]!);
  const p = pathOf(request);
  if (p !== undefined) {
    if (status === 404) bump(d.notFound, p);
    else if (status < 400) bump(d.pages, p);
  }
  if (m[7] !== '-') bump(d.referrers, unescapeField(m[7]!));
}

/** UTC day `n` days before the day of `now`, as YYYY-MM-DD. */
function dayBefore(now: number, n: number): string {
  return new Date(now - n * 86_400_000).toISOString().slice(0, 10);
}

function top(days: Day[], pick: (d: Day) => Map<string, number>, skip: (key: string) => boolean): Array<[string, number]> {
  const sum = new Map<string, number>();
  for (const d of days) for (const [k, n] of pick(d)) if (!skip(k)) sum.set(k, (sum.get(k) ?? 0) + n);
  return [...sum].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, TOP_ROWS);
}

/** The traffic of every tenant whose logs are under `logsDir`, each file read once and then only where it grew. */
export class TrafficCounter {
  private readonly files = new Map<string, FileCount>();

  constructor(private readonly logsDir: () => string) {}

  /** Reads what `file` gained since the last look (all of it if it is new, shorter or another inode). */
  private async counted(file: string): Promise<FileCount | undefined> {
    let st;
    try {
      st = await stat(file);
    } catch {
      // Rotated away or removed since the listing: its lines are in the next file or gone.
      this.files.delete(file);
      return undefined;
    }
    let fc = this.files.get(file);
    if (!fc || fc.ino !== st.ino || st.size < fc.offset) {
      fc = { ino: st.ino, offset: 0, days: new Map() };
      this.files.set(file, fc);
    }
    if (st.size === fc.offset) return fc;
    const fh = await open(file, 'r');
    try {
      // In slices, so a large log costs READ_SLICE of memory, not its size; only whole lines are counted.
      const buf = Buffer.alloc(Math.min(READ_SLICE, st.size - fc.offset));
      while (fc.offset < st.size) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, st.size - fc.offset), fc.offset);
        if (bytesRead === 0) break;
        const lastNl = buf.lastIndexOf(0x0a, bytesRead - 1);
        if (lastNl === -1) {
          // A line longer than a slice is no line we wrote: skipped; a line still being appended waits for the next look.
          if (bytesRead === READ_SLICE) fc.offset += bytesRead;
          break;
        }
        for (const line of buf.toString('latin1', 0, lastNl).split('\n')) countLine(fc.days, line);
        fc.offset += lastNl + 1;
      }
    } finally {
      await fh.close();
    }
    return fc;
  }

  async traffic(tenant: string, domains: readonly string[], now = Date.now()): Promise<Traffic> {
    const dir = path.join(this.logsDir(), tenant);
    const first = dayBefore(now, PLOT_DAYS - 1);
    const firstTop = dayBefore(now, TOP_DAYS - 1);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      // No log yet: a site that was never asked for anything.
      names = [];
    }
    // A rotated log is named after the (last) day it covers, so one named before the first day shown holds nothing shown.
    const wanted = names.filter((n) => {
      const day = logFileDay(ACCESS_LOG, n);
      return day === 'current' || (day !== undefined && day >= first);
    });
    for (const known of this.files.keys()) if (path.dirname(known) === dir && !wanted.includes(path.basename(known))) this.files.delete(known);
    const merged = new Map<string, Day[]>();
    for (const name of wanted) {
      const fc = await this.counted(path.join(dir, name));
      if (!fc) continue;
      for (const [day, d] of fc.days) {
        if (day < first) continue;
        const list = merged.get(day) ?? [];
        list.push(d);
        merged.set(day, list);
      }
    }
    const days: Traffic['days'] = [];
    for (let i = PLOT_DAYS - 1; i >= 0; i--) {
      const day = dayBefore(now, i);
      const c = { day, requests: 0, bytes: 0, c4xx: 0, c5xx: 0 };
      for (const d of merged.get(day) ?? []) {
        c.requests += d.requests;
        c.bytes += d.bytes;
        c.c4xx += d.c4xx;
        c.c5xx += d.c5xx;
      }
      days.push(c);
    }
    const recent = [...merged].filter(([day]) => day >= firstTop).flatMap(([, ds]) => ds);
    const own = new Set(domains.map((d) => d.toLowerCase()));
    const selfReferral = (ref: string) => {
      try {
        return own.has(new URL(ref).hostname.toLowerCase());
      } catch {
        // Not a URL: shown as it was sent.
        return false;
      }
    };
    return {
      days,
      pages: top(recent, (d) => d.pages, () => false),
      referrers: top(recent, (d) => d.referrers, selfReferral),
      notFound: top(recent, (d) => d.notFound, () => false),
    };
  }
}
