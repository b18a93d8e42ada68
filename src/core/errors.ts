/**
 * One error class for the whole suite. `code` is stable and machine-readable;
 * `message` is a sentence fit for the person on the other end (an operator
 * for config errors, a client for protocol errors). Never put a host path or
 * a stack trace in a message that reaches a client.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'LISTEN_FAILED'
  | 'JAIL_ESCAPE'
  | 'JAIL_BAD_PATH'
  | 'NOT_FOUND'
  | 'STATE_FAILED';

export class MakewavesError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MakewavesError';
    this.code = code;
  }
}

/** A short random reference shown to a client and written to the log with the real cause. */
export function errorRef(): string {
  return Math.random().toString(36).slice(2, 8);
}
