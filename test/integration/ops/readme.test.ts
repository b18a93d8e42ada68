import { execFile } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { createLogger } from '../../../src/core/log.ts';
import { freePort } from '../../../src/lib/listen.ts';
import { startSuite, type Suite } from '../../../src/main.ts';
import { startSink, type MailSink } from '../../helpers/mailsink.ts';
import { waitFor } from '../../helpers/suite.ts';

/**
 * README's "Trying it" block, run line by line against the bundled config/
 * and sites/ as a fresh clone has them. Only the port numbers change (each
 * default port becomes a free one, in the config and in the commands), and
 * mail goes to a local sink instead of the recipients' MX hosts.
 */

const REPO = path.resolve(import.meta.dirname, '../../..');
/** The ports of config/makewaves.yaml and config/tenants/shop.test.yaml that README's commands use or mention. */
const DEFAULT_PORTS = [8080, 8443, 8081, 2525, 2121, 9000];

/** README's first `sh` block under "## Trying it", one command per line (comment-only lines left out). */
function tryingItCommands(readme: string): string[] {
  const block = /^## Trying it\n[\s\S]*?^```sh\n([\s\S]*?)^```/m.exec(readme)?.[1];
  if (!block) throw new Error('README.md has no ```sh block under "## Trying it"');
  return block
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
}

/** A command without its trailing comment (` # ...` outside quotes is all README uses). */
const bare = (line: string) => line.replace(/\s+#\s.*$/, '').trim();

interface Expect {
  /** What the output (stdout and stderr) must show. */
  shows: RegExp;
  /** Exit status other than 0 is what README says happens (a refusal). */
  refused?: boolean;
}

/** What each of README's lines must show; a line README gains needs an entry here. */
const EXPECTED: Record<string, Expect> = {
  "curl -H 'Host: example.test' http://127.0.0.1:8080/": { shows: /Example &amp; Co|Example & Co/ },
  "curl -H 'Host: www.example.test' http://127.0.0.1:8080/about": { shows: /href="\/about\/"/ },
  "curl -H 'Host: example.test' http://127.0.0.1:8080/nope": { shows: /not in our shelves/ },
  "curl -H 'Host: shop.test' http://127.0.0.1:8080/catalogue/": { shows: /The Tea Shop/ },
  "curl -H 'Host: shop.test' http://127.0.0.1:8080/app/cart": { shows: /502 Bad Gateway/ },
  "curl -H 'Host: members.makewaves.test' http://127.0.0.1:8080/~club.test/": { shows: /Riverside Rowing Club/ },
  "curl -H 'Host: unknown.test' http://127.0.0.1:8080/": { shows: /404 Not Found/ },
  'curl --cacert data/certs/example.test.crt --resolve example.test:8443:127.0.0.1 https://example.test:8443/': { shows: /Example &amp; Co|Example & Co/ },
  'npx makewaves status': { shows: /^makewaves ok/m },
  "echo '<h1>Hello</h1>' > hello.html": { shows: /^/ },
  "lftp -u alice@example.test,wonderland -p 2121 127.0.0.1 -e 'set ssl:ca-file data/certs/default.crt; set ssl:check-hostname no; put hello.html; quit'": { shows: /^/ },
  "curl -H 'Host: example.test' http://127.0.0.1:8080/hello.html": { shows: /<h1>Hello<\/h1>/ },
  'swaks --server 127.0.0.1:2525 --from me@visitor.test --to info@example.test': { shows: /<-\s+250 .*queued as/ },
  'swaks --server 127.0.0.1:2525 --from me@visitor.test --to someone@elsewhere.test': { shows: /<\*\*\s+550 5\.7\.1/, refused: true },
  "curl -H 'Host: example.test' -d 'name=Vera&email=vera@visitor.test&message=Hello' http://127.0.0.1:8080/cgi-bin/formmail": { shows: /Thank you/ },
};

let dir: string;
let suite: Suite | undefined;
let sink: MailSink;
const ports = new Map<number, number>();
const logLines: string[] = [];

/** Every default port in `text` (after a colon or a blank) replaced by its free one. */
const rePort = (text: string) => text.replace(new RegExp(`(?<=[:\\s])(${DEFAULT_PORTS.join('|')})\\b`, 'g'), (p) => String(ports.get(Number(p))));

beforeAll(async () => {
  // The admin listener takes the kernel's pick: `makewaves status` finds it by the server's run file, no command names its port.
  for (const p of DEFAULT_PORTS.filter((p) => p !== 8081)) ports.set(p, await freePort());
  sink = await startSink();
  // A fresh clone: config/ and sites/ copied (commands write into them), the code linked.
  dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-readme-'));
  // A clone is as open as the folder it was made in (mkdtemp makes 0700): form handlers run
  // as an unprivileged user, and their box must pass through to the tenant's web root.
  chmodSync(dir, 0o755);
  for (const d of ['config', 'sites']) cpSync(path.join(REPO, d), path.join(dir, d), { recursive: true });
  for (const f of ['package.json', 'tsconfig.json', 'bin', 'src', 'cgi-bin', 'node_modules']) symlinkSync(path.join(REPO, f), path.join(dir, f));
  mkdirSync(path.join(dir, 'home'));

  const mainFile = path.join(dir, 'config', 'makewaves.yaml');
  const text = readFileSync(mainFile, 'utf8');
  for (const p of DEFAULT_PORTS.filter((p) => p !== 9000)) expect(text, `config/makewaves.yaml listens on ${p}`).toContain(`127.0.0.1:${p}"`);
  const doc = parseDocument(rePort(text));
  const pasv = await freePort(); // one passive port is enough for one upload
  doc.setIn(['ftp', 'passive', 'ports'], `${pasv}-${pasv}`);
  doc.setIn(['smtp', 'relay'], sink.url);
  doc.setIn(['admin', 'listen'], '127.0.0.1:0');
  writeFileSync(mainFile, doc.toString());
  const shopFile = path.join(dir, 'config', 'tenants', 'shop.test.yaml');
  writeFileSync(shopFile, rePort(readFileSync(shopFile, 'utf8')));

  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  // What `npm start` runs, in this process.
  suite = await startSuite({ configDir: path.join(dir, 'config'), log: createLogger({ level: 'info', destination }), watch: false });
}, 60_000);

afterAll(async () => {
  await suite?.stop(500);
  await sink?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function run(command: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env, HOME: path.join(dir, 'home'), npm_config_update_notifier: 'false' };
    execFile('bash', ['-c', command], { cwd: dir, env, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

describe("README's Trying it block", () => {
  it('every line runs as written (ports aside) and shows what README says', async () => {
    const lines = tryingItCommands(readFileSync(path.join(REPO, 'README.md'), 'utf8'));
    expect(lines.length).toBeGreaterThan(5);
    for (const line of lines) {
      const expected = EXPECTED[bare(line)];
      if (!expected) throw new Error(`README's "Trying it" has a line this test does not know; add what it must show:\n${line}`);
      const { code, out } = await run(rePort(line));
      const said = `${line}\n(exit ${code})\n${out}`;
      if (expected.refused) expect(code, said).not.toBe(0);
      else expect(code, said).toBe(0);
      expect(out, said).toMatch(expected.shows);
    }
    // The message to info@example.test is forwarded, and FormMail mails example.test's forms.recipients.
    const tenant = parseDocument(readFileSync(path.join(dir, 'config', 'tenants', 'example.test.yaml'), 'utf8')).toJS() as {
      mail: { forward: { info: string[] } };
      forms: { recipients: string[] };
    };
    await waitFor(() => sink.messages.length >= 2, 20_000, 'the forwarded message and the form mail at the relay');
    const to = sink.messages.flatMap((m) => m.to);
    expect(to).toEqual(expect.arrayContaining([...tenant.mail.forward.info, ...tenant.forms.recipients]));
    expect(sink.messages.some((m) => m.to.some((r) => r.endsWith('@elsewhere.test')))).toBe(false);
  }, 180_000);
});
