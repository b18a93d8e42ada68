import { constants } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { HttpOutcome, PanelRequest } from '../core/contracts.ts';
import type { Logger } from '../core/log.ts';
import { formatSize } from '../lib/sizes.ts';
import { ACCESS_LOG, logFileDay } from '../lib/tenantlogs.ts';
import { esc, messagePage, type Shell } from './html.ts';
import { sendHtml } from './web.ts';

/*
 * A customer's own access logs as downloads: `<data>/logs/<tenant>/
 * access.log` (since the last rotation) and the rotated days
 * `access.log.<YYYY-MM-DD>`, as the HTTP service writes them. The tenant is
 * the session's (index.ts has refused any other); the file name must be one
 * of those two forms, so no path of the request reaches the file system.
 */

type Who = NonNullable<Shell['who']>;

/** Rotated days listed (newest first). */
export const LOG_DAYS = 30;

export interface LogFile {
  name: string;
  size: number;
  /** "today" for the current file, else the day it covers. */
  label: string;
}

/** The tenant's access logs, current first, then the rotated days, newest first. */
export async function logFiles(logsDir: string, tenant: string): Promise<LogFile[]> {
  const dir = path.join(logsDir, tenant);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    // No log yet: nothing was ever asked of the site.
    return [];
  }
  const wanted = names.filter((n) => logFileDay(ACCESS_LOG, n)).sort((a, b) => (a === ACCESS_LOG ? -1 : b === ACCESS_LOG ? 1 : b.localeCompare(a)));
  const out: LogFile[] = [];
  for (const name of wanted.slice(0, LOG_DAYS + 1)) {
    try {
      const st = await stat(path.join(dir, name));
      if (st.isFile()) out.push({ name, size: st.size, label: name === ACCESS_LOG ? 'today (since the last rotation)' : logFileDay(ACCESS_LOG, name)! });
    } catch {
      // Rotated or pruned since the listing: not offered.
    }
  }
  return out;
}

/** The Access log part of the Traffic page: one download link per file. */
export function logsSection(who: Who, files: readonly LogFile[]): string {
  const base = `/t/${encodeURIComponent(who.tenant)}/logs/`;
  const rows = files.map((f) => `<li><a href="${esc(base + f.name)}" download>${esc(f.name)}</a> (${esc(f.label)}, ${esc(formatSize(f.size))})</li>`).join('');
  return `<h2 id="logs">Access log</h2>` + (files.length ? `<p>Your site's access log (Combined Log Format), to download:</p><ul id="log-files">${rows}</ul>` : `<p id="log-files">No access log yet.</p>`);
}

/** GET `logs/<name>`: the file as an attachment, as it is at this moment (what is appended meanwhile is not sent). */
export async function sendLog(r: PanelRequest, a: Who, logsDir: string, name: string, log: Logger): Promise<HttpOutcome> {
  if (!logFileDay(ACCESS_LOG, name)) {
    log.info({ user: a.login, tenant: a.tenant, remote: r.remote, name: name.slice(0, 100), why: 'not a log name' }, 'panel log download refused');
    return sendHtml(r.req, r.res, 404, messagePage('Not found', 'There is no such log.', a));
  }
  let fh;
  try {
    // O_NOFOLLOW: the file itself, never a link planted in its place.
    fh = await open(path.join(logsDir, a.tenant, name), constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ELOOP') throw err;
    return sendHtml(r.req, r.res, 404, messagePage('Not found', 'There is no such log.', a));
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    return sendHtml(r.req, r.res, 404, messagePage('Not found', 'There is no such log.', a));
  }
  const size = st.size;
  r.res.writeHead(200, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': size,
    'Content-Disposition': `attachment; filename="${a.tenant}-${name}"`,
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    // Opened instead of saved, it is text that runs nothing.
    'Content-Security-Policy': "default-src 'none'; sandbox",
  });
  log.info({ user: a.login, tenant: a.tenant, remote: r.remote, file: name, bytes: size }, 'panel log downloaded');
  if (r.req.method === 'HEAD' || size === 0) {
    await fh.close();
    r.res.end();
    return { status: 200, bytes: 0 };
  }
  // Closes the file when done (or destroyed with the response).
  const stream = fh.createReadStream({ start: 0, end: size - 1 });
  await new Promise<void>((resolve) => {
    stream.on('error', () => r.res.destroy());
    r.res.on('close', () => {
      stream.destroy();
      resolve();
    });
    stream.pipe(r.res);
  });
  return { status: 200, bytes: size };
}
