import { execFile } from 'node:child_process';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '../..');

/** Runs the CLI as its own process (asynchronously: a suite under test may live in this one). */
export function cli(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(ROOT, 'bin/makewaves.js'), ...args], { encoding: 'utf8', timeout: 20_000 }, (err, out, errOut) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out, err: errOut });
    });
  });
}
