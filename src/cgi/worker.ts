import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Logger } from '../core/log.ts';
import { encodeFrame, encodeRequest, FrameReader, T, type Frame } from './protocol.ts';
import { boxStdio, feedFilter, type SpawnSpec } from './sandbox.ts';

/** What a handler learns about the site it runs for (besides its meta-variables). */
export interface SiteInfo {
  id: string;
  domains: readonly string[];
  /** Name of the form field that only robots fill in. */
  honeypot: string;
}

export interface RunInput {
  handler: string;
  env: Record<string, string>;
  site: SiteInfo;
  body: Buffer;
}

/** How a run ended. Only `done` carries output; the others map to 502/504. */
export type RunResult =
  | { kind: 'done'; output: Buffer; error?: string }
  | { kind: 'timeout' }
  | { kind: 'memory' }
  | { kind: 'output' }
  | { kind: 'crashed'; detail: string };

/** Answers a handler's request to send mail (the suite checks everything). */
export type MailHook = (message: unknown) => Promise<unknown>;

export interface WorkerLimits {
  timeoutMs: number;
  memory: number;
  maxOutput: number;
}

const STDERR_KEEP = 4096;
const MAX_MAIL_ASKS = 20;
/** CPU an idle process may burn (background timers) before it is ended: 1 s at the usual 100 ticks/s. */
const IDLE_CPU_TICKS = 100;
const PAGE = 4096;

/**
 * One sandboxed handler process. It serves one run at a time; its output
 * is buffered up to the limit (so an over-long answer becomes a clean 502
 * instead of half a page). Any broken limit kills it with SIGKILL.
 */
export class Worker {
  readonly proc: ChildProcess;
  runs = 0;
  alive = true;
  /** Still counted in its pool's and the global number of processes. */
  counted = true;
  idleTimer: NodeJS.Timeout | undefined;
  /** Settles when the process has exited. */
  readonly exited: Promise<void>;
  private readonly reader: FrameReader;
  private killReason: 'timeout' | 'memory' | 'output' | 'protocol' | undefined;
  private stderr = '';
  private strayBytes = 0;
  private readonly forks: boolean;
  private child: number | undefined;
  /** CPU time (clock ticks) when the process last went idle. */
  private idleCpu: number | undefined;
  private outOfMemory = false;
  private runSeq = 0;
  private current:
    | { id: number; chunks: Buffer[]; size: number; mails: number; timer: NodeJS.Timeout; mail: MailHook; resolve: (r: RunResult) => void }
    | undefined;

  constructor(
    spec: SpawnSpec,
    readonly pool: string,
    private readonly limits: WorkerLimits,
    private readonly log: Logger,
    onExit: (w: Worker) => void,
  ) {
    this.reader = new FrameReader(limits.maxOutput + 64 * 1024);
    // A minimal environment: nothing of the suite's reaches the handler
    // (and NODE_EXTRA_CA_CERTS and the like would slow every start).
    this.proc = spec.launch ? spec.launch.client.start(spec.launch.ask) : spawn(spec.command, spec.args, { cwd: spec.cwd, env: {}, stdio: boxStdio(spec, ['pipe', 'pipe', 'pipe']) });
    if (!spec.launch) feedFilter(spec, this.proc as ChildProcess);
    this.forks = spec.forks;
    // A handler that exits before reading its input: its exit is what the run reports.
    this.proc.stdin!.on('error', () => undefined);
    this.proc.stdout!.on('data', (chunk: Buffer) => this.onData(chunk));
    let tail = '';
    let stderrBytes = 0;
    this.proc.stderr!.on('data', (chunk: Buffer) => {
      // Reading costs the suite CPU: a process that floods stderr is ended like one that floods stdout.
      stderrBytes += chunk.length;
      if (stderrBytes > limits.maxOutput) this.kill('output');
      const text = chunk.toString('utf8');
      if (this.stderr.length < STDERR_KEEP) this.stderr += text.slice(0, STDERR_KEEP - this.stderr.length);
      // Out-of-memory reports are looked for in the whole stream, not only the part kept for the log:
      // V8's own, or the C++ runtime's when RLIMIT_DATA refuses an allocation.
      tail = (tail + text).slice(-1024);
      if (/heap out of memory|Allocation failed|std::bad_alloc/i.test(tail)) this.outOfMemory = true;
    });
    let exited = false;
    let markExited: () => void = () => undefined;
    this.exited = new Promise((resolve) => (markExited = resolve));
    const exit = (code: number | null, signal: NodeJS.Signals | null, err?: Error) => {
      if (exited) return;
      exited = true;
      markExited();
      this.alive = false;
      const cur = this.current;
      this.current = undefined;
      if (cur) {
        clearTimeout(cur.timer);
        const reason = this.killReason === 'protocol' ? undefined : (this.killReason ?? (this.outOfMemory ? 'memory' : undefined));
        cur.resolve(reason ? { kind: reason } : { kind: 'crashed', detail: err ? err.message : `exit ${code ?? signal}${this.killReason ? ` (${this.killReason})` : ''}` });
      }
      onExit(this);
    };
    // 'close', not 'exit': stderr is read to its end by then (a V8 out-of-memory message arrives last).
    this.proc.on('close', (code, signal) => exit(code, signal));
    this.proc.on('error', (err) => exit(null, null, err));
  }

  /**
   * The pid of Node itself: the spawned process, or its child when the
   * spawned bwrap forks into its box (from /proc, once known).
   */
  private nodePid(): number | undefined {
    const pid = this.proc.pid;
    if (!this.alive || pid === undefined) return undefined;
    if (!this.forks) return pid;
    if (this.child === undefined) {
      try {
        const first = readFileSync(`/proc/${pid}/task/${pid}/children`, 'latin1').trim().split(' ')[0];
        if (first) this.child = Number(first);
      } catch {
        // not forked yet, or gone
      }
    }
    return this.child;
  }

  /** Resident memory in bytes, from /proc (undefined when unknown). */
  rss(): number | undefined {
    const pid = this.nodePid();
    if (pid === undefined) return undefined;
    try {
      const statm = readFileSync(`/proc/${pid}/statm`, 'latin1');
      return Number(statm.split(' ')[1]) * PAGE;
    } catch {
      // The process has just exited: no memory to measure.
      return undefined;
    }
  }

  /** Takes and clears what the process printed on stderr so far. */
  takeStderr(): string {
    const s = this.stderr;
    this.stderr = '';
    return s;
  }

  get busy(): boolean {
    return this.current !== undefined;
  }

  run(input: RunInput, mail: MailHook): Promise<RunResult> {
    if (!this.alive) return Promise.resolve({ kind: 'crashed', detail: 'process gone' });
    this.runs++;
    const id = ++this.runSeq;
    return new Promise<RunResult>((resolve) => {
      const timer = setTimeout(() => this.kill('timeout'), this.limits.timeoutMs);
      this.current = { id, chunks: [], size: 0, mails: 0, timer, mail, resolve };
      this.proc.stdin!.write(encodeRequest(id, { handler: input.handler, env: input.env, site: input.site }, input.body));
    });
  }

  /** Kills the process now; a run in progress ends with `reason`. */
  kill(reason?: 'timeout' | 'memory' | 'output' | 'protocol'): void {
    if (reason && !this.killReason) this.killReason = reason;
    if (!this.alive) return;
    const child = this.forks ? this.nodePid() : undefined;
    if (child !== undefined) {
      // Node first: bwrap reaps it and exits the same way (killing bwrap
      // first would leave Node to --die-with-parent, a moment later).
      try {
        process.kill(child, 'SIGKILL');
        return;
      } catch {
        // already gone: end bwrap below
      }
    }
    this.proc.kill('SIGKILL');
  }

  /** Asks the process to end: it exits when its stdin closes, or is killed a second later (a busy loop never reads). */
  close(): void {
    this.proc.stdin!.end();
    if (this.alive) setTimeout(() => this.kill(), 1000).unref();
  }

  /** Marks the start of an idle period (for {@link idleTooBusy}). */
  markIdle(): void {
    this.idleCpu = this.cpuTicks();
  }

  /** True when the process has burnt more than a second of CPU since it went idle. */
  idleTooBusy(): boolean {
    if (this.current || this.idleCpu === undefined) return false;
    const now = this.cpuTicks();
    return now !== undefined && now - this.idleCpu > IDLE_CPU_TICKS;
  }

  /** utime + stime from /proc/<pid>/stat, in clock ticks. */
  private cpuTicks(): number | undefined {
    const pid = this.nodePid();
    if (pid === undefined) return undefined;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
      // Fields after the ")" that closes the command name; utime and stime are fields 14 and 15 (proc(5)).
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return Number(f[11]) + Number(f[12]);
    } catch {
      // The process has just exited: no CPU time to read.
      return undefined;
    }
  }

  private onData(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.reader.push(chunk);
    } catch (err) {
      this.log.info({ pool: this.pool, why: (err as Error).message }, 'handler broke the frame protocol; killed');
      this.kill('protocol');
      return;
    }
    for (const f of frames) {
      const cur = this.current;
      // Output of a run that already ended (a late timer) belongs to nobody;
      // without end it would only cost the suite CPU.
      if (!cur || f.run !== cur.id) {
        this.strayBytes += f.payload.length;
        if (this.strayBytes > this.limits.maxOutput) {
          this.kill('output');
          return;
        }
        continue;
      }
      if (f.type === T.output) {
        cur.size += f.payload.length;
        if (cur.size > this.limits.maxOutput) {
          this.kill('output');
          return;
        }
        cur.chunks.push(Buffer.from(f.payload));
      } else if (f.type === T.mail) {
        // The suite refuses past a few messages per run; a flood of asks is a broken or hostile handler.
        if (++cur.mails > MAX_MAIL_ASKS) {
          this.kill('protocol');
          return;
        }
        let parsed: { id?: unknown; message?: unknown };
        try {
          parsed = JSON.parse(f.payload.toString('utf8')) as typeof parsed;
        } catch {
          this.kill('protocol');
          return;
        }
        void cur
          .mail(parsed.message)
          .catch((err: Error) => {
            this.log.error({ pool: this.pool, err: err.message }, 'handler mail request failed');
            return { ok: false, code: 'failed', message: 'the message could not be sent' };
          })
          .then((result) => {
          if (this.current === cur && this.alive) {
            this.proc.stdin!.write(encodeFrame(T.answer, cur.id, Buffer.from(JSON.stringify({ id: parsed.id, result }))));
          }
        });
      } else if (f.type === T.end) {
        let end: { error?: unknown } = {};
        try {
          end = JSON.parse(f.payload.toString('utf8')) as typeof end;
        } catch {
          end = { error: 'unreadable end of run' };
        }
        clearTimeout(cur.timer);
        this.current = undefined;
        const output = Buffer.concat(cur.chunks);
        cur.resolve(typeof end.error === 'string' ? { kind: 'done', output, error: end.error } : { kind: 'done', output });
      } else {
        this.kill('protocol');
        return;
      }
    }
  }
}
