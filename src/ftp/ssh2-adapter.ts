/**
 * The one place that reads ssh2's private state (house rule: one adapter
 * per library, each internal named in test/unit/ftp/ssh2-adapter.test.ts,
 * which fails when an upgrade changes it).
 */
import type { SFTPWrapper } from 'ssh2';

/** Each ssh2 internal used here, by owner. */
export const SSH2_INTERNALS = {
  /** SFTPWrapper#_buffer: the answers that did not fit the client's window, held in memory until it reads. */
  sftp: ['_buffer'],
} as const;

/**
 * The answers held in memory for a client whose window is shut: how many,
 * and their bytes (counted only up to `countUpTo` answers, so asking costs
 * little however many there are).
 */
export function heldAnswers(sftp: SFTPWrapper, countUpTo: number): { answers: number; bytes: number } {
  const held = (sftp as unknown as { _buffer?: Buffer[] })._buffer;
  if (!Array.isArray(held)) return { answers: 0, bytes: 0 };
  let bytes = 0;
  if (held.length <= countUpTo) for (const b of held) bytes += b.length;
  return { answers: held.length, bytes };
}
