import { lstat, readdir, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../core/log.ts';
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
    // Gone since the link was read: nothing to grant.
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
    // No handler folder: nothing to grant.
    const isDir = (await lstat(cgiBin).catch(() => undefined))?.isDirectory() === true;
    const paths = isDir ? await walk(cgiBin) : [];
    return { paths, refused: [...refused, `(more than ${MAX_ENTRIES} entries: only cgi-bin/ granted)`] };
  }
}

/** How long a walk of a tenant's root for links is trusted. */
const GRANTS_TTL_MS = 1000;

/**
 * Per tenant, the read grants of its handlers, walked again when older
 * than GRANTS_TTL_MS: a link left in the root is out of their reach
 * within that time. One walk at a time per tenant. `changed` hears of a
 * tenant whose grants differ from the last walk's; the links left out are
 * logged when they change.
 */
export class GrantCache {
  private readonly cache = new Map<string, { at: number; root: string; paths: string[]; sig: string; refusedSig: string }>();
  private readonly walks = new Map<string, Promise<string[]>>();

  constructor(
    private readonly log: Logger,
    private readonly changed: (tenant: string) => void,
  ) {}

  get(tenant: string, root: string): Promise<string[]> {
    const c = this.cache.get(tenant);
    if (c && c.root === root && Date.now() - c.at < GRANTS_TTL_MS) return Promise.resolve(c.paths);
    let walk = this.walks.get(tenant);
    if (!walk) {
      walk = (async () => {
        const g = await readGrants(root);
        const sig = g.paths.join('\0');
        const refusedSig = g.refused.join('\0');
        const prev = this.cache.get(tenant);
        if (prev && prev.sig !== sig) this.changed(tenant);
        if (g.refused.length > 0 && prev?.refusedSig !== refusedSig) {
          this.log.warn({ tenant, links: g.refused.slice(0, 20), count: g.refused.length }, 'links that lead out of the site are not readable by its handlers');
        }
        this.cache.set(tenant, { at: Date.now(), root, paths: g.paths, sig, refusedSig });
        return g.paths;
      })().finally(() => this.walks.delete(tenant));
      this.walks.set(tenant, walk);
    }
    return walk;
  }

  /** Forgets every walk (after a reload). */
  clear(): void {
    this.cache.clear();
  }
}
