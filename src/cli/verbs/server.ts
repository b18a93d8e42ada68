import { Command } from 'commander';
import { check } from '../commands/check.ts';
import { configDirOf, type Outcome } from './shared.ts';

/** The serve, check, status, certs verbs. */
export function registerServer(program: Command, out: Outcome): void {
  program
    .command('serve')
    .description('serve the tenants of a config folder')
    .option('-c, --config <dir>', 'config folder (default: ./config, else the bundled example)')
    .action(async (opts: { config?: string }) => {
      const { runServer } = await import('../../main.ts');
      out.code = await runServer(configDirOf(opts.config));
    });

  program
    .command('check')
    .description('validate a config folder: prints every problem with file and key; exit 1 if any')
    .option('-c, --config <dir>', 'config folder')
    .action((opts: { config?: string }) => {
      out.code = check(configDirOf(opts.config));
    });

  program
    .command('status')
    .description("summary of the running server, from its admin listener (found by <data>/run/makewaves.json, else admin.listen)")
    .option('-c, --config <dir>', 'config folder')
    .action(async (opts: { config?: string }) => {
      const { status } = await import('../commands/status.ts');
      out.code = await status(configDirOf(opts.config));
    });

  program
    .command('certs')
    .description('each tenant domain: certificate source (acme, file, self-signed), issuer, not-after, next renewal, last ACME error')
    .option('-c, --config <dir>', 'config folder')
    .action(async (opts: { config?: string }) => {
      const { certs } = await import('../commands/certs.ts');
      out.code = certs(configDirOf(opts.config));
    });

}
