import { Command } from 'commander';
import { ftpLocks, ftpUnlock, sftpFingerprints } from '../commands/ftp.ts';
import { globalConfig, type Outcome } from './shared.ts';

/** The ftp, sftp verbs. */
export function registerTransfer(program: Command, out: Outcome): void {
  const ftp = program.command('ftp').description('FTP login locks (counted per login and address, kept in the state database)');
  ftp.option('-c, --config <dir>', 'config folder');
  ftp
    .command('locks')
    .description('list the login locks in force: login, address, minutes left')
    .option('-c, --config <dir>', 'config folder')
    .action(function (this: Command) {
      out.code = ftpLocks(globalConfig(this));
    });
  ftp
    .command('unlock <user>')
    .description('lift every lock of a login (user@tenant) and forget its failures; the running server sees it at once')
    .option('-c, --config <dir>', 'config folder')
    .action(function (this: Command, user: string) {
      out.code = ftpUnlock(globalConfig(this), user);
    });

  const sftp = program.command('sftp').description('SFTP host keys');
  sftp
    .command('fingerprints')
    .description("print the SFTP host keys' SHA256 fingerprints (as ssh-keygen -lf does), for customers to check at their first login")
    .option('-c, --config <dir>', 'config folder')
    .action(function (this: Command) {
      out.code = sftpFingerprints(globalConfig(this));
    });

}
