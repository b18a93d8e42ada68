import { chmodSync, chownSync, lstatSync, mkdirSync, realpathSync, type Stats } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../core/log.ts';
import type { Registry, Tenant } from '../core/registry.ts';
import type { SandboxCapabilities } from './sandbox.ts';

/** lstat of a scratch folder, made again (empty) when `tenant remove` archived it away while the server ran. */
function lstatOrMake(parent: string, dir: string): Stats {
  try {
    return lstatSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    mkdirSync(parent, { recursive: true, mode: 0o711 });
    mkdirSync(dir, { mode: 0o700, recursive: true });
    return lstatSync(dir);
  }
}

/**
 * Where a tenant's handlers run: its web root as a real path (cached until a
 * reload) and its scratch folder (made, and its mode and owner checked,
 * before every run).
 */
export function tenantPlaces(current: () => Registry, caps: () => SandboxCapabilities | undefined, log: Logger) {
  const realRoots = new Map<string, string>();
  const scratchReady = new Set<string>();

  /** The tenant's web root as a real path; undefined while it does not exist. */
  function realRoot(t: Tenant): string | undefined {
    let r = realRoots.get(t.id);
    if (r === undefined) {
      try {
        r = realpathSync(t.root);
      } catch {
        // No web root yet: the tenant has no handlers of its own to run.
        return undefined;
      }
      realRoots.set(t.id, r);
    }
    return r;
  }

  /**
   * The tenant's scratch folder, 0700 and (as root) owned by the handlers'
   * user. Checked before every run, not only when made: a handler may
   * chmod its own folder (it owns it), and the next run finds it 0700 again.
   */
  function scratch(t: Tenant): string {
    const parent = path.join(current().config.main.dataDir, 'cgi');
    const dir = path.join(parent, t.id);
    if (!scratchReady.has(dir)) {
      // The handlers' user may pass through <data>/cgi but not list it; each tenant's folder is its own.
      mkdirSync(parent, { recursive: true, mode: 0o711 });
      mkdirSync(dir, { mode: 0o700, recursive: true });
      scratchReady.add(dir);
    }
    // One lstat per run (about a microsecond); a repair is logged, for the operator to see who tried.
    const st = lstatOrMake(parent, dir);
    if (!st.isDirectory()) throw new Error(`${dir} is not a folder`);
    if ((st.mode & 0o7777) !== 0o700) {
      log.info({ tenant: t.id, dir, was: (st.mode & 0o7777).toString(8) }, 'handler scratch folder mode set again');
      chmodSync(dir, 0o700);
    }
    // Only the handlers' user may use it; each tenant its own folder.
    const drop = caps()?.drop;
    if (drop && (st.uid !== drop.uid || st.gid !== drop.gid)) chownSync(dir, drop.uid, drop.gid);
    return dir;
  }


  return {
    realRoot,
    scratch,
    /** A reload: web roots are looked up again. */
    reload: () => realRoots.clear(),
  };
}
