import { watch } from 'chokidar';
import path from 'node:path';
import { MAIN_FILE, TENANT_DIR } from './load.ts';

/**
 * Calls `onChange` once after config files stop changing for `debounceMs`
 * (an editor's save is several events; `tenant add` writes then renames).
 * Resolves, once the watcher is ready (changes from then on are seen), with
 * a function that stops watching.
 */
export async function watchConfig(dir: string, onChange: () => void, debounceMs = 250): Promise<() => Promise<void>> {
  let timer: NodeJS.Timeout | undefined;
  const watcher = watch([path.join(dir, MAIN_FILE), path.join(dir, TENANT_DIR)], {
    ignoreInitial: true,
    depth: 1,
    ignored: (p, stats) => stats?.isFile() === true && !/\.ya?ml$/.test(p),
  });
  watcher.on('all', () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(onChange, debounceMs);
  });
  watcher.on('error', () => undefined);
  await new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
  return async () => {
    if (timer) clearTimeout(timer);
    await watcher.close();
  };
}
