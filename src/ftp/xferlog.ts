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
 * it may hold spaces; CR and LF in it become `?`, so a line cannot be forged).
 */
export function transferLine(t: Transfer, now = new Date()): string {
  return `${now.toISOString()} ${t.remote} ${t.user} ${t.command} ${t.bytes} ${t.ms} ${t.status} ${t.path.replace(/[\r\n]/g, '?')}\n`;
}
