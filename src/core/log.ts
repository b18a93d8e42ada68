import pino, { type Logger } from 'pino';

export type { Logger };

export interface LogOptions {
  level?: string;
  /** Where lines go; defaults to stdout. Tests pass a stream to capture them. */
  destination?: pino.DestinationStream;
}

/**
 * The root logger. Children add context as it becomes known:
 * `{svc}` → `{conn, remote}` → `{tenant}`. Client faults go at `info`,
 * our own faults at `error`. Secrets are redacted by key.
 */
export function createLogger(options: LogOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? process.env.MAKEWAVES_LOG_LEVEL ?? 'info',
      base: undefined,
      redact: { paths: ['password', '*.password', 'pass', '*.pass'], censor: '[redacted]' },
    },
    options.destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
