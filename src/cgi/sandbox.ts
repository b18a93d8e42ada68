import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../lib/paths.ts';
import { lookupUser } from '../lib/users.ts';

/** The program every handler process runs. */
// From the package root, so it resolves the same from src/ and from the dist/ bundle.
export const RUNNER = path.join(packageRoot(), 'src', 'cgi', 'runner.mjs');

/** What this machine and this process allow the sandbox to do, found once at start. */
export interface SandboxCapabilities {
  /** `--permission` (Node 22+) or `--experimental-permission` (Node 20). */
  permissionFlag: string;
  /**
   * Command prefix that gives the child network and PID namespaces of its
   * own (no sockets out; no other process to signal, not the suite, not
   * another tenant's handlers), or undefined when none can be made.
   */
  namespaces: string[] | undefined;
  /** `nice` (coreutils), so handlers start below the suite's CPU priority; undefined when not installed. */
  nice: string | undefined;
  /** uid/gid handlers run as, when the suite runs as root; undefined otherwise (no change of user possible). */
  drop: { user: string; uid: number; gid: number; setpriv: string } | undefined;
  /** prlimit (util-linux), for hard resource limits; undefined when not installed. */
  prlimit: string | undefined;
}

function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (!dir) continue;
    const file = path.join(dir, cmd);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not in this folder
    }
  }
  return undefined;
}

/**
 * Finds what the sandbox can use here. Throws with an operator-facing
 * message when the suite runs as root and cannot drop privileges for
 * handlers (running them as root is never an option).
 */
export function detectSandbox(user: string, runAs?: { uid: number; gid: number }): SandboxCapabilities {
  const flags = process.allowedNodeEnvironmentFlags;
  const permissionFlag = flags.has('--permission') ? '--permission' : '--experimental-permission';
  // `runAs`: the suite runs as root now but drops to this account before serving (`user:` in
  // makewaves.yaml), so handlers will be spawned without root: probe what that account can do.
  const isRoot = process.getuid?.() === 0 && runAs === undefined;

  let namespaces: string[] | undefined;
  const unshare = which('unshare');
  if (unshare) {
    // As root plain namespaces; otherwise inside a user namespace, where the
    // kernel allows unprivileged ones. A PID namespace needs a fork: unshare
    // stays as the parent, Node is pid 1 inside, killed with its parent.
    const prefix = [unshare, ...(isRoot ? [] : ['-r']), '-n', '-p', '-f', '--kill-child', '--'];
    const probe = spawnSync(prefix[0]!, [...prefix.slice(1), process.execPath, '-e', '0'], { env: {}, stdio: 'ignore', timeout: 10_000, ...runAs });
    if (probe.status === 0) namespaces = prefix;
  }

  let drop: SandboxCapabilities['drop'];
  if (isRoot) {
    const found = lookupUser(user);
    if (!found || found.uid === 0) {
      throw new Error(
        `cgi.user "${user}" ${found ? 'is root' : 'does not exist'}: handlers must run as an unprivileged user ` +
          `(create one with: useradd --system --no-create-home --shell /usr/sbin/nologin ${user})`,
      );
    }
    const setpriv = which('setpriv');
    if (!setpriv) throw new Error('running as root, but setpriv (util-linux) is not installed: handlers cannot drop privileges');
    drop = { user, ...found, setpriv };
  }
  return { permissionFlag, namespaces, drop, prlimit: which('prlimit'), nice: which('nice') };
}

export interface SpawnSpec {
  command: string;
  args: string[];
  cwd: string;
  /** True when the spawned process (unshare) forks: Node is its child, the pid to watch and to kill. */
  forks: boolean;
}

/**
 * The command line of one handler process: a lower CPU priority, kernel
 * limits, network and PID namespaces, the change to the unprivileged
 * user (each where available), then Node with the
 * permission model reading only `reads` and writing only `scratch`; no
 * child processes, workers, native addons or WASI (none is granted).
 */
export function spawnSpec(caps: SandboxCapabilities, opts: { reads: string[]; scratch: string; memory: number; fileMax: number }): SpawnSpec {
  // The heap limit leaves room under the memory cap for Node itself.
  const heapMiB = Math.max(16, Math.floor((opts.memory * 0.75) / (1024 * 1024)));
  const node = [
    process.execPath,
    caps.permissionFlag,
    ...[RUNNER, ...opts.reads, opts.scratch].map((p) => `--allow-fs-read=${p}`),
    `--allow-fs-write=${opts.scratch}`,
    '--no-addons',
    `--max-old-space-size=${heapMiB}`,
    '--disable-warning=ExperimentalWarning',
    RUNNER,
  ];
  const prefix: string[] = [];
  if (caps.nice) prefix.push(caps.nice, '-n', '10');
  if (caps.prlimit) {
    // Hard kernel limits behind the suite's RSS watch: writable private
    // memory at twice the cap (RLIMIT_DATA: a burst of Buffers between two
    // watch ticks fails there instead of growing without bound; at the cap
    // itself V8 would meet failed mappings before its own heap limit and
    // sometimes die of SIGSEGV instead of reporting), no core dumps (before
    // unshare, which re-raises its child's fatal signal), the size of one
    // file in the scratch folder, open files.
    prefix.push(caps.prlimit, `--data=${opts.memory * 2}`, '--core=0', `--fsize=${opts.fileMax}`, '--nofile=256', '--');
  }
  if (caps.namespaces) prefix.push(...caps.namespaces);
  if (caps.drop) {
    // setpriv after unshare: creating namespaces needs root, the handler must not have it.
    prefix.push(caps.drop.setpriv, `--reuid=${caps.drop.uid}`, `--regid=${caps.drop.gid}`, '--clear-groups', '--no-new-privs', '--');
  }
  const all = [...prefix, ...node];
  return { command: all[0]!, args: all.slice(1), cwd: opts.scratch, forks: caps.namespaces !== undefined };
}
