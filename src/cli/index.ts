import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { isConfigDir } from '../core/config/load.ts';
import { check } from './commands/check.ts';
import { hashPasswordCommand } from './commands/hash-password.ts';
import { passwd } from './commands/passwd.ts';

/** The bundled example config, used when the current folder has none. */
const BUNDLED = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../config');

function configDirOf(opt: string | undefined): string {
  if (opt) return path.resolve(opt);
  const local = path.resolve('config');
  return isConfigDir(local) ? local : BUNDLED;
}

/** Runs the CLI with `argv` (without node and script); resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  let code = 0;
  const program = new Command()
    .name('makewaves')
    .description('Shared hosting in one process: web, FTP, mail and forms for many tenants.')
    .option('--verbose', 'print the cause chain of errors')
    .exitOverride();

  program
    .command('serve')
    .description('serve the tenants of a config folder')
    .option('-c, --config <dir>', 'config folder (default: ./config, else the bundled example)')
    .action(async (opts: { config?: string }) => {
      const { runServer } = await import('../main.ts');
      code = await runServer(configDirOf(opts.config));
    });

  program
    .command('check')
    .description('validate a config folder: prints every problem with file and key; exit 1 if any')
    .option('-c, --config <dir>', 'config folder')
    .action((opts: { config?: string }) => {
      code = check(configDirOf(opts.config));
    });

  program
    .command('hash-password')
    .description('read a password on stdin and print its scrypt hash (for a tenant file\'s ftp[].password)')
    .action(async () => {
      code = await hashPasswordCommand();
    });

  program
    .command('passwd')
    .description('set the FTP password of user@tenant (read on stdin) in the tenant\'s file, keeping its comments')
    .argument('<login>', 'user@<tenant id>; the user is added if the tenant has none of that name')
    .option('-c, --config <dir>', 'config folder')
    .action(async (login: string, opts: { config?: string }) => {
      code = await passwd(login, configDirOf(opts.config));
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    process.stderr.write(`makewaves: ${(err as Error).message}\n`);
    if (program.opts().verbose) process.stderr.write(`${(err as Error).stack ?? ''}\n`);
    return 1;
  }
  return code;
}
