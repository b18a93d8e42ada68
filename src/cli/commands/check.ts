import { accessSync, constants, existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { certFiles, certificateProblems, DEFAULT_CERT } from '../../core/certs.ts';
import { ConfigError, loadConfig, type LoadedConfig } from '../../core/config/load.ts';
import { Registry } from '../../core/registry.ts';
import { probeBox } from '../../lib/box.ts';
import { boxInitPlan } from '../../lib/boxinit.ts';
import { nativeDir } from '../../lib/paths.ts';
import { findDelegatedCgroup, limitsNote } from '../../lib/cgroup.ts';
import { lookupUser } from '../../lib/users.ts';

/** Why `file` cannot be read (its errno code), or undefined when it can. */
function unreadable(file: string): string | undefined {
  try {
    accessSync(file, constants.R_OK);
    return statSync(file).isFile() ? undefined : 'not a file';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

/**
 * Certificate problems for every tenant domain served over HTTPS: the file
 * that would answer its SNI (the same order the server uses) must exist,
 * match its key, be valid now and cover the name. A tenant's own `tls:`
 * files that cannot be read are a problem named by file and key (the
 * server would quietly answer from the store instead); a domain nothing
 * answers for is a problem unless a self-signed one is written at start or
 * ACME fetches one. Without a default certificate, the offers that need it
 * (SMTP STARTTLS, FTPS from the store) are named.
 */
export function tlsProblems(config: LoadedConfig, now = new Date()): { problems: string[]; notes: string[] } {
  const tls = config.main.http.tls;
  const problems = new Set<string>();
  const notes: string[] = [];
  const dir = tls ? path.resolve(config.dir, tls.certs) : undefined;
  const fallback = dir ? certFiles(dir, DEFAULT_CERT) : undefined;
  const hasDefault = Boolean(fallback && !unreadable(fallback.cert) && !unreadable(fallback.key)) || Boolean(tls?.selfSigned);
  if (!hasDefault) {
    const where = fallback ? `no readable default certificate (${fallback.cert} and ${fallback.key})` : 'no certificate store (http.tls is not configured)';
    if (config.main.smtp) notes.push(`${where}: SMTP STARTTLS is off`);
    const ftpTls = config.main.ftp?.tls;
    if (config.main.ftp && !ftpTls) notes.push('ftp.tls is not configured: FTPS is off');
    else if (ftpTls && !ftpTls.cert) problems.add(`${path.join(config.dir, 'makewaves.yaml')}: ftp.tls names no cert/key and there is ${where}: FTP does not start`);
  } else if (config.main.ftp && !config.main.ftp.tls) {
    notes.push('ftp.tls is not configured: FTPS is off');
  }
  if (!tls || !dir) return { problems: [...problems], notes };
  const ownBroken = new Set<string>();
  for (const entry of config.tenants) {
    const own = entry.config.tls;
    if (!own) continue;
    const base = path.dirname(entry.file);
    for (const key of ['cert', 'key'] as const) {
      const file = path.resolve(base, own[key]);
      const why = unreadable(file);
      if (why) {
        problems.add(`${entry.file}: tls.${key}: ${file} cannot be read (${why})`);
        ownBroken.add(entry.id);
      }
    }
  }
  const registry = new Registry(config);
  for (const tenant of registry.tenants.values()) {
    if (ownBroken.has(tenant.id)) continue;
    for (const domain of tenant.domains) {
      const candidates = [
        ...(tenant.tlsFiles ? [tenant.tlsFiles] : []),
        certFiles(dir, domain),
        ...tenant.domains.filter((d) => d !== domain).map((d) => certFiles(dir, d)),
        certFiles(dir, DEFAULT_CERT),
      ];
      const found = candidates.find((c) => existsSync(c.cert));
      if (!found) {
        if (tls.selfSigned) notes.push(`${domain}: no certificate in ${dir} (a self-signed one is written at start)`);
        else if (config.main.acme) notes.push(`${domain}: no certificate in ${dir} yet (ACME fetches one at start)`);
        else problems.add(`${domain}: no certificate in ${dir} (${domain}.crt/.key) nor a default one, http.tls.selfSigned is false and there is no acme: HTTPS handshakes for it fail`);
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
 * How scripts will be boxed, as a start would decide it (the same
 * {@link boxInitPlan}): one persistent box per tenant with box-init built
 * or to be built, else one fresh box per run, and why.
 */
function scriptBoxNote(config: LoadedConfig): string {
  let plan = boxInitPlan(nativeDir());
  // As the cgi service does: a package folder it may not build in leaves the data folder (without root).
  if (!plan.ok && !/no C compiler/.test(plan.why) && process.getuid?.() !== 0) plan = boxInitPlan(path.join(config.main.dataDir, 'box-init'));
  if (plan.ok) return `one persistent box per tenant (box-init ${plan.build ? 'to be built with cc at the first start' : `built: ${plan.path}`}), each run cloned in fresh namespaces`;
  return `one fresh box per run (slower): ${plan.why}`;
}

/**
 * Where postmaster@ and abuse@ go (RFC 5321 §4.5.1, RFC 2142): with mail
 * on (`smtp:`), a note naming `mail.postmaster` and the tenants that
 * forward those addresses themselves, or a warning that it is not set; a
 * problem when it leads nowhere (a loop through hosted forwards).
 */
export function postmasterReport(config: LoadedConfig): { notes: string[]; warnings: string[]; problems: string[] } {
  const out = { notes: [] as string[], warnings: [] as string[], problems: [] as string[] };
  const main = config.main;
  const file = path.join(config.dir, 'makewaves.yaml');
  const own = config.tenants.filter((t) => Object.keys(t.config.mail?.forward ?? {}).some((k) => /^(postmaster|abuse)$/i.test(k))).map((t) => t.id);
  const ownNote = own.length > 0 ? `; tenants forwarding them themselves: ${own.join(', ')}` : '';
  if (!main.smtp) {
    if (main.mail?.postmaster) out.notes.push(`${file}: mail.postmaster is set but there is no smtp: section, so no mail is taken at all`);
    return out;
  }
  const names = [main.hostname, ...(main.smtp.srsDomain && main.smtp.srsDomain !== main.hostname ? [main.smtp.srsDomain] : [])].join(' and ');
  const routed = new Registry(config).postmaster();
  if (!routed) {
    out.warnings.push(
      `${file}: mail.postmaster is not set: postmaster@ and abuse@ of hosted domains without a forward of that name, of ${names}, and <postmaster> are refused (RFC 5321 section 4.5.1 asks every mail domain to take postmaster; RFC 2142 abuse)${ownNote}`,
    );
    return out;
  }
  if (routed.targets.length === 0) {
    out.problems.push(`${file}: mail.postmaster: ${main.mail!.postmaster} leads nowhere (${routed.problems.join('; ')}): postmaster@ and abuse@ mail would be refused`);
    return out;
  }
  const via = routed.targets.join(', ') === main.mail!.postmaster ? '' : ` (forwarded on to ${routed.targets.join(', ')})`;
  out.notes.push(`postmaster@ and abuse@ of every hosted domain without a forward of that name, of ${names}, and <postmaster> go to mail.postmaster ${main.mail!.postmaster}${via}${ownNote}`);
  return out;
}

/**
 * `makewaves check`: runs the real loader and looks for the handlers' box
 * (bubblewrap); prints each problem and exits 1, or a summary and 0.
 */
export function check(configDir: string): number {
  try {
    const config = loadConfig(configDir);
    const { problems, notes } = tlsProblems(config);
    const postmaster = postmasterReport(config);
    notes.push(...postmaster.notes);
    problems.push(...postmaster.problems);
    if (config.main.smtp?.dns) notes.push(`${path.join(config.dir, 'makewaves.yaml')}: smtp.dns is deprecated: move it to a top-level dns: (same keys), the resolver for every lookup`);
    // Every site answers /cgi-bin/formmail: without the box no handler runs, so it is a problem, not a note.
    const box = probeBox({ runAs: boxBuilder(config) });
    if (!box.ok) problems.push(box.why);
    const uidNote = handlerUids(config);
    if (uidNote.problem) problems.push(uidNote.problem);
    else notes.push(uidNote.note);
    notes.push(`handler and script limits: ${limitsNote(findDelegatedCgroup())}`);
    notes.push(`classic CGI scripts: ${scriptBoxNote(config)}`);
    for (const n of notes) process.stdout.write(`note: ${n}\n`);
    for (const w of postmaster.warnings) process.stdout.write(`warning: ${w}\n`);
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
