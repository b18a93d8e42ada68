import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, lstatSync, readlinkSync } from 'node:fs';
import path from 'node:path';

/** The Debian package that provides `bwrap`. */
export const BOX_PACKAGE = 'bubblewrap';

/**
 * Files of /etc visible in the box: the dynamic linker's cache (libraries
 * found without a search) and the local time zone (dates in the host's
 * time). Nothing else of /etc: no passwd, no shadow, no hosts, no ssl.
 */
export const BOX_ETC_FILES = ['/etc/ld.so.cache', '/etc/localtime'];

/** The first executable `cmd` in the folders of `searchPath` (a PATH value). */
export function findExecutable(cmd: string, searchPath = process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'): string | undefined {
  for (const dir of searchPath.split(':')) {
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
 * bwrap arguments that show the runtime read-only: /usr, the top-level
 * links into it (/bin, /lib, /lib64, /sbin on a merged-/usr system; bound
 * as folders where they are folders), the named /etc files that exist,
 * and `extra` files (the Node binary when it lives outside /usr).
 */
export function runtimeMounts(extra: string[] = []): string[] {
  const args = ['--ro-bind', '/usr', '/usr'];
  for (const top of ['/bin', '/sbin', '/lib', '/lib64', '/lib32', '/libx32']) {
    let st;
    try {
      st = lstatSync(top);
    } catch {
      continue; // not on this system
    }
    if (st.isSymbolicLink()) args.push('--symlink', readlinkSync(top), top);
    else if (st.isDirectory()) args.push('--ro-bind', top, top);
  }
  for (const f of BOX_ETC_FILES) if (existsSync(f)) args.push('--ro-bind', f, f);
  for (const f of extra) if (!f.startsWith('/usr/')) args.push('--ro-bind', f, f);
  return args;
}

/**
 * The namespaces and rights every box starts with: its own user, mount,
 * PID, IPC, UTS, network and cgroup namespaces, no capabilities, a new
 * session (no terminal to push keystrokes into), killed with its parent;
 * the program it runs is PID 1 (no reaper between: the suite watches and
 * kills it directly).
 */
export const BOX_FLAGS = ['--unshare-all', '--die-with-parent', '--new-session', '--cap-drop', 'ALL', '--as-pid-1', '--hostname', 'handler'];

/**
 * No user namespace inside the box (bubblewrap 0.8+): a process there
 * cannot make one of its own and get a full set of capabilities in it,
 * the usual first step of a kernel exploit.
 */
export const NO_NESTED_USERNS = ['--unshare-user', '--disable-userns'];

export type BoxProbe = { ok: true; bwrap: string; noNestedUserns: boolean } | { ok: false; why: string };

/** The box's flags: {@link BOX_FLAGS}, and {@link NO_NESTED_USERNS} where this bwrap has it. */
export function boxFlags(noNestedUserns: boolean): string[] {
  return noNestedUserns ? [...BOX_FLAGS, ...NO_NESTED_USERNS] : BOX_FLAGS;
}

/**
 * Finds bwrap on `searchPath` and starts `node -e 0` in a box, before
 * `prefix` (e.g. setpriv to the handlers' user): the box must be possible
 * for the account that will build it. The refusal says what to install or
 * what the kernel refused.
 */
export function probeBox(opts: { searchPath?: string; prefix?: string[]; runAs?: { uid: number; gid: number } } = {}): BoxProbe {
  const bwrap = findExecutable('bwrap', opts.searchPath);
  if (!bwrap) {
    return { ok: false, why: `bwrap not found: handlers (/cgi-bin/) are refused until the Debian package ${BOX_PACKAGE} is installed (apt-get install ${BOX_PACKAGE})` };
  }
  const help = spawnSync(bwrap, ['--help'], { encoding: 'utf8', timeout: 10_000 });
  const noNestedUserns = /--disable-userns/.test(`${help.stdout ?? ''}`);
  const argv = [...(opts.prefix ?? []), bwrap, ...boxFlags(noNestedUserns), ...runtimeMounts([process.execPath]), '--proc', '/proc', '--dev', '/dev', '--', process.execPath, '-e', '0'];
  const r = spawnSync(argv[0]!, argv.slice(1), { env: {}, encoding: 'utf8', timeout: 10_000, ...opts.runAs });
  if (r.status === 0) return { ok: true, bwrap, noNestedUserns };
  const said = (r.stderr ?? '').trim().split('\n')[0] || (r.error ? r.error.message : `exit ${r.status ?? r.signal}`);
  return {
    ok: false,
    why:
      `${bwrap} cannot make a box here (${said}): handlers (/cgi-bin/) are refused; ${BOX_PACKAGE} needs unprivileged user namespaces ` +
      '(sysctl kernel.unprivileged_userns_clone=1; on Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0)',
  };
}
