import { createInterface } from 'node:readline';
import { checkNewPassword, readTenant, setFtpPassword } from '../../core/tenantfile.ts';
import { hashPassword } from '../../lib/password.ts';
import { parseLogin } from './tenant-edit.ts';

/**
 * Reads a password from stdin: on a terminal, a prompt on stderr with echo
 * off, asked twice; from a pipe, the first line. Rejects an empty password.
 */
export async function readPassword(input: NodeJS.ReadStream = process.stdin): Promise<string> {
  let password: string;
  if (input.isTTY) {
    const ask = (prompt: string) =>
      new Promise<string>((resolve) => {
        const rl = createInterface({ input, output: process.stderr, terminal: true });
        const out = rl as unknown as { _writeToOutput(s: string): void };
        process.stderr.write(prompt);
        out._writeToOutput = () => undefined; // no echo
        rl.question('', (answer) => {
          rl.close();
          process.stderr.write('\n');
          resolve(answer);
        });
      });
    password = await ask('New password: ');
    if ((await ask('Again: ')) !== password) throw new Error('the two passwords differ; nothing changed');
  } else {
    const chunks: Buffer[] = [];
    for await (const c of input) chunks.push(c as Buffer);
    password = Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
  }
  checkNewPassword(password);
  return password;
}

/**
 * `makewaves passwd user@tenant`: sets (or adds) the FTP user's password hash
 * in `<config>/tenants/<tenant>.yaml`, keeping the file's comments and
 * layout, through the same validated writer as every tenant-file edit
 * (core/tenantfile.ts: the loader checks the result, then an atomic rename),
 * so a running server reloads a whole, valid file.
 */
export async function passwd(login: string, configDir: string, input?: NodeJS.ReadStream): Promise<number> {
  const { user, tenant } = parseLogin(login);
  // Before the password is asked for: an unknown tenant or a broken file is said at once.
  const { file } = readTenant(configDir, tenant);
  const hash = await hashPassword(await readPassword(input));
  const { added } = setFtpPassword(configDir, tenant, user, hash);
  process.stdout.write(`${added ? 'added' : 'changed'} the FTP password of ${user}@${tenant} in ${file}\n`);
  return 0;
}
