import { lstat, readdir, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { isInside } from '../lib/jail.ts';

/** What a handler of one tenant may read in its web root. */
export interface Grants {
  /** Paths for `--allow-fs-read`: whole folders where nothing in them leads out, single entries elsewhere. */
  paths: string[];
  /** Links left out, relative to the root (for the log). */
  refused: string[];
}

/** Past this many entries the walk stops and only the handler folder is granted (a log line says so). */
export const MAX_ENTRIES = 50_000;

/**
 * The read grants for a tenant's web root, under the rule HTTP and FTP
 * apply (src/lib/jail.ts): a symbolic link may be followed only when its
 * real target is inside the root. Node's permission model checks the
 * path a handler names, not where it leads, so a granted folder would let
 * a handler follow any link in it: folders holding a link that leads out
 * are granted entry by entry, without the link.
 *
 * A link to a folder inside the root is also left out when that folder is
 * shallower than the link itself (`sub/up -> ..`): the permission model
 * resolves `sub/up/../x` by name to `sub/x`, the kernel through the link
 * to a folder above the root. Dangling links are left out (their target
 * could appear later, anywhere).
 */
export async function readGrants(realRoot: string): Promise<Grants> {
  const refused: string[] = [];
  let entries = 0;
  const depth = (p: string) => p.split(path.sep).length;

  /** Grants for `dir` (real, inside the root): [dir] when all of it may be read, else its parts. */
  async function walk(dir: string): Promise<string[]> {
    const list = await readdir(dir, { withFileTypes: true });
    entries += list.length;
    if (entries > MAX_ENTRIES) throw new RangeError(`more than ${MAX_ENTRIES} entries`);
    const parts: string[] = [];
    let whole = true;
    for (const e of list) {
      const p = path.join(dir, e.name);
      if (e.isSymbolicLink()) {
        if (await linkAllowed(p)) parts.push(p);
        else {
          whole = false;
          refused.push(path.relative(realRoot, p));
        }
      } else if (e.isDirectory()) {
        const sub = await walk(p);
        if (sub.length !== 1 || sub[0] !== p) whole = false;
        parts.push(...sub);
      } else {
        parts.push(p);
      }
    }
    return whole ? [dir] : parts;
  }

  async function linkAllowed(link: string): Promise<boolean> {
    let real: string;
    try {
      real = await realpath(link);
    } catch {
      return false; // dangling, a loop, or unreadable
    }
    if (!isInside(realRoot, real)) return false;
    const st = await stat(real).catch(() => undefined);
    if (!st) return false;
    return !st.isDirectory() || depth(real) >= depth(link);
  }

  const st = await lstat(realRoot);
  if (!st.isDirectory()) return { paths: [], refused };
  try {
    return { paths: await walk(realRoot), refused };
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    // Too big to check at every change: the handler folder alone, checked the same way.
    const cgiBin = path.join(realRoot, 'cgi-bin');
    entries = 0;
    const isDir = (await lstat(cgiBin).catch(() => undefined))?.isDirectory() === true;
    const paths = isDir ? await walk(cgiBin) : [];
    return { paths, refused: [...refused, `(more than ${MAX_ENTRIES} entries: only cgi-bin/ granted)`] };
  }
}
