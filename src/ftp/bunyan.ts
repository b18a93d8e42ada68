import type { Logger } from '../core/log.ts';

/** The subset of bunyan's logger API ftp-srv calls. */
export interface BunyanLike {
  child(fields: Record<string, unknown>): BunyanLike;
  trace(...args: unknown[]): void;
  debug(...args: unknown[]): void;
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
  fatal(...args: unknown[]): void;
}

/**
 * Gives ftp-srv our pino logger. Its trace and debug lines (which include
 * raw command lines) are dropped, so no PASS argument can reach a log; its
 * "error" lines are mostly client faults (a missing file, a refused path),
 * logged at debug: the service logs the refusals that matter itself.
 */
export function bunyanAdapter(log: Logger): BunyanLike {
  const emit = (level: 'debug' | 'warn' | 'error', args: unknown[]) => {
    if (!log.isLevelEnabled(level)) return;
    const [first, ...rest] = args;
    const msg = rest.find((a): a is string => typeof a === 'string') ?? (typeof first === 'string' ? first : 'ftp-srv');
    const detail = first instanceof Error ? { err: first.message } : typeof first === 'object' && first !== null ? safe(first as Record<string, unknown>) : {};
    log[level](detail, `ftp-srv: ${msg}`);
  };
  const none = () => undefined;
  return {
    child: (fields) => bunyanAdapter(log.child(safe(fields))),
    trace: none,
    debug: none,
    info: (...a) => emit('debug', a),
    warn: (...a) => emit('warn', a),
    error: (...a) => emit('debug', a),
    fatal: (...a) => emit('error', a),
  };
}

/** Keeps plain scalar fields only (ftp-srv passes command objects; their args are not logged). */
function safe(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (k === 'command' || k === 'password' || k === 'message') continue;
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k === 'id' ? 'ftpsrvId' : k] = v;
  }
  return out;
}
