import { hashPassword } from '../../lib/password.ts';
import { readPassword } from './passwd.ts';

/** `makewaves hash-password`: reads a password on stdin, prints its `$scrypt$...` hash for a tenant file. */
export async function hashPasswordCommand(input?: NodeJS.ReadStream): Promise<number> {
  process.stdout.write(`${await hashPassword(await readPassword(input))}\n`);
  return 0;
}
