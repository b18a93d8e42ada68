import type { ChildProcess, StdioPipe } from 'node:child_process';
import { realpathSync } from 'node:fs';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { boxFlags, findExecutable, probeBox, runtimeMounts } from '../lib/box.ts';
import type { CgroupLimits } from '../lib/cgroup.ts';
import { packageRoot } from '../lib/paths.ts';
import { syscallFilter } from '../lib/seccomp.ts';
import { lookupUser } from '../lib/users.ts';
import type { LaunchAsk, LauncherClient } from './launched.ts';

/** The program every handler process runs. */
// From the package root, so it resolves the same from src/ and from the dist/ bundle.
export const RUNNER = path.join(packageRoot(), 'src', 'cgi', 'runner.mjs');

/** The `sendmail` shown at /usr/sbin/sendmail in a script's box without box-init (see sendmail.sh; box-init is its own). */
export const SENDMAIL = path.join(packageRoot(), 'src', 'cgi', 'sendmail.sh');

/** Every box's system call filter (lib/seccomp.ts), read by bwrap from {@link FILTER_FD}; none on other architectures. */
const FILTER = syscallFilter();
/** The fd bwrap reads the filter from (--seccomp): above every box's own (stdio, mail channel, fd 4). */
export const FILTER_FD = 5;

/** The stdio of a box's spawn: `base`, and where the spec has a filter, a pipe at {@link FILTER_FD} for it. */
export function boxStdio(spec: Pick<SpawnSpec, 'filter'>, base: Array<StdioPipe | 'ignore'>): Array<StdioPipe | 'ignore'> {
  if (!spec.filter) return base;
  const all = [...base];
  while (all.length < FILTER_FD) all.push('ignore');
  all.push('pipe');
  return all;
}

/** Hands a spawned box its filter (bwrap reads it whole before it builds the box; without it, no box starts). */
export function feedFilter(spec: Pick<SpawnSpec, 'filter'>, proc: ChildProcess): void {
  if (!spec.filter) return;
  const w = (proc.stdio as ReadonlyArray<unknown>)[FILTER_FD] as Writable | null | undefined;
  // bwrap gone before it read it (killed, or failed): its exit says so.
  w?.on('error', () => undefined);
  w?.end(spec.filter);
}

/** What this machine and this process allow the sandbox to do, found once at start. */
export interface SandboxCapabilities {
  /** `--permission` (Node 22+) or `--experimental-permission` (Node 20). */
  permissionFlag: string;
  /**
   * bubblewrap, which starts every handler process in a box of its own
   * (see spawnSpec); undefined when it is missing or cannot make a box
   * here, and then `refusal` says why: no handler runs at all.
   */
  box: { bwrap: string; noNestedUserns: boolean } | undefined;
  /** Why handlers are refused (set exactly when `box` is undefined). */
  refusal?: string;
  /** `nice` (coreutils), so handlers start below the suite's CPU priority; undefined when not installed. */
  nice: string | undefined;
  /** uid/gid handlers run as, when the suite runs as root; undefined otherwise (no change of user possible). */
  drop: { user: string; uid: number; gid: number; setpriv: string } | undefined;
  /** prlimit (util-linux), for hard resource limits; undefined when not installed. */
  prlimit: string | undefined;
  /**
   * choom (util-linux), as root only: every box at OOM score adjustment
   * 1000, set by root so the tenant cannot lower it again; undefined when
   * not installed or not root.
   */
  choom?: string | undefined;
}

function dropArgs(drop: NonNullable<SandboxCapabilities['drop']>): string[] {
  return [drop.setpriv, `--reuid=${drop.uid}`, `--regid=${drop.gid}`, '--clear-groups', '--no-new-privs', '--'];
}

/**
 * Finds what the sandbox can use here. Throws with an operator-facing
 * message when the suite runs as root and cannot drop privileges for
 * handlers (running them as root is never an option). `searchPath` is
 * where commands are looked for (default: PATH).
 */
export function detectSandbox(user: string, runAs?: { uid: number; gid: number }, searchPath?: string): SandboxCapabilities {
  const flags = process.allowedNodeEnvironmentFlags;
  const permissionFlag = flags.has('--permission') ? '--permission' : '--experimental-permission';
  // `runAs`: the suite runs as root now but drops to this account before serving (`user:` in
  // makewaves.yaml), so handlers will be spawned without root: probe what that account can do.
  const isRoot = process.getuid?.() === 0 && runAs === undefined;

  let drop: SandboxCapabilities['drop'];
  if (isRoot) {
    const found = lookupUser(user);
    if (!found || found.uid === 0) {
      throw new Error(
        `cgi.user "${user}" ${found ? 'is root' : 'does not exist'}: handlers must run as an unprivileged user ` +
          `(create one with: useradd --system --no-create-home --shell /usr/sbin/nologin ${user})`,
      );
    }
    const setpriv = findExecutable('setpriv', searchPath);
    if (!setpriv) throw new Error('running as root, but setpriv (util-linux) is not installed: handlers cannot drop privileges');
    drop = { user, ...found, setpriv };
  }
  // The box is built by the handlers' own user (as root: after setpriv),
  // so the probe builds one the same way.
  const probe = probeBox({ searchPath, prefix: drop ? dropArgs(drop) : [], runAs });
  return {
    permissionFlag,
    box: probe.ok ? { bwrap: probe.bwrap, noNestedUserns: probe.noNestedUserns } : undefined,
    ...(probe.ok ? {} : { refusal: probe.why }),
    drop,
    prlimit: findExecutable('prlimit', searchPath),
    nice: findExecutable('nice', searchPath),
    choom: drop ? findExecutable('choom', searchPath) : undefined,
  };
}

/**
 * A tenant's cgroup v2 limits, where one is delegated: all its runs
 * together hold `cgi.perTenant` runs' memory, `cgi.tenantProcesses`
 * processes and threads, and one CPU's time.
 */
export function tenantCgroupLimits(cgi: { memory: number; perTenant: number; tenantProcesses: number }): CgroupLimits {
  return { memory: cgi.memory * cgi.perTenant, pids: cgi.tenantProcesses, cpus: 1 };
}

export interface SpawnSpec {
  command: string;
  args: string[];
  cwd: string;
  /** True when the spawned process (bwrap) forks: Node is its child, the pid to watch and to kill. */
  forks: boolean;
  /** The system call filter bwrap reads on {@link FILTER_FD} (`--seccomp` in the command line): spawn with {@link boxStdio}, then {@link feedFilter}. */
  filter?: Buffer;
  /** A script's run, for the box's {@link STUB} on fd {@link GO_FD} (the command line then ends with STUB). */
  go?: string;
  /** Started by the root launcher instead (a uid per tenant): the run to ask it for; command and args unused. */
  launch?: { client: Pick<LauncherClient, 'start'>; ask: LaunchAsk };
}

export interface SpawnOptions {
  /** What Node's permission model lets the handler read (the tenant's grants, the suite's handler folder). */
  reads: string[];
  /** Folders shown read-only in the box, each at its own path (the tenant's root, the suite's handler folder). */
  folders: string[];
  /** The tenant's scratch folder: the only place it may write (besides /tmp). */
  scratch: string;
  memory: number;
  /** Largest file the handler may write; also the size of the box's /tmp. */
  fileMax: number;
  /** Processes its uid may have at once (RLIMIT_NPROC, counted per uid: set when each tenant has its own). */
  nproc?: number;
  /** The tenant's cgroup v2 (its cgroup.procs), where one is delegated: the process joins it before anything else. */
  cgroup?: string;
}

/**
 * The command line of one handler process: a lower CPU priority, kernel
 * limits, the change to the unprivileged user (each where available), a
 * bubblewrap box, then Node with the permission model reading only
 * `reads` and writing only `scratch`; no child processes, workers, native
 * addons or WASI (none is granted).
 *
 * The box (its own user, mount, PID, IPC, UTS, network and cgroup
 * namespaces; no capabilities; a new session; dies with the suite) shows
 * only /usr and its links, the /etc files of BOX_ETC_FILES, the Node
 * binary and the runner read-only, `folders` read-only, `scratch`
 * read-write, an empty /tmp of `fileMax` bytes, /dev (null, zero, full,
 * random, urandom, tty) and the /proc of its own PID namespace. Every
 * path keeps its real name, so the grants and the handler's file name
 * mean the same inside; a symbolic link resolves inside the box, where
 * data/, config/, other tenants, /home, /root and the rest of /etc do not
 * exist. The suite talks to the handler over its stdin and stdout only.
 */
/**
 * Writable memory Node itself maps before it runs a line, beyond the heap:
 * Node 22 and later (V8 12+) reserve over 512 MiB at start (measured: Node
 * 24.22 does not start under RLIMIT_DATA 512 MiB, does under 576 MiB), Node
 * 20 a few MiB. The handler is still held to its memory cap by the RSS watch.
 */
const V8_RESERVE = Number(process.versions.node.split('.')[0]) >= 22 ? 768 * 1024 * 1024 : 0;

export function spawnSpec(caps: SandboxCapabilities, opts: SpawnOptions): SpawnSpec {
  // The heap limit leaves room under the memory cap for Node itself.
  const heapMiB = Math.max(16, Math.floor((opts.memory * 0.75) / (1024 * 1024)));
  const nodeBin = realpathSync(process.execPath);
  const node = [
    nodeBin,
    caps.permissionFlag,
    ...[RUNNER, ...opts.reads, opts.scratch].map((p) => `--allow-fs-read=${p}`),
    `--allow-fs-write=${opts.scratch}`,
    // the runner sets its scheduling group to nice 10; the handler could set it back to 0 (any process may, 0 to 19): a
    // default against runaway code, not a limit (docs/cgi.md)
    '--allow-fs-write=/proc/self/autogroup',
    '--no-addons',
    `--max-old-space-size=${heapMiB}`,
    '--disable-warning=ExperimentalWarning',
    RUNNER,
  ];
  // RLIMIT_DATA at twice the cap: a burst of Buffers between two RSS watch
  // ticks fails there instead of growing without bound; at the cap itself
  // V8 would meet failed mappings before its own heap limit and sometimes
  // die of SIGSEGV instead of reporting.
  const all = [...boxPrefix(caps, { ...opts, data: opts.memory * 2 + V8_RESERVE, shown: [nodeBin, RUNNER], chdir: opts.scratch }), ...node];
  return { command: all[0]!, args: all.slice(1), cwd: opts.scratch, forks: true, ...(FILTER ? { filter: FILTER } : {}) };
}

/**
 * What a script's box runs until its run is known: a shell that reads the
 * run, one line, from fd 4 (written by {@link goScript} when the request
 * comes; fd 4 is a socket, so `read`, not `.`) and becomes the script
 * there. The box, its uid, limits and namespaces are all set up before;
 * the script is still PID 1 of a box nobody used before. `n` holds a line
 * break, for values that have one; neither `n` nor `go` is exported.
 */
export const STUB = ['/bin/sh', '-c', "n='\n'; IFS= read -r go <&4 || exit 126; eval \"$go\""];

/** The fd a script's box reads its run from (see {@link STUB}). */
export const GO_FD = 4;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
// Single-quoted: nothing inside is shell syntax; a quote closes, escapes and reopens; a line break is $n, outside the quotes.
const quote = (s: string) => `'${s.replace(/'/g, `'\\''`).replace(/\n/g, `'"$n"'`)}'`;

/**
 * The line {@link STUB} reads on fd 4: the meta-variables exported (each
 * value single-quoted), the script's folder as its cwd, then exec of
 * `argv` with fd 4 closed. Throws on a variable name that is not a plain
 * name, or on a NUL anywhere.
 */
export function goScript(argv: string[], env: Record<string, string>, chdir: string): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(env)) {
    if (!ENV_NAME.test(k)) throw new Error(`${k.slice(0, 64)} is not an environment variable name`);
    parts.push(`export ${k}=${quote(v)}`);
  }
  if ([...argv, chdir, ...Object.values(env)].some((s) => s.includes('\0'))) throw new Error('NUL in a script run');
  // OLDPWD: set by cd, not part of a script's environment.
  parts.push(`cd ${quote(chdir)} || exit 126`, 'unset OLDPWD', `exec ${argv.map(quote).join(' ')} ${GO_FD}<&-`);
  return `${parts.join('; ')}\n`;
}

/**
 * The command line of one classic CGI script run (RFC 3875): the same box
 * and limits as a JavaScript handler, running {@link STUB}, which execs
 * `argv` (the interpreter of the script's #! line, its argument, the
 * script) with `env` as its whole environment and the script's folder as
 * its cwd once it reads `go` on fd 4. The command line is the same for
 * every run of a tenant, so boxes can be started before their request
 * (boxes.ts). Writable memory is capped at `memory` itself (no V8 heap to
 * leave room for).
 */
export function scriptSpec(caps: SandboxCapabilities, opts: Omit<SpawnOptions, 'reads'> & { argv: string[]; env: Record<string, string> }): SpawnSpec {
  const script = opts.argv[opts.argv.length - 1]!;
  const all = [...boxPrefix(caps, { ...opts, env: {}, data: opts.memory, shown: [], chdir: opts.scratch, sendmail: SENDMAIL }), ...STUB];
  return { command: all[0]!, args: all.slice(1), cwd: opts.scratch, forks: true, ...(FILTER ? { filter: FILTER } : {}), go: goScript(opts.argv, opts.env, path.dirname(script)) };
}

/**
 * The command line of a tenant's persistent script box (forkbox.ts): the
 * same box, uid and limits as {@link scriptSpec}, with box-init (`init`,
 * shown read-only at its own path) as PID 1, which keeps CAP_SYS_ADMIN and
 * CAP_SETPCAP inside the box's user namespace only, to give each run fresh
 * namespaces and mounts, and drops them in the run before its exec. The
 * same for every run of the tenant; each run's own part goes over fd 3.
 */
export function forkBoxSpec(caps: SandboxCapabilities, opts: Omit<SpawnOptions, 'reads'> & { init: string }): SpawnSpec {
  const all = [...boxPrefix(caps, { ...opts, env: {}, data: opts.memory, shown: [opts.init], chdir: opts.scratch, sendmail: opts.init, init: true }), opts.init];
  return { command: all[0]!, args: all.slice(1), cwd: opts.scratch, forks: true, ...(FILTER ? { filter: FILTER } : {}) };
}

/**
 * Everything before the program: nice, prlimit (writable memory `data`,
 * no core dumps, the size of one file written, open files), setpriv to the
 * handlers' user, and the bwrap box showing `shown` files and `folders`
 * read-only and `scratch` read-write, ending with "--".
 */
function boxPrefix(
  caps: SandboxCapabilities,
  opts: { folders: string[]; scratch: string; fileMax: number; data: number; shown: string[]; chdir: string; nproc?: number; env?: Record<string, string>; sendmail?: string; cgroup?: string; init?: boolean },
): string[] {
  if (!caps.box) throw new Error(caps.refusal ?? 'no box for handlers');
  const prefix: string[] = [];
  // First of all, into the tenant's cgroup (a shell writes its own pid, then becomes the rest): every process after it is born there.
  if (opts.cgroup) prefix.push('/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', opts.cgroup);
  if (caps.nice) prefix.push(caps.nice, '-n', '10');
  if (caps.prlimit) prefix.push(caps.prlimit, `--data=${opts.data}`, '--core=0', `--fsize=${opts.fileMax}`, '--nofile=256', ...(opts.nproc ? [`--nproc=${opts.nproc}`] : []), '--');
  // Without a cgroup a tenant's memory is bounded per process only (cgi.tenantProcesses × the cap can be more than the
  // machine has): when the kernel must kill, it kills in a box first, never the server. Set as root, so the box's own
  // uid may raise it but never lower it.
  if (caps.choom && caps.drop) prefix.push(caps.choom, '-n', '1000', '--');
  // setpriv before bwrap: the box is built by the unprivileged user (in a
  // user namespace of its own), never by root.
  if (caps.drop) prefix.push(...dropArgs(caps.drop));
  return [
    ...prefix,
    caps.box.bwrap,
    ...boxFlags(caps.box.noNestedUserns),
    ...(FILTER ? ['--seccomp', String(FILTER_FD)] : []),
    // box-init only (forkBoxSpec): capabilities in the box's own user namespace, which owns nothing outside it.
    ...(opts.init ? ['--cap-add', 'CAP_SYS_ADMIN', '--cap-add', 'CAP_SETPCAP'] : []),
    // /proc, /dev and /tmp first: a folder bound below one of them (a web root under /tmp) stays visible.
    '--proc', '/proc',
    '--dev', '/dev',
    '--perms', '1777', '--size', String(opts.fileMax), '--tmpfs', '/tmp',
    ...runtimeMounts(opts.shown),
    // Scripts: /usr/sbin holds only the suite's sendmail (its mount point needs a folder that can be written while the box is built):
    // sendmail.sh, or in a persistent box box-init itself, which acts as sendmail when called by that name (one exec a mail, not three).
    ...(opts.sendmail ? ['--tmpfs', '/usr/sbin', '--ro-bind', opts.sendmail, '/usr/sbin/sendmail', '--remount-ro', '/usr/sbin'] : []),
    ...[...new Set(opts.folders)].flatMap((f) => ['--ro-bind', f, f]),
    '--bind', opts.scratch, opts.scratch,
    // The box's own root and its /dev (tmpfs holding the mount points and device nodes) read-only: nothing can be
    // written there, so nothing fills memory there (the devices themselves still read and write).
    '--remount-ro', '/dev',
    '--remount-ro', '/',
    '--chdir', opts.chdir,
    // `env` set inside the box only: the privileged steps before it start with an empty environment.
    ...(opts.env ? ['--clearenv', ...Object.entries(opts.env).flatMap(([k, v]) => ['--setenv', k, v])] : []),
    '--',
  ];
}
