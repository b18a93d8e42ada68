/**
 * SFTP upload benchmark, in one run: OpenSSH's own `sftp` client uploads
 * 200 files of 4 KiB and one file of 100 MiB, to makewaves's SFTP (its own
 * process: jail, quota accounting, atomic replace) and to OpenSSH's sshd
 * with `internal-sftp` in a chroot (the usual shared-host setup) when
 * installed (`apt-get install openssh-server`; sshd needs root). Prints the
 * medians and the ratios to sshd; targets: small files ≤ 1.5× sshd's time,
 * large file ≥ 0.8× its MiB/s.
 *
 *   node --import tsx scripts/bench/sftp.ts [--runs 3] [--files 200] [--large-mb 100]
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { hashPassword } from '../../src/lib/password.ts';
import { freePort, ROOT, run, startProcess, stopProcess, waitTcp } from './lib.ts';

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const RUNS = arg('runs', 3);
const FILES = arg('files', 200);
const LARGE = arg('large-mb', 100) * 1024 * 1024;
const SSHD = '/usr/sbin/sshd';

interface Target {
  name: string;
  port: number;
  user: string;
  /** Remote folder uploads go to. */
  dest: string;
  stop(): Promise<void>;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;


/** Runs one sftp batch; resolves with the seconds it took. */
function sftp(t: Target, key: string, batch: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const args = ['-q', '-b', '-', '-P', String(t.port), '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', `${t.user}@127.0.0.1`];
    const p: ChildProcess = spawn('sftp', args, { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(Number(process.hrtime.bigint() - t0) / 1e9) : reject(new Error(`sftp to ${t.name} exited ${code}: ${err.slice(-400)}`))));
    p.stdin!.end(batch);
  });
}

async function makewaves(dir: string, pub: string): Promise<Target> {
  const configDir = path.join(dir, 'mw-config');
  mkdirSync(path.join(configDir, 'tenants'), { recursive: true });
  mkdirSync(path.join(dir, 'mw-sites', 'bench.test'), { recursive: true });
  const port = await freePort();
  writeFileSync(
    path.join(configDir, 'makewaves.yaml'),
    stringify({ hostname: 'mx.bench.test', data: '../mw-data', sites: '../mw-sites', http: { listen: ['127.0.0.1:0'] }, ftp: { listen: '127.0.0.1:0' }, sftp: { listen: `127.0.0.1:${port}` } }),
  );
  writeFileSync(path.join(configDir, 'tenants', 'bench.test.yaml'), stringify({ domains: ['bench.test'], ftp: [{ user: 'bench', password: await hashPassword('bench'), keys: [pub] }] }));
  await run(process.execPath, [path.join(ROOT, 'scripts/build.mjs')]);
  const child = startProcess(process.execPath, [path.join(ROOT, 'dist/makewaves.mjs'), 'serve', '--config', configDir], { MAKEWAVES_LOG_LEVEL: 'warn' });
  await waitTcp(port);
  return { name: 'makewaves (jail, quota, atomic)', port, user: 'bench@bench.test', dest: '/', stop: () => stopProcess(child) };
}

/** OpenSSH's sshd, internal-sftp chrooted to a root-owned folder with one writable folder in it. */
async function sshd(dir: string, pub: string): Promise<Target | undefined> {
  if (!existsSync(SSHD) || process.getuid?.() !== 0) return undefined;
  // sshd refuses a chroot with a group- or world-writable folder on its way (/tmp is one): /run is root's 0755.
  const chroot = mkdtempSync('/run/mw-bench-sshd-');
  mkdirSync(path.join(chroot, 'upload'));
  chmodSync(chroot, 0o755);
  const hostKey = path.join(dir, 'sshd_host_ed25519');
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
  const auth = path.join(dir, 'authorized_keys');
  writeFileSync(auth, `${pub}\n`, { mode: 0o600 });
  mkdirSync('/run/sshd', { recursive: true });
  const port = await freePort();
  const conf = path.join(dir, 'sshd_config');
  writeFileSync(
    conf,
    [
      `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${hostKey}`, `AuthorizedKeysFile ${auth}`, 'StrictModes no',
      'PermitRootLogin prohibit-password', 'PasswordAuthentication no', 'UsePAM no', `PidFile ${path.join(dir, 'sshd.pid')}`,
      'Subsystem sftp internal-sftp', `ChrootDirectory ${chroot}`, 'ForceCommand internal-sftp', 'AllowTcpForwarding no', '',
    ].join('\n'),
  );
  const child = startProcess(SSHD, ['-D', '-E', path.join(dir, 'sshd.log'), '-f', conf]);
  await waitTcp(port);
  return {
    name: 'OpenSSH sshd internal-sftp (chroot, reference)',
    port,
    user: 'root',
    dest: '/upload',
    stop: async () => {
      await stopProcess(child);
      rmSync(chroot, { recursive: true, force: true });
    },
  };
}

async function main(): Promise<void> {
  if (spawnSync('sftp', ['-V']).error) {
    console.log('sftp bench skipped: no OpenSSH sftp client (apt-get install openssh-client)');
    return;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mw-bench-sftp-'));
  chmodSync(dir, 0o755);
  const key = path.join(dir, 'client_key');
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  const pub = readFileSync(`${key}.pub`, 'utf8').trim();
  const small = path.join(dir, 'small');
  mkdirSync(small);
  for (let i = 0; i < FILES; i++) writeFileSync(path.join(small, `f${i}.html`), Buffer.alloc(4096, i % 251));
  const large = path.join(dir, 'large.bin');
  writeFileSync(large, Buffer.alloc(LARGE, 7));

  const targets: Target[] = [];
  const ref = await sshd(dir, pub);
  if (ref) targets.push(ref);
  else console.log(`sshd reference skipped: ${existsSync(SSHD) ? 'needs root' : 'not installed (apt-get install openssh-server)'}`);
  targets.push(await makewaves(dir, pub));
  const rows: Array<{ name: string; small: number; largeMiBs: number }> = [];
  try {
    for (const t of targets) {
      // One warm-up round, not measured.
      await sftp(t, key, `put -r ${small} ${t.dest}/warm\nput ${large} ${t.dest}/warm.bin\n`);
      const smalls: number[] = [];
      const larges: number[] = [];
      for (let r = 0; r < RUNS; r++) {
        smalls.push(await sftp(t, key, `put -r ${small} ${t.dest}/s${r}\n`));
        larges.push(await sftp(t, key, `put ${large} ${t.dest}/l${r}.bin\n`));
      }
      rows.push({ name: t.name, small: median(smalls), largeMiBs: LARGE / 1048576 / median(larges) });
    }
  } finally {
    for (const t of targets) await t.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const base = rows[0]!;
  console.log(`\n## SFTP upload (OpenSSH sftp client, medians of ${RUNS}, Node ${process.version})\n`);
  console.log(`| server | ${FILES} × 4 KiB (s) | ratio | ${LARGE / 1048576} MiB (MiB/s) | ratio |`);
  console.log('|---|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(`| ${r.name} | ${r.small.toFixed(2)} | ${(r.small / base.small).toFixed(2)}× | ${r.largeMiBs.toFixed(0)} | ${(r.largeMiBs / base.largeMiBs).toFixed(2)}× |`);
  }
  if (ref) console.log('\ntargets: small files ≤ 1.50× sshd\'s time; large file ≥ 0.80× its MiB/s');
}

await main();
