import { existsSync } from 'node:fs';
import path from 'node:path';
import { certFiles, certificateProblems, DEFAULT_CERT } from '../../core/certs.ts';
import { ConfigError, loadConfig, type LoadedConfig } from '../../core/config/load.ts';
import { Registry } from '../../core/registry.ts';
import { probeBox } from '../../lib/box.ts';
import { lookupUser } from '../../lib/users.ts';

/**
 * Certificate problems for every tenant domain served over HTTPS: the file
 * that would answer its SNI (the same order the server uses) must exist,
 * match its key, be valid now and cover the name.
 */
export function tlsProblems(config: LoadedConfig, now = new Date()): { problems: string[]; notes: string[] } {
  const tls = config.main.http.tls;
  const problems = new Set<string>();
  const notes: string[] = [];
  if (!tls) return { problems: [], notes };
  const dir = path.resolve(config.dir, tls.certs);
  const registry = new Registry(config);
  for (const tenant of registry.tenants.values()) {
    for (const domain of tenant.domains) {
      const candidates = [
        ...(tenant.tlsFiles ? [tenant.tlsFiles] : []),
        certFiles(dir, domain),
        ...tenant.domains.filter((d) => d !== domain).map((d) => certFiles(dir, d)),
        certFiles(dir, DEFAULT_CERT),
      ];
      const found = candidates.find((c) => existsSync(c.cert));
      if (!found) {
        notes.push(`${domain}: no certificate in ${dir}${tls.selfSigned ? ' (a self-signed one is written at start)' : ' (HTTPS handshakes for it fail)'}`);
        continue;
      }
      for (const p of certificateProblems(found.cert, found.key, [domain], now)) problems.add(p);
    }
  }
  return { problems: [...problems], notes };
}

/**
 * The account that builds the handlers' box when the server runs: as root,
 * the service user it drops to (`user:`), else `cgi.user`; not root, this
 * one (undefined). A user that does not exist is left to the server's own
 * refusal at start.
 */
function boxBuilder(config: LoadedConfig): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  return lookupUser(config.main.user ?? config.main.cgi.user);
}

/**
 * Which uid the handlers will run as: started as root, each tenant its own
 * from cgi.uids (a problem when the range cannot hold every tenant);
 * otherwise one uid for all, said plainly.
 */
function handlerUids(config: LoadedConfig): { note: string; problem?: string } {
  const range = config.main.cgi.uids;
  if (process.getuid?.() !== 0) {
    return {
      note: `not run as root: every tenant's handlers and scripts run as one uid (${process.getuid?.()}, this account), each in its own box (namespaces still on); started as root, each tenant gets its own uid from cgi.uids ${range}`,
    };
  }
  const [first, last] = range.split('-').map(Number) as [number, number];
  const room = last - first + 1;
  if (room < config.tenants.length) return { note: '', problem: `cgi.uids ${range} holds ${room} uids for ${config.tenants.length} tenants: the tenants left without one cannot run handlers` };
  return { note: `handlers and scripts run as each tenant's own uid from cgi.uids ${range} (${config.tenants.length} tenants, room for ${room}), set by a root launcher` };
}

/**
 * `makewaves check`: runs the real loader and looks for the handlers' box
 * (bubblewrap); prints each problem and exits 1, or a summary and 0.
 */
export function check(configDir: string): number {
  try {
    const config = loadConfig(configDir);
    const { problems, notes } = tlsProblems(config);
    if (config.main.smtp?.dns) notes.push(`${path.join(config.dir, 'makewaves.yaml')}: smtp.dns is deprecated: move it to a top-level dns: (same keys), the resolver for every lookup`);
    // Every site answers /cgi-bin/formmail: without the box no handler runs, so it is a problem, not a note.
    const box = probeBox({ runAs: boxBuilder(config) });
    if (!box.ok) problems.push(box.why);
    const uidNote = handlerUids(config);
    if (uidNote.problem) problems.push(uidNote.problem);
    else notes.push(uidNote.note);
    for (const n of notes) process.stdout.write(`note: ${n}\n`);
    if (problems.length > 0) {
      for (const p of problems) process.stderr.write(`${p}\n`);
      process.stderr.write(`${problems.length} problem${problems.length === 1 ? '' : 's'} found\n`);
      return 1;
    }
    const domains = config.tenants.reduce((n, t) => n + t.config.domains.length, 0);
    process.stdout.write(`${config.dir}: OK (${config.tenants.length} tenants, ${domains} domains)\n`);
    return 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const p of err.problems) process.stderr.write(`${p}\n`);
      process.stderr.write(`${err.problems.length} problem${err.problems.length === 1 ? '' : 's'} found\n`);
      return 1;
    }
    throw err;
  }
}
