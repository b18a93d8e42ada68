import { closeSync, readdirSync, readFileSync } from 'node:fs';

/** O_CLOEXEC as /proc/<pid>/fdinfo shows it (octal flags). */
const O_CLOEXEC = 0o2000000;

/**
 * Closes every descriptor of this process above stderr that is not
 * close-on-exec, and says which: Node opens all of its own close-on-exec,
 * so those are ones the process inherited from whoever started it (a
 * shell's, a CI runner's), which would otherwise pass on to every process
 * it starts, through bwrap (which closes none) into boxes. `keep`: ones
 * of its own it must keep whatever their flag. Linux only (/proc);
 * elsewhere it closes nothing.
 */
export function closeInherited(keep: number[] = []): number[] {
  const closed: number[] = [];
  let names: string[];
  try {
    names = readdirSync('/proc/self/fd');
  } catch {
    return closed; // no /proc here: nothing to tell them by
  }
  for (const name of names) {
    const fd = Number(name);
    if (!(fd > 2) || keep.includes(fd)) continue;
    let flags: number;
    try {
      flags = Number.parseInt(/^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1'))?.[1] ?? '', 8);
    } catch {
      continue; // the listing's own descriptor, closed since
    }
    if (Number.isNaN(flags) || (flags & O_CLOEXEC) !== 0) continue;
    closeSync(fd);
    closed.push(fd);
  }
  return closed;
}
