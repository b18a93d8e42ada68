// The launcher's keeper: a small root process above the handler launcher (launcher-main.ts). The server forks it as
// root, before it drops to `user:`; it forks the launcher, hands the server the launcher's request socket (the
// server's requests go straight to the launcher) and passes the launcher's replies on, handles included (only a
// channel Node sets up between parent and child carries them). When the launcher ends unasked (the OOM killer, a
// crash, a stray kill), the keeper starts it again, with backoff, and hands the server the new one's socket: the
// server, dropped to `user:` by then, could not start a root process itself.
import { fork, type ChildProcess } from 'node:child_process';
import { closeInherited } from '../lib/fds.ts';
import { holdReads } from '../lib/handles.ts';
import { rootOnlyPath } from '../lib/safepath.ts';
import type { KeeperSpec } from './keeper.ts';

/**
 * Its few log lines, in the suite's format (pino's JSON lines), written
 * here: pino alone would add about 7 MB to this process (44 MB RSS bare).
 */
const LEVELS = { info: 30, warn: 40, error: 50 } as const;
function logLine(level: keyof typeof LEVELS, fields: Record<string, unknown>, msg: string): void {
  process.stdout.write(`${JSON.stringify({ level: LEVELS[level], time: Date.now(), svc: 'cgi-keeper', ...fields, msg })}\n`);
}
const log = {
  warn: (fields: Record<string, unknown>, msg: string) => logLine('warn', fields, msg),
  error: (fields: Record<string, unknown>, msg: string) => logLine('error', fields, msg),
};
const spec = JSON.parse(process.argv[2] ?? 'null') as KeeperSpec | null;
if (!spec || !process.send) {
  log.error({}, 'the keeper is started by the suite with its launcher spec and an IPC channel');
  process.exit(2);
}
// What the server's process inherited beyond its stdio goes no further: not to the root launcher, nor into its boxes.
// Fd 3 is this process's channel to the server (its stdio in launched.ts), kept whatever its flag.
const inherited = closeInherited([3]);
if (inherited.length > 0) log.warn({ fds: inherited }, 'the suite was started with descriptors open beyond stdin, stdout and stderr: closed, not passed to the handler launcher');
// The launcher finds setpriv, bwrap, cc… by PATH, as root, at each start: never in a folder the server's account
// (after its drop) or anyone else but root may write, where a program planted would run as root at the next start.
const searchPath = rootOnlyPath(process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin');
if (searchPath.dropped.length > 0) log.warn({ dropped: searchPath.dropped }, 'PATH folders not root\'s alone are left out of the handler launcher\'s PATH');
// Not once the server is gone: 'disconnect' ends this process once its launcher has ended.
const tell = (msg: unknown, handle?: unknown) => process.connected && process.send!(msg, handle as never);

/** The launcher now, while it runs (undefined between its end and its next start). */
let child: ChildProcess | undefined;
/** How long a launcher has to end once the server has closed its channel (it ends at once; one wedged does not). */
const STOP_GRACE_MS = 2_000;
/** Some launcher has been ready: only then is an end one to start again after (the first start's failure is the server's). */
let everReady = false;
/** The server closed its channel: the launcher's end that follows is the one asked for. */
let stopping = false;
/** Starts again since the launcher last ran a while (KEEPER_RESTART_MS.calm, keeper.ts). */
let attempt = 0;

/** Starts the launcher again after `inMs` ({@link KeeperSpec}.restartMs), and tells the server why and when. */
function again(why: string): void {
  if (stopping || !process.connected) process.exit(0);
  const inMs = Math.min(spec!.restartMs.first * 2 ** attempt, spec!.restartMs.most);
  attempt++;
  tell({ op: 'relaunching', why, attempt, inMs });
  setTimeout(start, inMs);
}

/** A launcher that could not be forked at all (its program gone, no memory or process left): no end of it will come. */
function notStarted(err: Error): void {
  const why = `it could not be started: ${err.message}`;
  log.error({ why }, 'handler launcher not started');
  if (everReady) return again(why);
  // The first start's failure is the server's to say, as for a launcher that could not load the config.
  tell({ op: 'failed', why });
  endAfterTelling(2);
}

function start(): void {
  if (stopping || !process.connected) process.exit(0);
  let c: ChildProcess;
  try {
    c = fork(spec!.entry, spec!.args, {
      execPath: spec!.execPath,
      execArgv: spec!.execArgv,
      env: { PATH: searchPath.path },
      // fd 4: the server's requests, one JSON text a line, straight to the launcher (this keeper is on no run's path).
      stdio: ['ignore', 'inherit', 'inherit', 'ipc', 'pipe'],
      serialization: 'json',
    });
  } catch (err) {
    return notStarted(err as Error);
  }
  if (c.pid === undefined) {
    // Its error comes next (a failed exec, on the next tick); its pipes go with it.
    (c.stdio[4] as { destroy?: () => void } | null)?.destroy?.();
    c.once('error', notStarted);
    return;
  }
  child = c;
  let failed: string | undefined;
  /** When this launcher said it was ready (one that never did has not run a while, whatever ran before it). */
  let upSince: number | undefined;
  // The server's end of the request socket goes with the launcher's pid (sending it closes this process's copy).
  holdReads(c.stdio[4]);
  tell({ op: 'launcher', pid: c.pid }, c.stdio[4]);
  // The first start's time is the server's to keep (it ends this keeper, and the launcher with it); a start again is this one's.
  const late = everReady
    ? setTimeout(() => {
        log.error({ pid: c.pid, withinMs: spec!.readyMs }, 'handler launcher started again but not ready in time: ended');
        c.kill('SIGKILL');
      }, spec!.readyMs)
    : undefined;
  c.on('message', (m: { op?: string; why?: string } | null, handle: unknown) => {
    // Received here and passed on: nothing of its bytes may be read here meanwhile.
    if (handle) holdReads(handle);
    if (m?.op === 'ready') {
      clearTimeout(late);
      everReady = true;
      upSince = Date.now();
    } else if (m?.op === 'failed') failed = m.why;
    tell(m, handle);
  });
  c.on('error', (err) => log.warn({ why: err.message, pid: c.pid }, 'handler launcher process error'));
  // Its end counts once both its exit and the end of its channel are in: every message it sent has been passed on.
  let exit: string | undefined;
  let channelOpen = true;
  const ended = () => {
    if (exit === undefined || channelOpen) return;
    clearTimeout(late);
    child = undefined;
    // Asked for (the server gone), or a first start that failed: this keeper ends the same way, and the server says why.
    if (stopping || !process.connected) process.exit(0);
    if (!everReady) return endAfterTelling(c.exitCode ?? 2);
    if (upSince !== undefined && Date.now() - upSince >= spec!.restartMs.calm) attempt = 0;
    again(failed !== undefined ? `it could not start again: ${failed}` : `it ended (${exit})`);
  };
  c.on('exit', (code, signal) => {
    exit = signal ?? `exit code ${code}`;
    ended();
  });
  c.on('disconnect', () => {
    channelOpen = false;
    ended();
  });
}

/** Ends this keeper once what it passed on has been written to the server (its 'failed', say). */
function endAfterTelling(code: number): void {
  if (!process.connected) process.exit(code);
  process.send!({ op: 'keeper-ending' }, () => process.exit(code));
}

// The server gone, or its stop: the launcher's channel is closed (it ends, and its boxes with it), then this keeper.
function stopKeeping(): void {
  if (stopping) return;
  stopping = true;
  const c = child;
  if (!c || c.exitCode !== null || c.signalCode !== null) process.exit(0);
  if (c.connected) c.disconnect();
  // One that does not end with its channel (wedged in its start, or in a call that never returns) is ended: nothing
  // root stays behind a stop, even where no --pdeathsig ends this keeper with the server.
  setTimeout(() => c.kill('SIGKILL'), STOP_GRACE_MS).unref();
}
process.on('disconnect', stopKeeping);
// Looked at every second too: an end of the channel this process missed would otherwise keep it, and the launcher, for good.
setInterval(() => !process.connected && stopKeeping(), 1_000).unref();
// Gone while this process loaded its modules (a start refused at once): that 'disconnect' came before the listener.
if (process.connected) start();
else process.exit(0);
