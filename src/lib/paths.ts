import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/**
 * The package root: the nearest folder above this module with a
 * package.json. Works both from src/ (tsx) and from the dist/ bundle, where
 * `import.meta.url` is one file for the whole suite.
 */
export function packageRoot(): string {
  if (root) return root;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  root = dir;
  return dir;
}

/**
 * Where the root launcher builds its native helper (box-init): beside the
 * suite's own code, as trusted as it, never in a folder the server's user
 * may write.
 */
export function nativeDir(): string {
  return path.join(packageRoot(), '.native');
}
