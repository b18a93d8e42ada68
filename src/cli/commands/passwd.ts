import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { isMap, isScalar, isSeq, parseDocument } from 'yaml';
import { TENANT_DIR } from '../../core/config/load.ts';
import { tenantSchema } from '../../core/config/schema.ts';
import { hashPassword } from '../../lib/password.ts';

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
  if (password === '') throw new Error('empty password; nothing changed');
  return password;
}

/**
 * `makewaves passwd user@tenant`: sets (or adds) the FTP user's password hash
 * in `<config>/tenants/<tenant>.yaml`, keeping the file's comments and
 * layout (yaml's Document API edits the one value). The result is validated
 * before it replaces the file (write to a temporary, then rename), so a
 * running server reloads a whole, valid file.
 */
export async function passwd(login: string, configDir: string, input?: NodeJS.ReadStream): Promise<number> {
  const m = /^([a-z0-9][a-z0-9._-]{0,62})@([a-z0-9.-]+)$/.exec(login.toLowerCase());
  if (!m) throw new Error(`"${login}" is not a login of the form user@<tenant id>`);
  const [, user, tenant] = m as unknown as [string, string, string];
  const file = path.join(configDir, TENANT_DIR, `${tenant}.yaml`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new Error(`no tenant "${tenant}" (${file} cannot be read)`);
  }
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]!.message.split('\n')[0]}; fix it first (makewaves check)`);
  const hash = await hashPassword(await readPassword(input));

  // Edits are spliced into the original text at the offsets the parser reports,
  // so every other byte (comments, alignment, flow lists) stays as it was.
  const quoted = JSON.stringify(hash); // the hash is [A-Za-z0-9$=,_-]: a plain double-quoted scalar
  let out: string | undefined;
  let added = false;
  const ftp = doc.get('ftp', true);
  if (ftp !== undefined && ftp !== null && !isSeq(ftp)) throw new Error(`${file}: ftp must be a list of users`);
  const entry = isSeq(ftp) ? ftp.items.find((item) => isMap(item) && String(item.get('user')) === user) : undefined;
  if (entry && isMap(entry)) {
    const node = entry.get('password', true);
    if (isScalar(node) && node.range) out = text.slice(0, node.range[0]) + quoted + text.slice(node.range[1]);
  } else {
    added = true;
    const first = isSeq(ftp) && !ftp.flow ? ftp.items[0] : undefined;
    if (isSeq(ftp) && isMap(first) && first.range && ftp.range) {
      // A block list: a new item in the same column as the first, after the last.
      const lineStart = text.lastIndexOf('\n', first.range[0] - 1) + 1;
      const col = first.range[0] - lineStart;
      const pad = ' '.repeat(col);
      const dash = ' '.repeat(Math.max(0, col - 2));
      const at = ftp.range[1];
      const before = text.slice(0, at);
      out = `${before}${before.endsWith('\n') ? '' : '\n'}${dash}- user: ${user}\n${pad}password: ${quoted}\n${text.slice(at).replace(/^\n/, '')}`;
    }
  }
  if (out === undefined && (ftp === undefined || ftp === null) && !doc.has('ftp')) {
    out = `${text}${text.endsWith('\n') || text === '' ? '' : '\n'}ftp:\n  - user: ${user}\n    password: ${quoted}\n`;
  }
  if (out === undefined) {
    // No list to extend in place (none yet, or a flow list): let yaml write the file, keeping comments.
    if (entry && isMap(entry)) entry.set('password', hash);
    else if (isSeq(ftp)) ftp.add(doc.createNode({ user, password: hash }));
    else doc.set('ftp', doc.createNode([{ user, password: hash }]));
    out = doc.toString({ flowCollectionPadding: false, lineWidth: 0 });
  }
  const check = tenantSchema.safeParse(parseDocument(out).toJS());
  const written = check.success ? check.data.ftp.find((u) => u.user === user) : undefined;
  if (check.success && written?.password !== hash) throw new Error(`${file}: the edit did not take; nothing changed`);
  if (!check.success) throw new Error(`${file}: the result would not be valid (${check.error.issues[0]?.message}); nothing changed`);
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  writeFileSync(tmp, out, { mode: 0o600 });
  renameSync(tmp, file);
  process.stdout.write(`${added ? 'added' : 'changed'} the FTP password of ${user}@${tenant} in ${file}\n`);
  return 0;
}
