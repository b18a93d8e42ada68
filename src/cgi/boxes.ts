import { spawn, type ChildProcess } from 'node:child_process';
import type { Writable } from 'node:stream';
import type { Logger } from '../core/log.ts';
import type { Registry } from '../core/registry.ts';
import { boxStdio, feedFilter, GO_FD, type SpawnSpec } from './sandbox.ts';

/** Boxes started ahead for `reg`'s config: two per tenant, at most cgi.total, ended after cgi.idleTimeout unused. */
export function boxOptionsOf(reg: Registry, log?: Logger): BoxPoolOptions {
  const c = reg.config.main.cgi;
  return { depth: 2, max: c.total, idleMs: c.idleTimeout * 1000, ...(log ? { log } : {}) };
}

export interface BoxPoolOptions {
  /** Boxes kept started ahead, per command line (per tenant: its uid, folders and limits are in it). */
  depth: number;
  /** Boxes started ahead across all command lines, at most. */
  max: number;
  /** An unused box is ended after this long. */
  idleMs: number;
  log?: Logger;
  /** Told of each box started ahead (the launcher hands its pipes to the server before its run). */
  started?: (proc: ChildProcess) => void;
  /** Told of each box started ahead that ends without a run (idle, discarded, failed). */
  dropped?: (proc: ChildProcess) => void;
}

interface Spare {
  proc: ChildProcess;
  timer: NodeJS.Timeout;
  /** Our listeners on it while it waits (removed when it is taken or ended). */
  onExit: () => void;
  onError: (err: Error) => void;
}

/**
 * Classic CGI boxes started before their request. Building a box (bwrap:
 * namespaces, mounts; the uid, the limits, the priority before it) takes
 * far longer than running a small script, and none of it depends on the
 * request: a script's command line (sandbox.ts, scriptSpec) is the same for
 * every run of a tenant and ends in a stub that waits on fd 4 for the run
 * itself (meta-variables, cwd, the script), then execs it. So after each
 * run of a tenant, the next box is started right away, in the background.
 *
 * Each box serves exactly one run: taken out of the pool when its run
 * comes, never put back (when the script ends, the box ends with it). A box
 * nobody took is ended after `idleMs`; {@link discard} ends them all (a
 * reload: limits, folders or the tenant itself may have changed).
 */
export class BoxPool {
  private readonly spare = new Map<string, Spare[]>();
  private count = 0;
  /** Counts discards: a refill asked for before one is dropped. */
  private generation = 0;

  constructor(private opts: BoxPoolOptions) {}

  /** New depth, cap and idle time (a reload); boxes already started keep theirs. */
  setOptions(opts: BoxPoolOptions): void {
    this.opts = opts;
  }

  /** Boxes started ahead and waiting now. */
  get size(): number {
    return this.count;
  }

  /**
   * The process of one script run: a box started ahead for exactly this
   * command line, or a fresh one; `spec.go` is handed to it on fd 4, and
   * a box for the tenant's next run starts. stdio: stdin, stdout, stderr,
   * the mail channel (fd 3), and fd 4 (already closed on this side).
   */
  start(spec: SpawnSpec): ChildProcess {
    if (spec.go === undefined) throw new Error('a box from the pool needs a run (go) for its stub');
    const key = `${spec.cwd}\0${spec.command}\0${spec.args.join('\0')}`;
    const list = this.spare.get(key) ?? [];
    const box = list.shift();
    if (box) {
      this.count--;
      unwatch(box);
    }
    if (list.length === 0) this.spare.delete(key);
    const proc = box?.proc ?? launch(spec);
    const control = proc.stdio[GO_FD] as Writable;
    // The box ended before it read its run (killed, or it failed to start): its exit says so.
    control.on('error', () => undefined);
    control.end(spec.go);
    // The next box once this run is on its way (a spawn blocks this process for a few milliseconds).
    // Not for a command line from before a discard (a reload or a stop since).
    const generation = this.generation;
    setImmediate(() => generation === this.generation && this.refill(key, spec));
    return proc;
  }

  /** Ends every box started ahead. */
  discard(): void {
    this.generation++;
    for (const list of this.spare.values()) {
      for (const box of list) {
        this.end(box);
        this.opts.dropped?.(box.proc);
      }
    }
    this.spare.clear();
    this.count = 0;
  }

  private refill(key: string, spec: SpawnSpec): void {
    let list = this.spare.get(key);
    while ((list?.length ?? 0) < this.opts.depth && this.count < this.opts.max) {
      const proc = launch(spec);
      const box: Spare = {
        proc,
        timer: setTimeout(() => this.drop(key, box, true), this.opts.idleMs),
        // Ended before its run (killed from outside, or bwrap failed): no longer a spare.
        onExit: () => this.drop(key, box, false),
        onError: (err) => {
          this.opts.log?.warn({ err: err.message }, 'a box started ahead failed');
          this.drop(key, box, false);
        },
      };
      box.timer.unref();
      proc.on('exit', box.onExit);
      proc.on('error', box.onError);
      if (!list) this.spare.set(key, (list = []));
      list.push(box);
      this.count++;
      this.opts.started?.(proc);
    }
  }

  private drop(key: string, box: Spare, kill: boolean): void {
    const list = this.spare.get(key);
    const i = list?.indexOf(box) ?? -1;
    if (i === -1) return;
    list!.splice(i, 1);
    if (list!.length === 0) this.spare.delete(key);
    this.count--;
    if (kill) this.end(box);
    else unwatch(box);
    this.opts.dropped?.(box.proc);
  }

  private end(box: Spare): void {
    unwatch(box);
    // Ended on purpose: an error from here on (a kill of a process already gone) tells nothing.
    box.proc.on('error', () => undefined);
    // Its fd 4 closed: the stub reads no run and exits, even if bwrap is killed before its box
    // learnt to die with it (a box killed right after its start). Then bwrap, and the box with it.
    for (const s of box.proc.stdio) s?.destroy();
    box.proc.kill('SIGKILL');
  }
}

function unwatch(box: Spare): void {
  clearTimeout(box.timer);
  box.proc.off('exit', box.onExit);
  box.proc.off('error', box.onError);
}

function launch(spec: SpawnSpec): ChildProcess {
  // An empty environment: the run's own comes through fd 4.
  const proc = spawn(spec.command, spec.args, { cwd: spec.cwd, env: {}, stdio: boxStdio(spec, ['pipe', 'pipe', 'pipe', 'pipe', 'pipe']) });
  feedFilter(spec, proc);
  return proc;
}
