import { execFile } from 'node:child_process';
import path from 'node:path';
import { main } from '../../src/cli/index.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');

export interface CliResult {
  code: number | null;
  out: string;
  err: string;
}

/**
 * Runs the CLI as its own process (asynchronously: a suite under test may
 * live in this one). For tests where the process boundary is the point:
 * exit codes set by Node itself, signals, stdin, the bin script.
 */
export function cli(...args: string[]): Promise<CliResult> {
  return cliWith(process.env, ...args);
}

/** {@link cli} with the environment `env` (e.g. a PATH without some command). */
export function cliWith(env: NodeJS.ProcessEnv, ...args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(ROOT, 'bin/makewaves.js'), ...args], { encoding: 'utf8', timeout: 20_000, env }, (err, out, errOut) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out, err: errOut });
    });
  });
}

/**
 * Runs a command (curl, openssl) to its end within `timeout` ms: its exit
 * code (-1 when it could not start or was killed) and stdout then stderr.
 */
export function runCommand(cmd: string, args: string[], opts: { cwd?: string; timeout: number }): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: opts.cwd, timeout: opts.timeout }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

let running: Promise<unknown> = Promise.resolve();

/**
 * Runs the CLI's `main()` in this process with stdout and stderr captured:
 * the same commands and output as `makewaves ...`, without the second or so
 * a fresh process costs to load the TypeScript sources. Calls are queued, so
 * two never capture each other's output.
 */
export function runCli(...args: string[]): Promise<CliResult> {
  const run = running.then(async () => {
    let out = '';
    let err = '';
    const stdout = process.stdout.write;
    const stderr = process.stderr.write;
    const capture = (append: (s: string) => void) =>
      ((chunk: string | Uint8Array, ...rest: unknown[]) => {
        append(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
        const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
        cb?.();
        return true;
      }) as typeof process.stdout.write;
    process.stdout.write = capture((s) => (out += s));
    process.stderr.write = capture((s) => (err += s));
    try {
      const code = await main(args);
      return { code, out, err };
    } finally {
      process.stdout.write = stdout;
      process.stderr.write = stderr;
    }
  });
  running = run.catch(() => undefined);
  return run;
}
