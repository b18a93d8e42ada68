import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import path from 'node:path';

export const BIN = path.resolve('bin/makewaves.js');

export interface ServeChild {
  child: ChildProcess;
  out(): string;
  err(): string;
  exited: Promise<number | null>;
}

/** `makewaves serve --config <config>` as a child process, its output captured. */
export function serveChild(config: string, options: SpawnOptions = {}): ServeChild {
  const child = spawn(process.execPath, [BIN, 'serve', '--config', config], { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (err += c));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, out: () => out, err: () => err, exited };
}
