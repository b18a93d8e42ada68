/**
 * Form handler benchmark: FormMail-like POSTs against makewaves' sandboxed
 * gateway (warm permission-flagged processes in a bubblewrap box, as an
 * unprivileged user when root; the same Perl scripts as Apache's below as
 * classic CGI, a fresh box per request) and, in the same run, a bare node:http
 * server that spawns `node handler.js` per request (classic CGI), and
 * Apache httpd's mod_cgid running Perl scripts when Apache is installed.
 * Prints p50/p99 at 1 client and req/s at 16 clients for each.
 *
 *   node --import tsx scripts/bench/forms.ts [--seconds 3]
 *
 * The servers run in a child process so the load generator does not share
 * their event loop. Mail stops at an in-memory MailSubmitter (the queue is
 * another service); the sandbox is fully on.
 */
import { fork, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { apacheCgiConf, columns, freePort, sequential, startCgiBench, statusOf } from './lib.ts';

const require = createRequire(import.meta.url);
interface AutocannonResult {
  latency: { p50: number; p99: number };
  requests: { average: number };
  non2xx: number;
  errors: number;
  '2xx': number;
}
type Autocannon = (opts: Record<string, unknown>) => Promise<AutocannonResult>;

const SELF = fileURLToPath(import.meta.url);
const BODY = new URLSearchParams([
  ['name', 'Vera Visitor'],
  ['email', 'vera@visitor.test'],
  ['subject', 'Question about the shop'],
  ['message', 'Hello,\nI would like to know when you are open.\nThanks!'],
]).toString();

// The baseline's handler: what a small CGI FormMail does (parse, build a mail, answer).
const BASELINE_HANDLER = `
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  const fields = [...new URLSearchParams(Buffer.concat(chunks).toString())];
  const text = fields.map(([k, v]) => k + ': ' + v).join('\\n');
  const mail = 'From: forms@bench.test\\r\\nTo: owner@bench.test\\r\\nSubject: form\\r\\n\\r\\n' + text;
  process.stdout.write('Status: 200 OK\\r\\nContent-Type: text/html\\r\\n\\r\\n<p>Thank you (' + mail.length + ')</p>');
});
`;

const TRIVIAL_HANDLER = `module.exports = (cgi) => { cgi.stdout.write('Content-Type: text/plain\\r\\n\\r\\nhello\\n'); };\n`;

async function serve(): Promise<void> {
  const server = await startCgiBench({
    prefix: 'makewaves-bench-',
    scripts: {
      'hello.js': TRIVIAL_HANDLER,
      // The same Perl scripts Apache runs below, as the tenant's classic CGI scripts (a fresh box per request).
      'formmail.pl': PERL_FORMMAIL,
      'hello.pl': PERL_TRIVIAL,
    },
  });
  const handlerFile = path.join(server.dir, 'baseline.js');
  writeFileSync(handlerFile, BASELINE_HANDLER);

  // Classic CGI: a fresh Node process per request, minimal environment.
  const baseline = http.createServer((req, res) => {
    const child = spawn(process.execPath, [handlerFile], { env: {}, stdio: ['pipe', 'pipe', 'ignore'] });
    const out: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.on('close', () => {
      const text = Buffer.concat(out).toString();
      const split = text.indexOf('\r\n\r\n');
      res.writeHead(200, { 'Content-Type': 'text/html' });
      res.end(text.slice(split + 4));
    });
    req.pipe(child.stdin);
  });
  await new Promise<void>((r) => baseline.listen(0, '127.0.0.1', r));
  const port = (baseline.address() as { port: number }).port;

  process.send!({ suite: server.url, baseline: `http://127.0.0.1:${port}` });
  process.on('message', async () => {
    baseline.close();
    await server.stop();
    process.exit(0);
  });
}

const PERL_FORMMAIL = `#!/usr/bin/perl
use strict;
my $body = '';
read(STDIN, $body, $ENV{CONTENT_LENGTH} || 0);
my @fields;
for my $pair (split /&/, $body) {
  my ($k, $v) = map { my $s = $_; $s =~ tr/+/ /; $s =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge; $s } split /=/, $pair, 2;
  push @fields, "$k: $v";
}
my $mail = "From: forms\\@bench.test\r\nTo: owner\\@bench.test\r\nSubject: form\r\n\r\n" . join("\n", @fields);
print "Status: 200 OK\r\nContent-Type: text/html\r\n\r\n<p>Thank you (" . length($mail) . ")</p>";
`;
const PERL_TRIVIAL = `#!/usr/bin/perl\nprint "Content-Type: text/plain\\n\\nhello\\n";\n`;

/** Apache httpd (event MPM + mod_cgid) with Perl CGI scripts, when installed. */
async function startApache(): Promise<{ base: string; stop: () => Promise<void> } | undefined> {
  const bin = spawnSync('sh', ['-c', 'command -v apache2 || command -v httpd'], { encoding: 'utf8' }).stdout.trim();
  const modules = ['/usr/lib/apache2/modules', '/usr/lib64/httpd/modules', '/usr/lib/httpd/modules'].find((d) => existsSync(path.join(d, 'mod_cgid.so')));
  if (!bin || !modules) return undefined;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-bench-apache-'));
  chmodSync(dir, 0o755);
  mkdirSync(path.join(dir, 'cgi-bin'));
  writeFileSync(path.join(dir, 'cgi-bin/formmail.pl'), PERL_FORMMAIL, { mode: 0o755 });
  writeFileSync(path.join(dir, 'cgi-bin/hello.pl'), PERL_TRIVIAL, { mode: 0o755 });
  const port = await freePort();
  const isRoot = process.getuid?.() === 0;
  writeFileSync(
    path.join(dir, 'httpd.conf'),
    apacheCgiConf({
      root: dir,
      port,
      modules,
      load: ['mpm_event', 'authz_core', 'alias', 'cgid'],
      docRoot: dir,
      cgiBin: path.join(dir, 'cgi-bin'),
      directives: isRoot ? ['User nobody', 'Group nogroup'] : [],
    }),
  );
  const proc = spawn(bin, ['-f', path.join(dir, 'httpd.conf'), '-DFOREGROUND'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = (await statusOf(`${base}/cgi-bin/hello.pl`)) === 200;
    if (up) break;
    if (Date.now() > deadline || proc.exitCode !== null) {
      proc.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      console.error('Apache httpd did not start; skipping its rows');
      return undefined;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    base,
    stop: async () => {
      // SIGTERM: httpd stops its children and its cgid daemon.
      proc.kill('SIGTERM');
      await new Promise((r) => (proc.exitCode !== null ? r(null) : proc.once('exit', r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function main(): Promise<void> {
  const seconds = Number(process.argv[process.argv.indexOf('--seconds') + 1]) || 3;
  const autocannon = require('autocannon') as Autocannon;
  const child = fork(SELF, ['--serve'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const urls = await new Promise<{ suite: string; baseline: string }>((resolve) => child.once('message', (m) => resolve(m as { suite: string; baseline: string })));

  const variants = [
    { name: 'makewaves FormMail (sandboxed, warm)', url: `${urls.suite}/cgi-bin/formmail`, host: 'bench.test', method: 'POST', body: BODY },
    { name: 'makewaves trivial tenant handler', url: `${urls.suite}/cgi-bin/hello`, host: 'bench.test', method: 'GET', body: undefined },
    { name: 'makewaves Perl FormMail-like (boxed, per request)', url: `${urls.suite}/cgi-bin/formmail.pl`, host: 'bench.test', method: 'POST', body: BODY },
    { name: 'makewaves trivial Perl (boxed, per request)', url: `${urls.suite}/cgi-bin/hello.pl`, host: 'bench.test', method: 'GET', body: undefined },
    { name: 'node:http + spawn node per request', url: `${urls.baseline}/`, host: 'bench.test', method: 'POST', body: BODY },
  ];
  const apache = await startApache();
  if (apache) {
    variants.push(
      { name: 'Apache event + mod_cgid, Perl FormMail-like', url: `${apache.base}/cgi-bin/formmail.pl`, host: 'bench.test', method: 'POST', body: BODY },
      { name: 'Apache event + mod_cgid, trivial Perl', url: `${apache.base}/cgi-bin/hello.pl`, host: 'bench.test', method: 'GET', body: undefined },
    );
  }

  const rows: string[][] = [];
  for (const v of variants) {
    const opts = {
      url: v.url,
      method: v.method,
      body: v.body,
      headers: { host: v.host, 'content-type': 'application/x-www-form-urlencoded' },
      duration: seconds,
    };
    await autocannon({ ...opts, connections: 4, duration: 1 }); // warm-up: start the pools
    const one = await sequential(v.url, v.host, seconds, v.body === undefined ? undefined : { body: v.body, type: 'application/x-www-form-urlencoded' });
    const many = await autocannon({ ...opts, connections: 16 });
    const bad = one.bad + many.non2xx + many.errors;
    rows.push([v.name, one.p50.toFixed(2), one.p99.toFixed(2), many.requests.average.toFixed(0), many.latency.p50.toFixed(0), String(bad)]);
  }
  child.send('stop');
  await new Promise((r) => child.once('exit', r));
  await apache?.stop();

  const head = ['variant', 'p50 ms (1 client)', 'p99 ms (1 client)', 'req/s (16 clients)', 'p50 ms (16 clients)', 'non-2xx/errors'];
  console.log(`\nForm handlers, ${seconds} s per measurement, Node ${process.version}, ${os.cpus().length} cores\n`);
  console.log(columns(head, rows));
  if (!apache) console.log('\nApache httpd is not installed (apt-get install apache2): no mod_cgid rows.');
}

if (process.argv.includes('--serve')) await serve();
else await main();
