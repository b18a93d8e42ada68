/**
 * The one place that reads ssh2's private state (house rule: one adapter
 * per library, each internal named in test/unit/ftp/ssh2-adapter.test.ts,
 * which fails when an upgrade changes it).
 */
import type { SFTPWrapper } from 'ssh2';

/** Each ssh2 internal used here, by owner. */
export const SSH2_INTERNALS = {
  /** SFTPWrapper#outgoing: the channel's send side; `window` is what the client still lets us send (0: answers are held in memory). */
  sftp: ['outgoing.window'],
} as const;

/** True when the client's window is shut: what is sent now waits in memory until the client reads. */
export function windowShut(sftp: SFTPWrapper): boolean {
  const outgoing = (sftp as unknown as { outgoing?: { window?: number } }).outgoing;
  return outgoing?.window === 0;
}
