import { readFileSync } from 'node:fs';

function entries(file: string): string[][] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
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
