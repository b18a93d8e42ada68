import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { TENANT_DIR } from './load.ts';

/**
 * Calls `onChange` once after config files stop changing for `debounceMs`
 * (an editor's save is several events; `tenant add` writes then renames).
 * Watches the config folder and its tenants folder with one inotify watch
 * each (node:fs.watch), not each file: with 10,000 tenants a per-file
 * watcher costs tens of megabytes and a start-up scan.
 * Resolves with a function that stops watching.
 */
export async function watchConfig(dir: string, onChange: () => void, debounceMs = 250): Promise<() => Promise<void>> {
  let timer: NodeJS.Timeout | undefined;
  const fire = (_event: string, name: string | Buffer | null) => {
    const n = name?.toString() ?? '';
    if (n !== '' && !/\.ya?ml$/.test(n) && n !== TENANT_DIR) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(onChange, debounceMs);
  };
  const watchers: FSWatcher[] = [];
  for (const d of [dir, path.join(dir, TENANT_DIR)]) {
    try {
      const w = watch(d, { persistent: false }, fire);
      // A watcher that fails (folder removed, too many watches) only loses its events: SIGHUP and `reload` still work.
      w.on('error', () => undefined);
      watchers.push(w);
    } catch {
      // A missing tenants folder is allowed; SIGHUP still reloads.
    }
  }
  return async () => {
    if (timer) clearTimeout(timer);
    for (const w of watchers) w.close();
  };
}
