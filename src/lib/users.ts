import { fchownSync, lchownSync, readFileSync } from 'node:fs';
import { walkTree } from './walk.ts';

function entries(file: string): string[][] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    // No such file (a system without /etc/group, say): no entries.
    return [];
  }
  return text.split('\n').map((line) => line.split(':'));
}

/** Looks a user up in /etc/passwd (the suite has no libc binding for getpwnam). */
export function lookupUser(name: string): { uid: number; gid: number } | undefined {
  const f = entries('/etc/passwd').find((e) => e[0] === name && e.length >= 4);
  return f ? { uid: Number(f[2]), gid: Number(f[3]) } : undefined;
}

/** Looks a group up in /etc/group; returns its gid. */
export function lookupGroup(name: string): number | undefined {
  const f = entries('/etc/group').find((e) => e[0] === name && e.length >= 3);
  return f ? Number(f[2]) : undefined;
}

/** The uid/gid of the configured service account (`user:`/`group:` in makewaves.yaml); throws naming the one that is missing. */
export function resolveServiceUser(user: string, group?: string): { uid: number; gid: number } {
  const u = lookupUser(user);
  if (!u) throw new Error(`user "${user}" (user: in makewaves.yaml) does not exist (create it: useradd --system --no-create-home --shell /usr/sbin/nologin ${user})`);
  const gid = group === undefined ? u.gid : lookupGroup(group);
  if (gid === undefined) throw new Error(`group "${group}" (group: in makewaves.yaml) does not exist`);
  return { uid: u.uid, gid };
}

/** The process's identity after {@link dropPrivileges}. */
export interface DroppedTo {
  uid: number;
  gid: number;
}

/**
 * Becomes `uid`/`gid` for good: supplementary groups replaced by `gid`
 * alone, then the group, then the user (in that order: once the uid is
 * not 0 the others can no longer be changed). Checks that root cannot be
 * regained; throws if any step fails (the caller must not serve then).
 */
export function dropPrivileges(uid: number, gid: number): DroppedTo {
  if (uid === 0) throw new Error('refusing to "drop" privileges to root');
  process.setgroups!([gid]);
  process.setgid!(gid);
  process.setuid!(uid);
  let regained = false;
  try {
    process.setuid!(0);
    regained = true;
  } catch {
    // EPERM: as it must be.
  }
  if (regained || process.getuid!() !== uid || process.geteuid!() !== uid || process.getgid!() !== gid || process.getegid!() !== gid) {
    throw new Error(`privilege drop to ${uid}:${gid} did not take`);
  }
  return { uid, gid };
}

/**
 * Gives `dir` (the folder it names, if a link) and every file and folder
 * below it (not following symlinks: a link is given itself) that is
 * not yet owned by `uid` to `uid:gid`: what the server created as root
 * during its start (the state database, spool, logs) stays writable after
 * the drop. Folders in `skip` are left alone, with all below them.
 * Each is given on what was opened, never by a name the service user may
 * have swapped for a link meanwhile (lib/walk.ts).
 * Returns how many entries changed.
 */
export function giveTree(dir: string, uid: number, gid: number, skip: readonly string[] = []): number {
  let n = 0;
  walkTree(dir, ({ fd, st, path: where, at }) => {
    if (skip.includes(where)) return false;
    if (st.uid === uid && st.gid === gid) return;
    if (fd !== undefined) fchownSync(fd, uid, gid);
    // A link or a socket, reached through its open folder: lchown changes the name's own inode, never what a link names.
    else lchownSync(at, uid, gid);
    n++;
  });
  return n;
}
