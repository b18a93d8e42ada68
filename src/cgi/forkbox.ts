import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { Logger } from '../core/log.ts';
import { boxInitPlan, boxInitSource, programFolderProblem, type BoxInit } from '../lib/boxinit.ts';
import { boxStdio, feedFilter, type SpawnSpec } from './sandbox.ts';

/**
 * Persistent script boxes: one bubblewrap box per tenant whose PID 1 is
 * box-init (native/box-init.c), a small fork server. The box is built once
 * (uid, rlimits, mounts, no network); each run is a clone of box-init in
 * fresh PID, mount, IPC and UTS namespaces with its own /tmp and /proc and
 * its own rlimits, exec'd as PID 1 of its PID namespace. The box's two
 * sockets: control (fd 3, kept by whoever started the box: runs and kills)
 * and data (fd 4, the server's: the run's stdin, stdout, stderr and mail
 * channel as frames). A frame: u32 payload length, u32 run id, u8 type.
 */

/** The C source of box-init, shipped with the package. */
export const BOX_INIT_SOURCE = boxInitSource();

export type { BoxInit };

/**
 * box-init compiled for this machine into `dir` (made 0755; the binary
 * 0755, named by its source's hash, so an upgrade compiles again) with
 * `cc`, once; found again at the next start. Why not, when there is no
 * compiler or it fails: scripts then get one fresh box per run. A folder or
 * a binary someone else could have written is refused, never run
 * ({@link boxInitPlan}, which `makewaves check` asks too).
 */
export function compileBoxInit(dir: string, searchPath?: string): BoxInit {
  const plan = boxInitPlan(dir, searchPath);
  if (!plan.ok || !plan.build) return plan.ok ? { ok: true, path: plan.path } : plan;
  const me = process.getuid?.() ?? 0;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    // Past the umask, but only a folder of our own: another's is refused just below, as it is.
    const st = lstatSync(dir);
    if (st.isDirectory() && st.uid === me) chmodSync(dir, 0o755);
  } catch (err) {
    return { ok: false, why: `${dir} cannot be made (${(err as Error).message})` };
  }
  const folder = programFolderProblem(dir, me);
  if (folder) return { ok: false, why: `box-init is neither built nor run there: ${folder}` };
  const tmp = `${plan.path}.${process.pid}.tmp`;
  const r = spawnSync(plan.cc, ['-O2', '-Wall', '-o', tmp, BOX_INIT_SOURCE], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) {
    rmSync(tmp, { force: true });
    return { ok: false, why: `cc could not build box-init: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim().split('\n').slice(0, 3).join(' ')}` };
  }
  chmodSync(tmp, 0o755);
  renameSync(tmp, plan.path);
  return { ok: true, path: plan.path };
}

/** One run's limits, applied by box-init in the run's own process before it execs the script. */
export interface RunLimits {
  /** RLIMIT_CPU, seconds: the soft limit; the hard one, a second later, is where the kernel kills (a script is PID 1 of its namespace and ignores the SIGXCPU of the soft one). */
  cpu: number;
  data: number;
  fsize: number;
  nofile: number;
  /** Size of the run's private /tmp. */
  tmp: number;
}

/** What one run executes: the script's folder, the interpreter's command line, the whole environment. */
export interface RunRequest {
  cwd: string;
  argv: string[];
  env: Record<string, string>;
  limits: RunLimits;
}

const HEAD = 9;
/** The largest frame box-init takes (MAX_FRAME in box-init.c). */
export const MAX_FRAME = 256 * 1024;

export function frame(id: number, type: string, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(HEAD);
  h.writeUInt32LE(payload.length, 0);
  h.writeUInt32LE(id, 4);
  h.writeUInt8(type.charCodeAt(0), 8);
  return payload.length ? Buffer.concat([h, payload]) : h;
}

/** The R frame of a run: limits, argc, envc, then the cwd, argv and KEY=value strings, each NUL-ended. Throws on a NUL inside one. */
export function runFrame(id: number, run: RunRequest): Buffer {
  const env = Object.entries(run.env).map(([k, v]) => `${k}=${v}`);
  const strings = [run.cwd, ...run.argv, ...env];
  if (strings.some((s) => s.includes('\0'))) throw new Error('NUL in a script run');
  if (Object.keys(run.env).some((k) => k.includes('=') || k === '')) throw new Error('bad environment variable name');
  const lim = Buffer.alloc(48);
  const l = run.limits;
  [l.cpu, l.data, l.fsize, l.nofile, l.tmp].forEach((v, i) => lim.writeBigUInt64LE(BigInt(Math.max(0, Math.floor(v))), i * 8));
  lim.writeUInt32LE(run.argv.length, 40);
  lim.writeUInt32LE(env.length, 44);
  const payload = Buffer.concat([lim, Buffer.from(`${strings.join('\0')}\0`, 'utf8')]);
  if (payload.length > MAX_FRAME) throw new Error('script run too large');
  return frame(id, 'R', payload);
}

/** Splits a stream of frames; `on` gets each whole one. */
export function frameReader(stream: Readable, on: (id: number, type: string, payload: Buffer) => void): void {
  let buf: Buffer = Buffer.alloc(0);
  stream.on('data', (c: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, c]) : c;
    while (buf.length >= HEAD) {
      const len = buf.readUInt32LE(0);
      if (buf.length < HEAD + len) break;
      on(buf.readUInt32LE(4), String.fromCharCode(buf[8]!), buf.subarray(HEAD, HEAD + len));
      buf = buf.subarray(HEAD + len);
    }
  });
}

/** A wait status (as box-init reports it) as Node's exit code and signal. */
export function decodeStatus(st: number): { code: number | null; signal: NodeJS.Signals | null } {
  if ((st & 0x7f) === 0) return { code: (st >> 8) & 0xff, signal: null };
  const n = st & 0x7f;
  const name = Object.entries(constants.signals).find(([, v]) => v === n)?.[0];
  return { code: null, signal: (name ?? 'SIGKILL') as NodeJS.Signals };
}

export interface ForkBoxEvents {
  /** A run ended (its wait status), or could not start (why). */
  ended?: (id: number, status: number | undefined, why?: string) => void;
}

/**
 * One tenant's persistent box, as its starter sees it: the bwrap process,
 * the control socket (its fd 3) and the data socket (fd 4, for the
 * server). It ends when idle for `idleMs`, when retired and its last run
 * is over, or with its starter.
 */
export class ForkBox {
  readonly proc: ChildProcess;
  readonly data: Readable & Writable;
  private readonly control: Readable & Writable;
  private readonly active = new Set<number>();
  private idle: NodeJS.Timeout | undefined;
  private retired = false;
  ended = false;

  constructor(
    spec: Pick<SpawnSpec, 'command' | 'args' | 'cwd' | 'filter'>,
    private readonly idleMs: number,
    private readonly events: ForkBoxEvents,
    private readonly log?: Logger,
  ) {
    this.proc = spawn(spec.command, spec.args, { cwd: spec.cwd, env: {}, stdio: boxStdio(spec, ['ignore', 'ignore', 'pipe', 'pipe', 'pipe']) });
    feedFilter(spec, this.proc);
    this.control = this.proc.stdio[3] as Readable & Writable;
    this.data = this.proc.stdio[4] as Readable & Writable;
    // A box that fails says why on its stderr (box-init's and bwrap's own words).
    this.proc.stderr!.on('data', (c: Buffer) => this.log?.warn({ said: c.toString('utf8').trim().slice(0, 500) }, 'script box said'));
    this.proc.on('error', (err) => this.log?.warn({ err: err.message }, 'script box failed to start'));
    this.control.on('error', () => undefined); // the box ended under a write: its exit fails its runs
    this.proc.on('exit', () => this.gone('the script box ended'));
    frameReader(this.control, (id, type, payload) => {
      // A run's start (S) is told on the data socket only, to the server: this side is not woken for it.
      if (type === 'X') this.finish(id, payload.readInt32LE(0));
      else if (type === 'F') this.finish(id, undefined, `the script box could not start the run: ${payload.toString('utf8')}`);
    });
    this.arm();
  }

  get runs(): number {
    return this.active.size;
  }

  /** Whether it takes new runs (not retired, not ended). */
  get open(): boolean {
    return !this.retired && !this.ended;
  }

  run(id: number, req: RunRequest): void {
    const f = runFrame(id, req);
    this.active.add(id);
    if (this.idle) clearTimeout(this.idle);
    this.idle = undefined;
    this.control.write(f);
  }

  kill(id: number): void {
    if (this.active.has(id)) this.control.write(frame(id, 'K'));
  }

  /** No new runs; ends once its runs are over (a reload: the tenant, its folders or limits may have changed). */
  retire(): void {
    this.retired = true;
    if (this.active.size === 0) this.end();
  }

  /** Ends the box now: box-init ends at its control socket's end, and bwrap is killed besides. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.idle) clearTimeout(this.idle);
    this.control.destroy();
    this.data.destroy();
    this.proc.kill('SIGKILL');
  }

  private finish(id: number, status: number | undefined, why?: string): void {
    if (!this.active.delete(id)) return;
    this.events.ended?.(id, status, why);
    if (this.active.size === 0) {
      if (this.retired) this.end();
      else this.arm();
    }
  }

  private arm(): void {
    this.idle = setTimeout(() => this.end(), this.idleMs);
    this.idle.unref();
  }

  private gone(why: string): void {
    this.ended = true;
    if (this.idle) clearTimeout(this.idle);
    for (const id of [...this.active]) this.finish(id, undefined, why);
  }
}
