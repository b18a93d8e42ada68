import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import type { Socket } from 'node:net';
import path from 'node:path';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import type { Logger } from '../core/log.ts';
import { findExecutable } from '../lib/box.ts';
import { packageRoot } from '../lib/paths.ts';
import { decodeStatus, frame, frameReader } from './forkbox.ts';
import { KEEPER_RESTART_MS, type KeeperSpec } from './keeper.ts';

/** What the server asks the launcher to run (launcher.ts checks it all again). */
export interface LaunchAsk {
  tenant: string;
  kind: 'suite' | 'own' | 'script';
  name: string;
  env: Record<string, string>;
}

/**
 * A process the launcher started, seen from the server: the stdio the
 * launcher handed over, its pid, and kill() through the launcher (the
 * server, unprivileged, cannot signal another uid). Emits 'exit' and
 * 'close' like a ChildProcess, or 'error' when the launcher refused.
 */
export class LaunchedProcess extends EventEmitter {
  readonly stdin = new PassThrough();
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  /** A script's mail channel (its fd 3), read by classic.ts. */
  readonly mail = new PassThrough();
  pid: number | undefined;
  uid: number | undefined;
  private exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private open = 2;
  private done = false;
  private killSent = false;
  /** The pipes the launcher handed over for it: closed when it fails, so a box that outlived its launcher ends. */
  private readonly handles: Array<Readable | Writable> = [];

  /** The tenant it runs for (frames of a tenant's box reach only its own runs). */
  tenant = '';
  /** The client's number for the run (the launcher's and box-init's too). */
  runId = 0;
  /** In a persistent script box (forkbox.ts): its data socket, and whether box-init has started the run. */
  box: { socket: Writable; started: boolean } | undefined;

  constructor(private readonly killer: () => void) {
    super();
    for (const s of [this.stdout, this.stderr]) s.on('end', () => this.streamEnded());
  }

  get stdio(): [PassThrough, PassThrough, PassThrough, PassThrough] {
    return [this.stdin, this.stdout, this.stderr, this.mail];
  }

  kill(): boolean {
    if (this.done || this.exit || this.killSent) return false;
    this.killSent = true;
    this.killer();
    return true;
  }

  /** @internal from the client */
  attach(fd: number, handle: Readable | Writable): void {
    handle.on('error', () => undefined); // a pipe closed under a write: the run's end says what happened
    // Failed already (refused, its launcher gone): nobody reads or writes it, and its box must see its end.
    if (this.done) return void handle.destroy();
    this.handles.push(handle);
    if (fd === 0) this.stdin.pipe(handle as Writable);
    else (handle as Readable).pipe(fd === 1 ? this.stdout : fd === 2 ? this.stderr : this.mail);
  }

  /**
   * @internal One frame of its persistent box: S started (pid), O stdout,
   * e stderr, M mail, C a stream's end (its fd), X its wait status.
   */
  boxFrame(type: string, payload: Buffer, socket: Writable, uid: number): void {
    if (type === 'S') {
      if (this.box) return;
      this.box = { socket, started: true };
      this.pid = payload.readUInt32LE(0);
      this.uid = uid;
      this.stdin.on('data', (c: Buffer) => {
        for (let i = 0; i < c.length; i += 65536) socket.write(frame(this.runId, 'I', c.subarray(i, i + 65536)));
      });
      this.stdin.on('end', () => socket.write(frame(this.runId, 'E')));
      this.emit('spawn');
      return;
    }
    if (this.box?.socket !== socket) return; // not started in this box: nothing of it is taken from there
    if (type === 'O') this.stdout.write(payload);
    else if (type === 'e') this.stderr.write(payload);
    else if (type === 'M') this.mail.write(payload);
    else if (type === 'C') [this.stdout, this.stderr, this.mail][payload.readUInt8(0) - 1]?.end();
    else if (type === 'X') {
      const { code, signal } = decodeStatus(payload.readInt32LE(0));
      this.exited(code, signal);
    }
  }

  /** @internal */
  exited(code: number | null, signal: NodeJS.Signals | null, error?: string): void {
    if (error !== undefined) return this.fail(error);
    this.exit = { code, signal };
    this.emit('exit', code, signal);
    this.maybeClose();
  }

  /** @internal refused by the launcher, or the launcher gone */
  fail(why: string): void {
    if (this.done) return;
    this.done = true;
    for (const h of this.handles.splice(0)) h.destroy();
    this.stdout.end();
    this.stderr.end();
    this.mail.end();
    this.emit('error', new Error(why));
  }

  private streamEnded(): void {
    this.open--;
    this.maybeClose();
  }

  private maybeClose(): void {
    if (this.done || !this.exit || this.open > 0) return;
    this.done = true;
    this.emit('close', this.exit.code, this.exit.signal);
  }

  /** Typed as a ChildProcess for worker.ts and classic.ts, which use stdin, stdout, stderr, pid, kill and on. */
  asChild(): ChildProcess {
    return this as unknown as ChildProcess;
  }
}

type Reply =
  | { op: 'ready'; uids: Record<string, number>; forkBox?: true | string }
  | { op: 'failed'; why: string }
  | { op: 'reloaded'; why?: string }
  | { op: 'forkbox'; box: number; tenant: string; uid: number }
  | { op: 'started'; id: number; pid: number; uid: number; box?: number }
  | { op: 'stdio'; id: number; fd: number }
  | { op: 'box'; box: number }
  | { op: 'stdio'; box: number; fd: number }
  | { op: 'unbox'; box: number }
  | { op: 'exit'; id: number; code: number | null; signal: NodeJS.Signals | null; error?: string }
  | { op: 'refused'; id?: number; why: string }
  | { op: 'repaired'; tenant: string; dir: string; was: string }
  | { op: 'scratched'; id: number }
  // From the keeper (keeper-main.ts): the launcher's pid at each start, its end unasked, and the keeper's own end.
  | { op: 'launcher'; pid: number }
  | { op: 'relaunching'; why: string; attempt: number; inMs: number }
  | { op: 'keeper-ending' };

/**
 * How long the launcher has, from its fork, to load the configuration folder
 * and say it is ready: 60 s. Its load of 10,000 tenants takes under 1.5 s
 * (docs/performance.md); the margin is for a cold start from a slow disk. A
 * launcher not ready by then (wedged, a disk that hangs) fails the suite's
 * start instead of holding it, and every handler request, forever.
 */
export const LAUNCHER_READY_MS = 60_000;

export interface LauncherOptions {
  /** The launcher's program (tests give one that never says it is ready); default: src/cgi/launcher-main.ts, or dist/launcher.mjs once built. */
  entry?: string;
  /** How long it has to say it is ready (default {@link LAUNCHER_READY_MS}). */
  readyWithinMs?: number;
  /** When its keeper starts it again after an end unasked (default {@link KEEPER_RESTART_MS}; tests give shorter times). */
  restartMs?: KeeperSpec['restartMs'];
}

/** {@link setprivWithPdeathsig}'s answer, by the setpriv found (asked once per process). */
const pdeathsigAnswers = new Map<string, boolean>();

/**
 * The setpriv on PATH if it has --pdeathsig (util-linux 2.33 on; RHEL 8's
 * 2.32 has setpriv without it, refuses the option and exits: a launcher
 * started through it would never run), else undefined: the launcher is then
 * forked as it is, ending with the server by its channel alone. Asked of its
 * --help, once per process.
 */
function setprivWithPdeathsig(): string | undefined {
  const setpriv = findExecutable('setpriv');
  if (!setpriv) return undefined;
  let has = pdeathsigAnswers.get(setpriv);
  if (has === undefined) {
    const help = spawnSync(setpriv, ['--help'], { encoding: 'utf8', timeout: 5_000, env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' } });
    has = typeof help.stdout === 'string' && help.stdout.includes('--pdeathsig');
    pdeathsigAnswers.set(setpriv, has);
  }
  return has ? setpriv : undefined;
}

/**
 * The server's side of the launcher: forks it (as root, before the drop),
 * sends it one JSON text per request and turns its replies into
 * LaunchedProcess events.
 */
export class LauncherClient {
  private readonly proc: ChildProcess;
  private readonly runs = new Map<number, LaunchedProcess>();
  private readonly scratches = new Map<number, () => void>();
  /** Pipes of boxes the launcher started ahead, by box number, until a run takes the box or it ends unused. */
  private readonly boxes = new Map<number, Array<[number, Readable | Writable]>>();
  private seq = 0;
  private gone: string | undefined;
  /** While the keeper starts the launcher again ('relaunching' until its 'ready'). */
  private restart: { why: string; attempt: number; ready: Promise<void>; up: () => void; down: (e: Error) => void } | undefined;
  /** The launcher's request socket (one JSON text a line), handed over by its keeper; undefined until then and between launchers. */
  private requests: Socket | undefined;
  /** Requests made before the keeper handed the socket over. */
  private queued: string[] = [];
  /** The launcher's own process id, as its keeper told it (tests end it as the OOM killer would). */
  launcherPid: number | undefined;
  /** Why the launcher could not start (its config refused, say), as it said before ending. */
  private failed: string | undefined;
  /** A launcher has said it is ready: a 'failed' from now on is of a start again. */
  private wasReady = false;
  /** Why the launcher refused the last reload (it keeps the config it had); undefined once it took one, or while it loads one. */
  reloadRefused: string | undefined;
  private reloadsAsked = 0;
  private reloadsAnswered = 0;
  /** A reload came while the launcher started again: it is asked once that one is ready. */
  private reloadWhenUp = false;
  /** stop() was called: the launcher's end that follows is the one asked for. */
  private stopping = false;
  /**
   * Emits 'refused' (why, run id or undefined) for each refusal the launcher sends back, 'reloaded' (why refused, or
   * undefined) for each answer to a reload, 'relaunching' (why, attempt) when its keeper starts it again after an end
   * unasked, and 'ready' when one started again is ready.
   */
  readonly events = new EventEmitter();
  /** Each tenant's uid as the launcher gave it (for the start-up log). */
  uids: Record<string, number> = {};
  /** true when scripts run in one persistent box per tenant; else why each gets a fresh box. */
  forkBox: true | string = 'not told';
  /**
   * Settles once the launcher has loaded the configuration; rejects when it
   * ends first, or is not ready within {@link LauncherOptions.readyWithinMs}.
   */
  readonly ready: Promise<void>;
  /** Fails `ready` when the launcher takes too long (cleared once it settles). */
  private readonly readyTimer: NodeJS.Timeout;
  /** True when the kernel ends the launcher with the server's process (setpriv --pdeathsig; util-linux). */
  readonly diesWithServer: boolean;

  /** The keeper's process id, the server's child (for logs and tests; the launcher's is {@link launcherPid}). */
  get pid(): number | undefined {
    return this.proc.pid;
  }

  constructor(configDir: string, suiteDir: string, private readonly log: Logger, options: LauncherOptions = {}) {
    const fromSource = import.meta.url.endsWith('.ts');
    const built = (name: string, source: string) => (fromSource ? path.join(packageRoot(), 'src', 'cgi', source) : path.join(packageRoot(), 'dist', name));
    const entry = options.entry ?? built('launcher.mjs', 'launcher-main.ts');
    const keeper = built('launcher-keeper.mjs', 'keeper-main.ts');
    for (const f of [entry, keeper]) if (!existsSync(f)) throw new Error(`${f} is missing (npm run build makes it)`);
    // A small young generation keeps the idle launcher small (10,000 tenants: ~35 MiB less); not --optimize-for-size,
    // which took a third longer over its load of the config at the start, on the path to the server's first answer.
    const nodeArgs = [...(fromSource ? ['--import', 'tsx'] : []), '--max-semi-space-size=1'];
    // Through setpriv --pdeathsig: the kernel kills the keeper when the server's process ends, however it ends, and the
    // launcher when the keeper's does. Their own watch ('disconnect') needs their event loop; one wedged would
    // otherwise stay, as root, where a server dropped to `user:` may not signal it.
    const setpriv = setprivWithPdeathsig();
    this.diesWithServer = setpriv !== undefined;
    if (!setpriv) log.info({ why: 'no setpriv with --pdeathsig (util-linux 2.33 or later)' }, 'the handler launcher ends with the server by its channel alone; one wedged would stay behind');
    const through = (args: string[]) => (setpriv ? { execPath: setpriv, execArgv: ['--pdeathsig', 'KILL', '--', process.execPath, ...args] } : { execPath: process.execPath, execArgv: args });
    const withinMs = options.readyWithinMs ?? LAUNCHER_READY_MS;
    // The server forks the keeper, which forks the launcher and starts it again when it ends unasked (keeper-main.ts).
    const spec: KeeperSpec = { entry, args: [configDir, suiteDir], ...through(nodeArgs), readyMs: withinMs, restartMs: options.restartMs ?? KEEPER_RESTART_MS };
    this.proc = fork(keeper, [JSON.stringify(spec)], {
      cwd: packageRoot(),
      ...through(nodeArgs),
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'json',
      // A session of its own: a signal to the server's process group (Ctrl-C, a closed terminal) is the server's to act
      // on (a graceful stop, its runs finished); the keeper and the launcher end with the server ('disconnect').
      detached: true,
    });
    let readyNow: () => void = () => undefined;
    let readyFailed: (e: Error) => void = () => undefined;
    this.ready = new Promise((resolve, reject) => {
      readyNow = resolve;
      readyFailed = reject;
    });
    // Started ahead of the server's own start, it may be stopped before anyone awaits it (a refused config).
    this.ready.catch(() => undefined);
    this.readyTimer = setTimeout(() => {
      const why = `the handler launcher did not say it was ready within ${withinMs / 1000} s of its start (it was loading the configuration folder ${configDir})`;
      this.log.error({ why, pid: this.proc.pid }, 'handler launcher not ready in time: ended');
      readyFailed(new Error(why));
      this.end();
    }, withinMs);
    // Only the start waits for it: a process with nothing else to do need not stay for it.
    this.readyTimer.unref();
    this.proc.on('message', (m: Reply, handle: unknown) => {
      if (m.op === 'ready') {
        this.uids = m.uids;
        this.forkBox = m.forkBox ?? 'not told';
        clearTimeout(this.readyTimer);
        this.wasReady = true;
        if (this.restart) {
          this.log.info({ pid: this.launcherPid, after: this.restart.why, attempt: this.restart.attempt }, 'handler launcher started again: handlers run again');
          this.restart.up();
          this.restart = undefined;
          // It loaded the folder as it is now: a reload the one before refused no longer says how it runs.
          this.reloadRefused = undefined;
          if (this.reloadWhenUp) {
            this.reloadWhenUp = false;
            this.reload();
          }
          this.events.emit('ready');
        }
        return readyNow();
      }
      if (m.op === 'launcher') {
        this.launcherPid = m.pid;
        this.takeRequests(handle as Socket | undefined);
        return;
      }
      if (m.op === 'relaunching') {
        const why = `the handler launcher ended unasked (${m.why})`;
        this.log.error({ why: m.why, attempt: m.attempt, inMs: m.inMs }, 'handler launcher ended unasked: it is started again; handler requests wait for it');
        this.failInFlight(why);
        this.takeRequests(undefined);
        // A reload it was asked and did not answer: the next launcher loads the folder as it is then.
        this.reloadsAnswered = this.reloadsAsked;
        if (this.restart) this.restart.why = m.why;
        else {
          let up: () => void = () => undefined;
          let down: (e: Error) => void = () => undefined;
          const ready = new Promise<void>((resolve, reject) => {
            up = resolve;
            down = reject;
          });
          ready.catch(() => undefined); // awaited by requests meanwhile, each with its own bound
          this.restart = { why: m.why, attempt: m.attempt, ready, up, down };
        }
        this.restart.attempt = m.attempt;
        this.events.emit('relaunching', m.why, m.attempt);
        return;
      }
      if (m.op === 'keeper-ending') return;
      if (m.op === 'failed') {
        // A start again that failed is the keeper's to try again, and its 'relaunching' says why.
        if (!this.wasReady) this.failed = m.why;
        return;
      }
      if (m.op === 'reloaded') {
        if (m.why !== undefined) this.log.error({ why: m.why }, 'the handler launcher refused the new configuration and keeps the one it had');
        // Answers come in the order of the asks: one to an older reload says nothing of the config now.
        if (++this.reloadsAnswered === this.reloadsAsked) this.reloadRefused = m.why;
        this.events.emit('reloaded', m.why);
        return;
      }
      if (m.op === 'repaired') {
        this.log.info({ tenant: m.tenant, dir: m.dir, was: m.was }, 'handler scratch folder mode set again');
        return;
      }
      if (m.op === 'refused') {
        this.log.warn({ why: m.why, run: m.id }, 'launcher refused a run');
        this.events.emit('refused', m.why, m.id);
        if (m.id !== undefined) {
          this.scratches.get(m.id)?.();
          this.scratches.delete(m.id);
          this.runs.get(m.id)?.fail(`launcher refused: ${m.why}`);
          this.runs.delete(m.id);
        }
        return;
      }
      if (m.op === 'forkbox') {
        if (handle) this.forkBoxData(handle as Readable & Writable, m.tenant, m.uid);
        return;
      }
      if (m.op === 'box') {
        this.boxes.set(m.box, []);
        return;
      }
      if (m.op === 'stdio' && 'box' in m) {
        const pipes = this.boxes.get(m.box);
        // A pipe of a box this side no longer knows: nobody will use it.
        if (handle) (pipes ? pipes.push([m.fd, handle as Readable]) : (handle as Readable).destroy());
        return;
      }
      if (m.op === 'unbox') {
        for (const [, h] of this.boxes.get(m.box) ?? []) h.destroy();
        this.boxes.delete(m.box);
        return;
      }
      if (m.op === 'scratched') {
        this.scratches.get(m.id)?.();
        this.scratches.delete(m.id);
        return;
      }
      const run = this.runs.get(m.id);
      // A pipe of a run this side has failed (refused, say a kill that came before its start): closed, so its box ends.
      if (!run) return void (handle as Readable | undefined)?.destroy();
      if (m.op === 'started') {
        run.pid = m.pid;
        run.uid = m.uid;
        if (m.box !== undefined) {
          for (const [fd, h] of this.boxes.get(m.box) ?? []) run.attach(fd, h);
          this.boxes.delete(m.box);
        }
        // As a ChildProcess does once its process exists.
        run.emit('spawn');
      } else if (m.op === 'stdio') {
        if (handle) run.attach(m.fd, handle as Readable);
      } else if (m.op === 'exit') {
        this.runs.delete(m.id);
        run.exited(m.code, m.signal, m.error);
      }
    });
    // A fork that failed, or a kill it could not be sent (the server has dropped root, the launcher has not: see end()).
    this.proc.on('error', (err) => this.log.warn({ why: err.message, pid: this.proc.pid }, 'handler launcher process error'));
    this.proc.on('exit', (code, signal) => {
      clearTimeout(this.readyTimer);
      this.gone = this.failed !== undefined ? `the launcher could not start: ${this.failed}` : `the launcher ended (${code ?? signal})`;
      readyFailed(new Error(this.gone));
      // Asked to end (the suite is stopping): its end is expected, not a failure.
      if (this.stopping) this.log.debug({ why: this.gone }, 'handler launcher ended');
      else this.log.error({ why: this.gone }, 'handler launcher gone: every handler is refused until a restart');
      this.failInFlight(this.gone);
      this.takeRequests(undefined);
      this.restart?.down(new Error(this.gone));
      this.restart = undefined;
    });
  }

  /** The launcher that had them is gone: its runs fail, scratch repairs are let go, pipes of boxes started ahead closed. */
  private failInFlight(why: string): void {
    for (const r of this.runs.values()) r.fail(why);
    this.runs.clear();
    for (const done of this.scratches.values()) done();
    this.scratches.clear();
    for (const pipes of this.boxes.values()) for (const [, h] of pipes) h.destroy();
    this.boxes.clear();
  }

  /**
   * While the keeper starts an ended launcher again: why it ended and a
   * promise of its readiness (rejected if the keeper itself ends);
   * undefined while a launcher runs.
   */
  get restarting(): { why: string; attempt: number; ready: Promise<void> } | undefined {
    return this.restart;
  }

  /** A tenant's persistent script box's data socket: its frames go to that tenant's runs, by run id. */
  private forkBoxData(socket: Readable & Writable, tenant: string, uid: number): void {
    routeBoxFrames(socket, tenant, uid, this.runs);
  }

  /** Starts one run of `ask` (asynchronously: refusals arrive as the process's 'error'). */
  start(ask: LaunchAsk): ChildProcess {
    const id = ++this.seq;
    const run: LaunchedProcess = new LaunchedProcess(() => {
      // In a persistent box: straight to box-init (the run is this server's own); otherwise through the launcher.
      if (run.box) run.box.socket.write(frame(id, 'K'));
      else this.send({ op: 'kill', id });
    });
    run.tenant = ask.tenant;
    run.runId = id;
    const refusal = this.gone ?? (this.restart && `the handler launcher is starting again after it ended (${this.restart.why})`);
    if (refusal) {
      queueMicrotask(() => run.fail(refusal));
      return run.asChild();
    }
    this.runs.set(id, run);
    this.send({ op: 'run', id, ...ask });
    return run.asChild();
  }

  /**
   * Has the launcher set the tenant's scratch folder back to 0700 and its
   * uid (a handler owns it and may have opened it up); settles when done.
   */
  scratch(tenant: string): Promise<void> {
    // Between launchers nobody is there to ask: the next one's first run finds the folder as it left it.
    if (this.gone || this.restart) return Promise.resolve();
    const id = ++this.seq;
    return new Promise((resolve) => {
      this.scratches.set(id, resolve);
      this.send({ op: 'scratch', id, tenant });
    });
  }

  /** Why the launcher ended unasked (every handler is refused until a restart); undefined while it runs, or once a stop asked for its end. */
  get ended(): string | undefined {
    return this.stopping ? undefined : this.gone;
  }

  /** Asks the launcher to read the config again; until it answers, no refusal of an earlier one is reported. */
  reload(): void {
    this.reloadRefused = undefined;
    if (this.gone) return;
    // Between launchers there is none to ask; the next one may have read the folder before this change: asked once ready.
    if (this.restart) return void (this.reloadWhenUp = true);
    this.reloadsAsked++;
    this.send({ op: 'reload' });
  }

  /** Sends one raw request text, as one line (tests send hostile ones). */
  sendRaw(text: string): void {
    this.write(`${text}\n`);
  }

  private send(msg: object): void {
    this.write(`${JSON.stringify(msg)}\n`);
  }

  /**
   * Writes one request line to the launcher's socket, or keeps it until the
   * keeper has handed the socket over (the launcher's first moments). A
   * request sent to a launcher that has just ended is lost with it: its run
   * or repair is failed by the 'relaunching' that follows, its reload is
   * counted as answered.
   */
  private write(line: string): void {
    if (this.gone || this.restart) return;
    if (this.requests) this.requests.write(line);
    else this.queued.push(line);
  }

  /**
   * The launcher's request socket, from its keeper; the one before it (a launcher that ended) is closed. Undefined:
   * there is none now (its launcher ended, or the stop), and requests kept for one are dropped with it.
   */
  private takeRequests(socket: Socket | undefined): void {
    this.requests?.destroy();
    this.requests = socket;
    if (!socket) return void (this.queued = []);
    // Its end is the launcher's, which its keeper tells ('relaunching'), or the keeper's own ('exit').
    socket.on('error', (err) => this.log.debug({ why: err.message }, 'handler launcher request socket error'));
    for (const line of this.queued.splice(0)) socket.write(line);
  }

  /**
   * Ends the launcher by closing its channel (it exits when the server is
   * gone; after the drop the server may not signal it). Resolves once it
   * has exited (its boxes end with it), or after `waitMs` at most.
   */
  stop(waitMs = 0): Promise<void> {
    this.stopping = true;
    clearTimeout(this.readyTimer);
    if (!this.gone && this.proc.connected) this.proc.disconnect();
    this.takeRequests(undefined);
    // Once waited for: a keeper that does not end must not keep this process; the kernel ends it with this one
    // (setpriv --pdeathsig).
    if (this.gone || this.proc.exitCode !== null || this.proc.signalCode !== null || waitMs <= 0) {
      this.proc.unref();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(late);
        this.proc.unref();
        resolve();
      };
      const late = setTimeout(done, waitMs);
      late.unref();
      this.proc.once('exit', done);
    });
  }

  /**
   * Ends a launcher that is not answering: SIGKILL while the server may
   * still signal it (before its drop from root), and its channel closed,
   * which ends it once it reads again. The server no longer waits for its
   * end: a failed start exits without it.
   */
  private end(): void {
    if (this.gone) return;
    this.proc.kill('SIGKILL');
    void this.stop();
    this.proc.unref();
  }
}

/**
 * Routes the frames of a tenant's persistent box (its data socket) to
 * `runs`, by run id: only to runs of that tenant, and after its S frame
 * only to a run that box started. A run stays in `runs` until its exit
 * status and the ends of its stdout, stderr and mail channel are all in
 * (in whatever order); the box's end fails those still in it.
 */
export function routeBoxFrames(socket: Readable & Writable, tenant: string, uid: number, runs: Map<number, LaunchedProcess>): void {
  /** Runs started in this box, with how many of X and the three C frames are still to come. */
  const mine = new Map<LaunchedProcess, number>();
  socket.on('error', () => undefined); // its end fails its runs, below
  frameReader(socket, (id, type, payload) => {
    const run = runs.get(id);
    if (!run || run.tenant !== tenant) return;
    if (type === 'S' && !run.box) mine.set(run, 4);
    run.boxFrame(type, payload, socket, uid);
    if ((type === 'X' || type === 'C') && mine.has(run)) {
      const left = mine.get(run)! - 1;
      if (left > 0) mine.set(run, left);
      else {
        mine.delete(run);
        runs.delete(id);
      }
    }
  });
  socket.on('close', () => {
    for (const run of mine.keys()) {
      runs.delete(run.runId);
      run.fail('the script box ended');
    }
  });
}
