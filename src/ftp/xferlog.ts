export interface Transfer {
  remote: string;
  user: string;
  /** STOR, APPE, STOU or RETR. */
  command: string;
  /** Jail-relative path. */
  path: string;
  bytes: number;
  ms: number;
  /** ok, or why it ended early: aborted, quota, failed. */
  status: string;
}

/**
 * A line of a tenant's transfer log (`<logs>/<tenant id>/ftp.log`): ISO
 * time, remote, user, command, bytes, milliseconds, status, path (last, as
 * it may hold spaces). Control characters in the path are written as `\xNN`
 * (CR and LF could forge a line, ESC could drive the terminal of whoever
 * reads the log); UTF-8 names stay as they are.
 */
export function transferLine(t: Transfer, now = new Date()): string {
  // eslint-disable-next-line no-control-regex
  const safePath = t.path.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return `${now.toISOString()} ${t.remote} ${t.user} ${t.command} ${t.bytes} ${t.ms} ${t.status} ${safePath}\n`;
}
