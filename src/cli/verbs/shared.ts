import path from 'node:path';
import type { Command } from 'commander';
import { isConfigDir } from '../../core/config/load.ts';
import { packageRoot } from '../../lib/paths.ts';

/** What a verb's action leaves for main(): the exit code. */
export interface Outcome {
  code: number;
}

/** The bundled example config, used when the current folder has none. */
const BUNDLED = path.join(packageRoot(), 'config');

export function configDirOf(opt: string | undefined): string {
  if (opt) return path.resolve(opt);
  const local = path.resolve('config');
  return isConfigDir(local) ? local : BUNDLED;
}

/** The config folder of a subcommand: its own -c, else its parent's. */
export function globalConfig(cmd: Command): string {
  return configDirOf(cmd.optsWithGlobals<{ config?: string }>().config);
}
