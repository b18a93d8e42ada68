import { Command, CommanderError } from 'commander';
import { registerMail } from './verbs/mail.ts';
import { registerServer } from './verbs/server.ts';
import type { Outcome } from './verbs/shared.ts';
import { registerTenants } from './verbs/tenants.ts';
import { registerTransfer } from './verbs/transfer.ts';

/** Runs the CLI with `argv` (without node and script); resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  const out: Outcome = { code: 0 };
  const program = new Command()
    .name('makewaves')
    .description('Shared hosting in one process: web, FTP, mail and forms for many tenants.')
    .option('--verbose', 'print the cause chain of errors')
    .exitOverride();
  registerServer(program, out);
  registerMail(program, out);
  registerTenants(program, out);
  registerTransfer(program, out);
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    process.stderr.write(`makewaves: ${(err as Error).message}\n`);
    if (program.opts().verbose) process.stderr.write(`${(err as Error).stack ?? ''}\n`);
    return 1;
  }
  return out.code;
}
