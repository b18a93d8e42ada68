// The launcher's process (see launcher.ts): started as root by its keeper (keeper-main.ts), which the cgi service
// forks before the server drops to `user:`, with the config folder and the suite's handler folder as its arguments.
// Requests come from the server on fd 4; replies go back over the channel to the keeper, which passes them on.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { createLogger } from '../core/log.ts';
import { holdReads } from '../lib/handles.ts';
import { lineSplitter } from '../lib/lines.ts';
import { compactAfterStart } from '../lib/memory.ts';
import { BoxPool } from './boxes.ts';
import { ForkBox } from './forkbox.ts';
import { Launcher, MAX_REQUEST, parseRequest } from './launcher.ts';
import { boxStdio, feedFilter } from './sandbox.ts';

const [configDir, suiteDir] = process.argv.slice(2);
const log = createLogger().child({ svc: 'cgi-launcher' });
// Not once the server is gone (it refused its start while this one loaded): 'disconnect' ends this process next.
const send = (msg: unknown, handle?: unknown) => process.connected && process.send?.(msg, handle as never);

if (!configDir || !suiteDir || !process.send || process.getuid?.() !== 0) {
  log.error('the launcher runs as root, started by the suite with an IPC channel');
  process.exit(2);
}
/**
 * Its own view of the config, loaded now (the server forks this process
 * before it loads the config itself, so both loads overlap). A config it
 * cannot load is said to the server, which names it when it awaits this
 * launcher (and says nothing when it refused the config itself meanwhile).
 */
let launcher: Launcher;
try {
  launcher = new Launcher({ configDir, suiteDir, log, onRepair: (tenant, dir, was) => send({ op: 'repaired', tenant, dir, was }) });
} catch (err) {
  // The server gone already (it refused the config itself): nobody to tell.
  if (process.connected) await new Promise((sent) => process.send!({ op: 'failed', why: (err as Error).message }, sent));
  process.exit(2);
}
/** Runs alive, each with how to end it. */
const runs = new Map<number, { kill: () => void }>();
/** Runs being checked (not started yet), true once a kill for one has come: it is then refused, not started. */
const checking = new Map<number, boolean>();
/**
 * Boxes started ahead hand their pipes to the server at once, each under a
 * number of its own ({"op":"box"} and its stdio), so a run in one needs no
 * handle passing (a round trip per pipe) when it comes; {"op":"unbox"}
 * when one ends unused.
 */
const boxIds = new Map<ChildProcess, number>();
let boxSeq = 0;
const boxHooks = {
  started(p: ChildProcess) {
    if (p.pid === undefined) return; // failed to start: dropped right after
    const box = ++boxSeq;
    boxIds.set(p, box);
    for (const s of [p.stdout, p.stderr, p.stdio[3]]) holdReads(s);
    send({ op: 'box', box });
    for (const fd of [0, 1, 2, 3]) send({ op: 'stdio', box, fd }, p.stdio[fd]);
  },
  dropped(p: ChildProcess) {
    const box = boxIds.get(p);
    if (box === undefined) return;
    boxIds.delete(p);
    send({ op: 'unbox', box });
  },
};
const boxes = new BoxPool({ ...launcher.boxOptions(log), ...boxHooks });

/**
 * Each tenant's persistent script box (forkbox.ts), by its command line:
 * its data socket goes to the server once, as {"op":"forkbox"} with the
 * tenant and uid; every run of the tenant then needs one frame on the
 * box's control socket, and its bytes pass between box and server only.
 */
const forkBoxes = new Map<string, ForkBox>();
let forkSeq = 0;
function forkBoxFor(key: string, specOf: () => { command: string; args: string[]; cwd: string }, tenant: string, uid: number): ForkBox {
  const had = forkBoxes.get(key);
  if (had?.open) return had;
  const spec = specOf();
  const box: ForkBox = new ForkBox(spec, launcher.boxOptions().idleMs, {
    ended(id, _status, why) {
      runs.delete(id);
      // Its exit status goes to the server on the data socket; a run that never began is told here.
      if (why !== undefined) send({ op: 'exit', id, code: null, signal: null, error: why });
    },
  }, log);
  box.proc.on('exit', () => forkBoxes.get(key) === box && forkBoxes.delete(key));
  forkBoxes.set(key, box);
  holdReads(box.data);
  send({ op: 'forkbox', box: ++forkSeq, tenant, uid }, box.data);
  log.debug({ tenant, uid, pid: box.proc.pid }, 'script box started');
  return box;
}

function refuse(why: string, id?: number): void {
  log.warn({ id, why }, 'launch refused');
  send({ op: 'refused', ...(id !== undefined ? { id } : {}), why });
}

/**
 * The server's requests: one JSON text a line on fd 4, the socket the
 * keeper handed the server (keeper-main.ts). A line longer than
 * MAX_REQUEST is refused as it comes, and not kept.
 */
function readRequests(onRequest: (raw: string) => void): void {
  const requests = new net.Socket({ fd: 4, readable: true, writable: false });
  requests.setEncoding('utf8');
  requests.on('data', lineSplitter(MAX_REQUEST, onRequest, () => refuse(`request over ${MAX_REQUEST} characters`)));
  // The server's end closes with its process, whose end ends the keeper and this process with it.
  requests.on('error', (err) => log.warn({ why: err.message }, 'request socket error'));
}

readRequests((raw: string) => {
  void (async () => {
    const parsed = parseRequest(raw);
    if (!parsed.ok) return refuse(parsed.why, parsed.id);
    const req = parsed.req;
    if (req.op === 'reload') {
      // Boxes started ahead were built from the old config (folders, limits, the tenant itself).
      boxes.discard();
      for (const b of forkBoxes.values()) b.retire();
      forkBoxes.clear();
      try {
        launcher.load();
        boxes.setOptions({ ...launcher.boxOptions(log), ...boxHooks });
        send({ op: 'reloaded' });
      } catch (err) {
        log.error({ err: (err as Error).message }, 'reload failed: the launcher keeps the config it had');
        // The server serves the new config: its health says the launcher did not take it.
        send({ op: 'reloaded', why: (err as Error).message });
      }
      return saveCache();
    }
    if (req.op === 'scratch') {
      let why: string | undefined;
      try {
        why = launcher.repairScratch(req.tenant);
      } catch (err) {
        why = (err as Error).message;
      }
      if (why !== undefined) return refuse(why, req.id);
      return send({ op: 'scratched', id: req.id });
    }
    if (req.op === 'kill') {
      // Asked while its checks are awaited: it is not started, and that refusal answers the run.
      if (checking.has(req.id)) return void checking.set(req.id, true);
      const p = runs.get(req.id);
      if (!p) return refuse(`no run ${req.id}`, req.id);
      p.kill();
      return;
    }
    if (runs.has(req.id) || checking.has(req.id)) return refuse(`run ${req.id} is in progress`, req.id);
    checking.set(req.id, false);
    const checked = await launcher.check(req).catch((err: Error) => ({ ok: false as const, why: err.message }));
    const killed = checking.get(req.id);
    checking.delete(req.id);
    if (killed) return refuse(`run ${req.id} was ended before it started`, req.id);
    if (!checked.ok) return refuse(checked.why, req.id);
    // Checked here, after the await: nothing between this and runs.set below yields.
    if (runs.size >= launcher.maxRuns()) return refuse(`${runs.size} runs alive already (twice cgi.total)`, req.id);

    // spec read only past the persistent box: for a script there, it builds the box's command line.
    const { uid, tenant, fork } = checked.run;
    if (fork) {
      const box = forkBoxFor(fork.key, fork.box, tenant, uid);
      runs.set(req.id, { kill: () => box.kill(req.id) });
      box.run(req.id, fork.run);
      return;
    }
    const spec = checked.run.spec;
    // Scripts get a fourth pipe, their mail channel (fd 3, read by /usr/sbin/sendmail in the box).
    // A script's box may have been started ahead (boxes.ts): it runs this request's script and nothing else.
    const p = req.kind === 'script' ? boxes.start(spec) : spawn(spec.command, spec.args, { cwd: spec.cwd, env: {}, stdio: boxStdio(spec, ['pipe', 'pipe', 'pipe']) });
    if (req.kind !== 'script') feedFilter(spec, p);
    // The box's PID 1 first (bwrap reaps it and exits the same way), then bwrap itself.
    runs.set(req.id, { kill: () => p.kill('SIGKILL') });
    p.on('error', (err) => {
      runs.delete(req.id);
      send({ op: 'exit', id: req.id, code: null, signal: null, error: err.message });
    });
    p.on('exit', (code, signal) => {
      runs.delete(req.id);
      send({ op: 'exit', id: req.id, code, signal });
    });
    if (p.pid === undefined) return;
    log.debug({ id: req.id, tenant, uid, kind: req.kind, name: req.name, pid: p.pid }, 'launched');
    // This process must not read what the run writes: a socket handed over keeps reading here until
    // the server acknowledges it, into nothing (Node's own handle passing), and a box started ahead
    // writes its first lines at once.
    const box = boxIds.get(p);
    if (box !== undefined) {
      // Its pipes are with the server already.
      boxIds.delete(p);
      return send({ op: 'started', id: req.id, pid: p.pid, uid, box });
    }
    for (const s of [p.stdout, p.stderr, p.stdio[3]]) holdReads(s);
    send({ op: 'started', id: req.id, pid: p.pid, uid });
    // The pipes go to the server; the launcher keeps none of them (sending closes its copy).
    send({ op: 'stdio', id: req.id, fd: 0 }, p.stdin);
    send({ op: 'stdio', id: req.id, fd: 1 }, p.stdout);
    send({ op: 'stdio', id: req.id, fd: 2 }, p.stderr);
    if (req.kind === 'script') send({ op: 'stdio', id: req.id, fd: 3 }, p.stdio[3]);
  })();
});
/** Writes the launcher's cache of parsed tenant files if it changed (launcher.ts, LAUNCHER_CACHE_FILE). */
function saveCache(): void {
  // The server gone (a start it refused): this process is ending, and the folder may be on its way out.
  if (!process.connected) return;
  const why = launcher.saveCache();
  if (why) log.warn({ why }, 'cannot write the cache of parsed tenant files; the next start parses every file again');
}

// The server gone: every box goes with the launcher (--die-with-parent).
process.on('disconnect', () => process.exit(0));
// Gone while the config loaded (its modules load asynchronously): that 'disconnect' came before the listener above.
if (!process.connected) process.exit(0);
// Looked at every second too: its request socket keeps this process, so an end of the channel it missed would as well.
setInterval(() => !process.connected && process.exit(0), 1_000).unref();
if (launcher.boxInit.ok) log.info({ boxInit: launcher.boxInit.path }, 'launcher ready: scripts run in one persistent box per tenant');
else log.warn({ why: launcher.boxInit.why }, 'launcher ready: scripts get one fresh box per run (slower)');
// The start's garbage (every tenant file read and checked) given back once allocation has calmed down, as the server does.
compactAfterStart();
send({ op: 'ready', uids: launcher.uidMap(), forkBox: launcher.boxInit.ok ? true : launcher.boxInit.why });
// After the answer that lets the server serve: the cache is for the next start.
setImmediate(saveCache);
