/**
 * Classic CGI benchmark: the same Perl scripts (a trivial one and a
 * FormMail-like one that reads a POSTed form and pipes a mail to
 * sendmail) through makewaves, every run in fresh namespaces (a persistent box per tenant, box-init, when root) with the tenant's
 * own uid (when root), against Apache httpd 2.4 (event MPM + mod_cgid +
 * suEXEC) in the same run; plus makewaves' warm JavaScript handler.
 * Prints p50/p99 at 1 client, req/s and p50/p99 at 8 clients (wrk), and
 * makewaves ÷ Apache for each script.
 *
 *   node --import tsx scripts/bench/cgi.ts [--seconds 3] [--rounds 3]
 *
 * Apache runs as a throwaway instance: its own ServerRoot and config in a
 * temporary folder, on a free loopback port, as www-data, its scripts
 * under /var/www (where Debian's suEXEC insists on them) owned by
 * nobody:nogroup, all removed afterwards. It needs root and the Debian
 * packages apache2 and apache2-suexec-pristine; without them its rows are
 * skipped with a message saying what is missing. Its FormMail pipes to a
 * stub sendmail that appends to a file; makewaves' goes through the box's
 * /usr/sbin/sendmail to the form-mail channel, stopping at an in-memory
 * MailSubmitter (the queue is another service).
 */
import { fork, spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { apacheCgiConf, columns, freePort, load, median, sequential, startCgiBench, statusOf, treeCpuAllMs } from './lib.ts';

const SELF = fileURLToPath(import.meta.url);
const FORM = {
  type: 'application/x-www-form-urlencoded',
  body: new URLSearchParams([
    ['name', 'Vera Visitor'],
    ['email', 'vera@visitor.test'],
    ['subject', 'Question about the shop'],
    ['message', 'Hello,\nI would like to know when you are open.\nThanks!'],
  ]).toString(),
};
const CLIENTS = 8;

const PERL_TRIVIAL = `#!/usr/bin/perl\nprint "Content-Type: text/plain\\n\\nhello\\n";\n`;

/** What a 1997 FormMail does: read the form, pipe a mail to sendmail -t, thank the visitor. */
function perlFormMail(sendmail: string): string {
  return `#!/usr/bin/perl
use strict;
my $body = '';
read(STDIN, $body, $ENV{CONTENT_LENGTH} || 0);
my %f;
for my $pair (split /&/, $body) {
  my ($k, $v) = map { my $s = $_; $s =~ tr/+/ /; $s =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge; $s } split /=/, $pair, 2;
  $f{$k} = $v;
}
open(my $mail, '|-', '${sendmail}', '-t', '-oi') or die "cannot start sendmail: $!";
print $mail "To: owner\\@bench.test\\nReply-To: $f{email}\\nSubject: $f{subject}\\n\\n";
print $mail "$_: $f{$_}\\n" for sort keys %f;
close($mail) or die "sendmail failed: $?";
print "Status: 200 OK\\r\\nContent-Type: text/html\\r\\n\\r\\n<p>Thank you, $f{name}.</p>\\n";
`;
}

const JS_TRIVIAL = `module.exports = (cgi) => { cgi.stdout.write('Content-Type: text/plain\\r\\n\\r\\nhello\\n'); };\n`;

/** makewaves' HTTP service and handler gateway, in this child process (the load generator stays apart). */
async function serve(): Promise<void> {
  const server = await startCgiBench({
    prefix: 'makewaves-bench-cgi-',
    // As many runs of the tenant at once as clients (Apache has no such cap).
    cgi: { perTenant: CLIENTS },
    scripts: {
      'hello.pl': { text: PERL_TRIVIAL, mode: 0o755 },
      'formmail.pl': { text: perlFormMail('/usr/sbin/sendmail'), mode: 0o755 },
      'hello.js': JS_TRIVIAL,
    },
    logLevel: process.env.BENCH_LOG === 'info' ? 'info' : 'warn',
  });
  process.send!({ url: server.url, launcher: server.launcher, forkBox: server.forkBox });
  process.on('message', async () => {
    await server.stop();
    process.send!({ mails: server.mails() });
    process.exit(0);
  });
  // The benchmark itself ended early (interrupted): nothing of this server is left behind.
  process.on('disconnect', () => void server.stop().then(() => process.exit(1)));
}

/** Why Apache+suEXEC cannot run here, or undefined when it can. */
function apacheMissing(): string | undefined {
  if (!existsSync('/usr/sbin/apache2')) return 'Apache httpd is not installed (apt-get install apache2)';
  if (!existsSync('/usr/lib/apache2/modules/mod_cgid.so') || !existsSync('/usr/lib/apache2/modules/mod_suexec.so')) return 'mod_cgid or mod_suexec is missing (Debian package apache2)';
  if (!existsSync('/usr/lib/apache2/suexec-pristine')) return 'suEXEC is not installed (apt-get install apache2-suexec-pristine)';
  if (process.getuid?.() !== 0) return 'suEXEC needs Apache started as root (run the benchmark as root)';
  return undefined;
}

/** Apache httpd 2.4, event MPM + mod_cgid + suEXEC to nobody:nogroup, as a throwaway instance. */
async function startApache(group?: { procs: string }): Promise<{ base: string; pid: number | undefined; stop: () => Promise<void> } | string> {
  const missing = apacheMissing();
  if (missing) return missing;
  // suexec-pristine -V: AP_DOC_ROOT=/var/www, AP_HTTPD_USER=www-data, AP_UID_MIN=AP_GID_MIN=100; the
  // script and its folder must belong to the target user and group, writable by nobody else.
  const suexecLog = '/var/log/apache2/suexec.log';
  const hadLog = existsSync(suexecLog);
  const web = mkdtempSync('/var/www/makewaves-bench-');
  const root = mkdtempSync(path.join(os.tmpdir(), 'makewaves-bench-apache-'));
  const cleanup = () => {
    rmSync(web, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
    if (!hadLog) rmSync(suexecLog, { force: true });
  };
  const nobody = 65534;
  chmodSync(web, 0o755);
  chmodSync(root, 0o755);
  const bin = path.join(web, 'cgi-bin');
  const sink = path.join(web, 'mail');
  mkdirSync(bin, { mode: 0o755 });
  mkdirSync(sink, { mode: 0o700 });
  // The stub sendmail: the mail read whole and kept (sh + cat, as the box's sendmail is sh + head + base64).
  writeFileSync(path.join(web, 'sendmail'), `#!/bin/sh\ncat >> ${sink}/sink\n`, { mode: 0o755 });
  writeFileSync(path.join(bin, 'hello.pl'), PERL_TRIVIAL, { mode: 0o755 });
  writeFileSync(path.join(bin, 'formmail.pl'), perlFormMail(path.join(web, 'sendmail')), { mode: 0o755 });
  for (const p of [bin, sink, path.join(bin, 'hello.pl'), path.join(bin, 'formmail.pl')]) chownSync(p, nobody, nobody);
  const port = await freePort();
  writeFileSync(
    path.join(root, 'httpd.conf'),
    apacheCgiConf({
      root,
      port,
      modules: '/usr/lib/apache2/modules',
      load: ['mpm_event', 'authz_core', 'alias', 'cgid', 'suexec'],
      docRoot: web,
      cgiBin: bin,
      directives: ['User www-data', 'Group www-data', 'SuexecUserGroup nobody nogroup'],
    }),
  );
  // Into its cgroup before it starts (it forks its cgid daemon and workers at once): a shell that joins it, then becomes httpd.
  const httpd = ['/usr/sbin/apache2', '-f', path.join(root, 'httpd.conf'), '-DFOREGROUND'];
  const proc = group
    ? spawn('/bin/sh', ['-c', `echo $$ > ${group.procs} && exec "$@"`, 'sh', ...httpd], { stdio: ['ignore', 'ignore', 'inherit'] })
    : spawn(httpd[0]!, httpd.slice(1), { stdio: ['ignore', 'ignore', 'inherit'] });
  const base = `http://127.0.0.1:${port}`;
  const stop = async () => {
    // SIGTERM to httpd's own pid: it stops its children and its cgid daemon.
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    }
    cleanup();
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    const status = await statusOf(`${base}/cgi-bin/hello.pl`);
    if (status === 200) break;
    if (Date.now() > deadline || proc.exitCode !== null || status >= 400) {
      await stop();
      return `Apache httpd did not serve its suEXEC script (status ${status}; see suexec -V and ${suexecLog})`;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { base, pid: proc.pid, stop };
}

/**
 * A cgroup of its own for one server (cgroup v2, or v1's cpuacct), to read
 * the CPU time it and everything it starts used: mod_cgid's daemon ignores
 * SIGCHLD, so its scripts' CPU time reaches no parent's counters. Undefined
 * when no such cgroup can be made here (not root, no cgroup fs).
 */
function cpuGroup(name: string): { procs: string; add: (pid: number | undefined) => void; ms: () => number; remove: () => Promise<void> } | undefined {
  const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
  const base = v2 ? '/sys/fs/cgroup' : '/sys/fs/cgroup/cpuacct';
  const dir = path.join(base, `makewaves-bench-${process.pid}-${name}`);
  try {
    mkdirSync(dir);
  } catch {
    return undefined; // not root, or no cgroup file system to measure with: CPU from /proc instead
  }
  return {
    procs: path.join(dir, 'cgroup.procs'),
    add: (pid) => pid !== undefined && writeFileSync(path.join(dir, 'cgroup.procs'), String(pid)),
    ms: () =>
      v2
        ? Number(/usage_usec (\d+)/.exec(readFileSync(path.join(dir, 'cpu.stat'), 'utf8'))?.[1]) / 1000
        : Number(readFileSync(path.join(dir, 'cpuacct.usage'), 'utf8')) / 1e6,
    remove: async () => {
      // Its last processes (the launcher, a box) end just after the server: a cgroup goes once empty.
      for (let i = 0; i < 50; i++) {
        try {
          rmdirSync(dir);
          return;
        } catch {
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      console.error(`${dir} could not be removed (a process of it still running)`);
    },
  };
}

interface Variant {
  name: string;
  url: string;
  /** The server's process: its CPU time and its descendants' is what a request costs. */
  pid: number | undefined;
  group: ReturnType<typeof cpuGroup>;
  post?: { body: string; type: string };
  /** The Apache row this one is compared with. */
  vs?: string;
}

async function main(): Promise<void> {
  const seconds = Number(process.argv[process.argv.indexOf('--seconds') + 1]) || 3;
  const rounds = Number(process.argv[process.argv.indexOf('--rounds') + 1]) || 3;
  const groups = { makewaves: cpuGroup('makewaves'), apache: cpuGroup('apache') };
  const child = fork(SELF, ['--serve'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  groups.makewaves?.add(child.pid);
  const started = await new Promise<{ url: string; launcher: boolean; forkBox: boolean }>((resolve) => child.once('message', (m) => resolve(m as { url: string; launcher: boolean; forkBox: boolean })));
  const apache = await startApache(groups.apache);
  // Interrupted: Apache stopped, its folders under /var/www and the cgroups removed before leaving.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      // The measurement under way fails as its servers go: nothing more to report.
      process.on('uncaughtException', () => undefined);
      process.on('unhandledRejection', () => undefined);
      child.disconnect();
      void (async () => {
        if (typeof apache !== 'string') await apache.stop();
        if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
        await groups.makewaves?.remove();
        await groups.apache?.remove();
        process.exit(130);
      })();
    });
  }

  const variants: Variant[] = [
    { name: 'makewaves trivial Perl', pid: child.pid, group: groups.makewaves, url: `${started.url}/cgi-bin/hello.pl`, vs: 'Apache+suEXEC trivial Perl' },
    { name: 'makewaves Perl FormMail-like', pid: child.pid, group: groups.makewaves, url: `${started.url}/cgi-bin/formmail.pl`, post: FORM, vs: 'Apache+suEXEC Perl FormMail-like' },
    { name: 'makewaves warm JS handler', pid: child.pid, group: groups.makewaves, url: `${started.url}/cgi-bin/hello` },
  ];
  if (typeof apache !== 'string') {
    variants.push(
      { name: 'Apache+suEXEC trivial Perl', pid: apache.pid, group: groups.apache, url: `${apache.base}/cgi-bin/hello.pl` },
      { name: 'Apache+suEXEC Perl FormMail-like', pid: apache.pid, group: groups.apache, url: `${apache.base}/cgi-bin/formmail.pl`, post: FORM },
    );
  }
  type Figures = { p50: number; p99: number; rps: number; cp50: number; cp99: number; cpu: number; bad: number };
  /** Every round's figures of each variant. */
  const measured = new Map<string, Figures[]>(variants.map((v) => [v.name, []]));
  const measure = async (v: Variant) => {
    const host = 'bench.test';
    await load(v.url, host, 1, CLIENTS, v.post); // warm-up: pools filled, Perl and its modules in the page cache
    const one = await sequential(v.url, host, seconds, v.post);
    // Without a cgroup: the process tree from /proc (Apache's scripts then go uncounted: no CPU figure for it).
    const cpuNow = () => (v.group ? v.group.ms() : v.name.startsWith('Apache') ? NaN : treeCpuAllMs(v.pid));
    const cpu0 = cpuNow();
    const many = await load(v.url, host, seconds, CLIENTS, v.post);
    // CPU per answer: steadier than req/s on a shared machine (what the server, its helpers and the scripts spent).
    const cpu = (cpuNow() - cpu0) / (many.rps * seconds);
    measured.get(v.name)!.push({ p50: one.p50, p99: one.p99, rps: many.rps, cp50: many.p50, cp99: many.p99, cpu, bad: one.bad + many.errors });
    process.stderr.write(`  ${v.name}: p50 ${one.p50.toFixed(2)} ms, ${many.rps.toFixed(0)} req/s\n`);
  };
  // Each script through makewaves and Apache one right after the other, the order swapped every round: the
  // machine's load drifts through a round, far less between two neighbouring measurements.
  for (let round = 0; round < rounds; round++) {
    for (const v of variants) {
      if (v.name.startsWith('Apache')) continue;
      const other = variants.find((a) => a.name === v.vs);
      for (const x of other && round % 2 === 1 ? [other, v] : [v, other]) if (x) await measure(x);
    }
  }
  child.send('stop');
  const { mails } = await new Promise<{ mails: number }>((resolve) => child.once('message', (m) => resolve(m as { mails: number })));
  if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
  if (typeof apache !== 'string') await apache.stop();
  await groups.makewaves?.remove();
  await groups.apache?.remove();

  const head = ['variant', 'p50 ms (1 client)', 'p99 ms (1 client)', `req/s (${CLIENTS} clients)`, `p50 ms (${CLIENTS})`, `p99 ms (${CLIENTS})`, 'CPU ms/req', 'non-2xx/errors', 'vs Apache: p50 (1), req/s, CPU'];
  const mid = (xs: Figures[], k: keyof Figures) => median(xs.map((x) => x[k]));
  /** makewaves ÷ Apache within each round, then the median over rounds. */
  const within = (m: Figures[], a: Figures[], k: 'p50' | 'rps' | 'cpu') => median(m.map((x, i) => x[k] / a[i]![k]));
  const rows = variants.map((v) => {
    const m = measured.get(v.name)!;
    const a = v.vs ? measured.get(v.vs) : undefined;
    const ratio = a ? `${within(m, a, 'p50').toFixed(2)}×, ${within(m, a, 'rps').toFixed(2)}×, ${within(m, a, 'cpu').toFixed(2)}×` : '';
    const bad = m.reduce((n, x) => n + x.bad, 0);
    return [v.name, mid(m, 'p50').toFixed(2), mid(m, 'p99').toFixed(2), mid(m, 'rps').toFixed(0), mid(m, 'cp50').toFixed(2), mid(m, 'cp99').toFixed(2), mid(m, 'cpu').toFixed(2), String(bad), ratio];
  });
  /** Each round's makewaves ÷ Apache, to see how far the rounds agree. */
  const perRound = variants
    .filter((v) => v.vs && measured.get(v.vs)?.length)
    .map((v) => {
      const m = measured.get(v.name)!;
      const a = measured.get(v.vs!)!;
      return `${v.name.replace('makewaves ', '')}: ${m.map((x, i) => `${(x.p50 / a[i]!.p50).toFixed(2)}/${(x.rps / a[i]!.rps).toFixed(2)}/${(x.cpu / a[i]!.cpu).toFixed(2)}`).join(', ')}`;
    });
  console.log(`\nClassic CGI, ${seconds} s per measurement, median of ${rounds} round(s), Node ${process.version}, ${os.cpus().length} cores, load average ${os.loadavg()[0]!.toFixed(1)}`);
  const boxing = started.forkBox ? "every script run cloned in fresh PID, mount, IPC and UTS namespaces in its tenant's persistent box (box-init)" : 'every script run in its own box';
  console.log(`makewaves: ${boxing}, ${started.launcher ? "each tenant's own uid (root launcher)" : 'the suite\'s own uid (not root)'}; mails handed to the form-mail channel: ${mails}\n`);
  console.log(columns(head, rows));
  if (typeof apache === 'string') console.log(`\nNo Apache+suEXEC rows: ${apache}.`);
  console.log('\nvs Apache: makewaves ÷ Apache+suEXEC for the same script within a round, the median over rounds (p50 and CPU under 1×, req/s over 1× favour makewaves).');
  if (rounds > 1) console.log(`Each round (p50/req/s/CPU): ${perRound.join('; ')}.`);
  console.log(`CPU ms/req: CPU time of the server and everything it started (scripts, boxes, launcher) per answer at ${CLIENTS} clients, ${groups.makewaves ? 'from a cgroup of its own' : 'from /proc'}.`);
  const bad = [...measured.values()].flat().reduce((n, m) => n + m.bad, 0);
  if (bad > 0) process.exitCode = 1;
}

if (process.argv.includes('--serve')) await serve();
else await main();
