import { Command } from 'commander';
import { ftpKey } from '../commands/tenant-edit.ts';
import { globalConfig, type Outcome } from './shared.ts';

// Loaded when used: it reads SFTP host keys through ssh2, which `serve` without SFTP never needs.
const ftpCommands = () => import('../commands/ftp.ts');

/** The ftp, sftp verbs. */
export function registerTransfer(program: Command, out: Outcome): void {
  const ftp = program.command('ftp').description('FTP login locks (counted per login and address, kept in the state database) and SFTP keys');
  ftp.option('-c, --config <dir>', 'config folder');
  ftp
    .command('locks')
    .description('list the login locks in force: login, address, minutes left')
    .option('-c, --config <dir>', 'config folder')
    .action(async function (this: Command) {
      out.code = (await ftpCommands()).ftpLocks(globalConfig(this));
    });
  ftp
    .command('unlock <user>')
    .description('lift every lock of a login (user@tenant, or the name of a panel operator) and forget its failures; the running server sees it at once')
    .option('-c, --config <dir>', 'config folder')
    .action(async function (this: Command, user: string) {
      out.code = (await ftpCommands()).ftpUnlock(globalConfig(this), user);
    });

  const key = ftp.command('key').description("SFTP public keys of an FTP user (keys: of its ftp entry in the tenant file, comments kept)");
  for (const verb of ['add', 'remove'] as const) {
    key
      .command(`${verb} <login> <key>`)
      .description(verb === 'add' ? 'add a key: user@tenant "ssh-ed25519 AAAA... comment"' : 'remove a key, given as its line, its base64 part or its comment')
      .action(function (this: Command, login: string, k: string) {
        out.code = ftpKey(globalConfig(this), verb, login, k);
      });
  }

  const sftp = program.command('sftp').description('SFTP host keys');
  sftp
    .command('fingerprints')
    .description("print the SFTP host keys' SHA256 fingerprints (as ssh-keygen -lf does), for customers to check at their first login")
    .option('-c, --config <dir>', 'config folder')
    .action(async function (this: Command) {
      out.code = (await ftpCommands()).sftpFingerprints(globalConfig(this));
    });

}
