import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { isMap, parseDocument, type Document } from 'yaml';
import { ConfigError, loadConfig, loadMainConfig, TENANT_DIR, TENANT_ID, type LoadedConfig } from '../../core/config/load.ts';
import type { MainConfig } from '../../core/config/schema.ts';
import { Registry, type Tenant } from '../../core/registry.ts';
import { scanUsage } from '../../lib/du.ts';
import { isValidHostname } from '../../lib/hostname.ts';
import { formatSize, parseSize } from '../../lib/sizes.ts';
import { resolveServiceUser } from '../../lib/users.ts';
import { openState } from '../../state/index.ts';

type Out = NodeJS.WritableStream;

/** The path of a tenant's file (it need not exist). */
export function tenantFile(configDir: string, id: string): string {
  return path.join(configDir, TENANT_DIR, `${id}.yaml`);
}

/** Loads the config as it is now; a config that is already broken is refused, so an edit is never blamed for it. */
function loadCurrent(configDir: string): LoadedConfig {
  try {
    return loadConfig(configDir);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    throw new Error(`the configuration already has ${err.problems.length} problem(s), first: ${err.problems[0]}; fix them first (makewaves check)`);
  }
}

/** Reads a tenant's file as a yaml Document (which keeps comments and layout when written back). */
function readTenant(configDir: string, id: string): { file: string; doc: Document } {
  const file = tenantFile(configDir, id);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new Error(`no tenant "${id}" (${file} does not exist)`);
  }
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]!.message.split('\n')[0]}; fix it first (makewaves check)`);
  return { file, doc };
}

/**
 * Validates `text` as tenant `id`'s new file with the real loader (every
 * other file as it is on disk: domain clashes included), then writes it to a
 * temporary beside the target and renames it in, so a running server's
 * reload sees the old file or the new one, never half of it. Throws one
 * line naming what is wrong; nothing is written then.
 */
export function writeTenant(configDir: string, id: string, text: string): void {
  validateEdit(configDir, id, text);
  const file = tenantFile(configDir, id);
  const tmp = path.join(path.dirname(file), `.${id}.yaml.${process.pid}.tmp`);
  try {
    writeFileSync(tmp, text, { mode: 0o640 });
    // The new file keeps the old one's owner and mode; a new one, written as root, is readable by the service group.
    const old = statSync(file, { throwIfNoEntry: false });
    if (old) {
      chmodSync(tmp, old.mode & 0o7777);
      if (process.getuid?.() === 0) chownSync(tmp, old.uid, old.gid);
    } else {
      const owner = serviceOwner(loadMainConfig(configDir));
      if (owner) chownSync(tmp, 0, owner.gid);
    }
    renameSync(tmp, file);
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** Runs the loader with tenant `id`'s file replaced by `text` (null: removed); throws one line if it refuses. */
function validateEdit(configDir: string, id: string, text: string | null): void {
  try {
    loadConfig(configDir, new Map([[id, text]]));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    throw new Error(explain(id, err.problems));
  }
}

/** The loader's problems with the edited file, as one line about that tenant. */
function explain(id: string, problems: readonly string[]): string {
  const own = new RegExp(`(?:^|/)${id.replace(/\./g, '\\.')}\\.yaml: (.*)$`);
  const lines = problems.map((p) => {
    const mine = own.exec(p);
    if (mine) return mine[1]!;
    // A clash is reported on the file that sorts later, which may be the other tenant's.
    const clash = /(?:^|\/)([^/]+)\.yaml: domains\[\d+\]: "([^"]+)" is already claimed by tenant "([^"]+)"$/.exec(p);
    if (clash && clash[3] === id) return `"${clash[2]}" is already claimed by tenant "${clash[1]}"`;
    return p;
  });
  return `tenant "${id}": ${lines.join('; ')}; nothing changed`;
}

function checkId(id: string): void {
  if (!TENANT_ID.test(id) || id.length > 253) {
    throw new Error(`"${id}" is not a tenant id: lower-case letters, digits, "-" and "." between labels (a domain name is a good id)`);
  }
}

function checkDomain(d: string): string {
  const lower = d.toLowerCase();
  if (!isValidHostname(lower)) throw new Error(`"${d}" is not a valid domain name`);
  return lower;
}

function welcomePage(id: string, domain: string): string {
  return (
    `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>${domain}</title></head>\n` +
    `<body><h1>Welcome to ${domain}</h1>\n<p>This site is hosted by makewaves and has no content yet. ` +
    `Upload your pages over FTP to replace this one.</p>\n<!-- tenant ${id} -->\n</body></html>\n`
  );
}

/** The service account's uid/gid when this command runs as root and `user:` is configured (web roots are given to it). */
function serviceOwner(main: MainConfig): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0 || !main.user) return undefined;
  return resolveServiceUser(main.user, main.group);
}

/** `makewaves tenant add ID --domain D [--domain D2] [--quota SIZE]`. */
export function tenantAdd(configDir: string, id: string, opts: { domains: string[]; quota?: string }, out: Out = process.stdout): number {
  checkId(id);
  if (opts.domains.length === 0) throw new Error('a tenant needs at least one --domain');
  const domains = opts.domains.map(checkDomain);
  if (opts.quota !== undefined && parseSize(opts.quota) === undefined) {
    throw new Error(`--quota "${opts.quota}" is not a size (examples: 1048576, 512KiB, 10MB)`);
  }
  const config = loadCurrent(configDir);
  if (config.tenants.some((t) => t.id === id) || existsSync(tenantFile(configDir, id))) throw new Error(`tenant "${id}" already exists`);
  const text =
    `# Tenant ${id}, added by \`makewaves tenant add\` on ${new Date().toISOString().slice(0, 10)}.\n` +
    `domains: [${domains.join(', ')}]\n` +
    (opts.quota !== undefined ? `quota: ${opts.quota.trim()}\n` : '');
  // Validated before anything is created, so a refusal leaves no web root behind.
  validateEdit(configDir, id, text);
  const root = path.join(config.main.sitesDir, id);
  const owner = serviceOwner(config.main);
  let created = false;
  if (!existsSync(root)) {
    mkdirSync(root, { recursive: true, mode: 0o755 });
    writeFileSync(path.join(root, 'index.html'), welcomePage(id, domains[0]!), { mode: 0o644 });
    if (owner) {
      chownSync(root, owner.uid, owner.gid);
      chownSync(path.join(root, 'index.html'), owner.uid, owner.gid);
    }
    created = true;
  }
  writeTenant(configDir, id, text);
  out.write(`added tenant ${id} (${domains.join(', ')}${opts.quota ? `, quota ${opts.quota}` : ''}) in ${tenantFile(configDir, id)}\n`);
  out.write(created ? `created web root ${root} with a welcome page\n` : `kept the existing web root ${root}\n`);
  return 0;
}

interface TenantFacts {
  tenant: Tenant;
  used: number;
  monthRequests: number;
  monthBytes: number;
}

async function facts(config: LoadedConfig, tenants: Tenant[]): Promise<TenantFacts[]> {
  // The state file is read only if it exists: a listing must not create it (as root, owned by root).
  const dbFile = path.join(config.main.dataDir, 'makewaves.db');
  const state = existsSync(dbFile) ? openState(config.main.dataDir) : undefined;
  const month = `${new Date().toISOString().slice(0, 7)}-01`;
  try {
    const out: TenantFacts[] = [];
    for (const tenant of tenants) {
      const traffic = state?.traffic.since(tenant.id, month) ?? { requests: 0, bytes: 0 };
      out.push({ tenant, used: await scanUsage(tenant.root), monthRequests: traffic.requests, monthBytes: traffic.bytes });
    }
    return out;
  } finally {
    state?.close();
  }
}

function quotaText(f: TenantFacts): string {
  const q = f.tenant.quota;
  return q === undefined ? `${formatSize(f.used)} / no quota` : `${formatSize(f.used)} / ${formatSize(q)} (${Math.round((f.used / Math.max(q, 1)) * 100)}%)`;
}

function suspension(t: Tenant): string | undefined {
  const s = t.config.suspended;
  if (s === false) return undefined;
  if (s === true) return 'suspended';
  return `suspended${s.since ? ` since ${s.since}` : ''}${s.reason ? `: ${s.reason}` : ''}`;
}

/** `makewaves tenant list`: one block per tenant. */
export async function tenantList(configDir: string, out: Out = process.stdout): Promise<number> {
  const config = loadCurrent(configDir);
  const reg = new Registry(config);
  const all = await facts(config, [...reg.tenants.values()]);
  for (const f of all) {
    const t = f.tenant;
    const mail = t.config.mail;
    out.write(
      `${t.id}${t.suspended ? `  [${suspension(t)}]` : ''}\n` +
        `  domains  ${t.domains.join(', ')}\n` +
        `  disk     ${quotaText(f)}\n` +
        `  traffic  ${f.monthRequests} requests, ${formatSize(f.monthBytes)} this month\n` +
        `  ftp      ${t.config.ftp.map((u) => `${u.user}@${t.id}`).join(', ') || '-'}\n` +
        `  aliases  ${Object.keys(mail?.forward ?? {}).length}${mail?.catchAll ? ' + catch-all' : ''}` +
        `   lists ${Object.keys(mail?.lists ?? {}).join(', ') || '-'}\n`,
    );
  }
  out.write(`${all.length} tenant${all.length === 1 ? '' : 's'}\n`);
  return 0;
}

/** `makewaves tenant show ID`: everything about one tenant. */
export async function tenantShow(configDir: string, id: string, out: Out = process.stdout): Promise<number> {
  const config = loadCurrent(configDir);
  const t = new Registry(config).tenants.get(id);
  if (!t) throw new Error(`no tenant "${id}" (makewaves tenant list shows them)`);
  const [f] = await facts(config, [t]);
  const c = t.config;
  const lines = [
    `tenant   ${t.id}${t.suspended ? `  [${suspension(t)}]` : ''}`,
    `file     ${tenantFile(configDir, id)}`,
    `domains  ${t.domains.join(', ')}`,
    `root     ${t.root}`,
    `disk     ${quotaText(f!)}`,
    `traffic  ${f!.monthRequests} requests, ${formatSize(f!.monthBytes)} this month`,
    `ftp      ${c.ftp.map((u) => `${u.user}@${t.id}`).join(', ') || '-'}`,
  ];
  for (const [local, targets] of Object.entries(c.mail?.forward ?? {})) lines.push(`alias    ${local}@${t.domains[0]} → ${targets.join(', ')}`);
  if (c.mail?.catchAll) lines.push(`catchall *@${t.domains[0]} → ${c.mail.catchAll}`);
  for (const [name, l] of Object.entries(c.mail?.lists ?? {})) lines.push(`list     ${name}@${t.domains[0]} (owner ${l.owner}, posting ${l.posting})`);
  if (c.forms) lines.push(`forms    to ${c.forms.recipients.join(', ') || '-'}`);
  lines.push(`cgi      ${c.cgi ? 'own handlers allowed' : 'suite handlers only'}`);
  for (const p of t.proxy) lines.push(`proxy    ${p.prefix} → ${p.origin}${p.replace ?? ''}`);
  out.write(`${lines.join('\n')}\n`);
  return 0;
}

/** `makewaves tenant suspend ID [--reason TEXT]`. */
export function tenantSuspend(configDir: string, id: string, reason: string | undefined, out: Out = process.stdout): number {
  loadCurrent(configDir);
  const { doc } = readTenant(configDir, id);
  if (doc.get('suspended') !== undefined && doc.get('suspended') !== false) throw new Error(`tenant "${id}" is already suspended`);
  const value = doc.createNode({ reason: reason ?? '', since: new Date().toISOString().slice(0, 19) + 'Z' });
  value.flow = true;
  doc.set('suspended', value);
  writeTenant(configDir, id, doc.toString({ lineWidth: 0, flowCollectionPadding: false }));
  out.write(`suspended tenant ${id}${reason ? ` (${reason})` : ''}: HTTP answers 503, FTP refuses logins, mail waits with 450\n`);
  return 0;
}

/** `makewaves tenant resume ID`. */
export function tenantResume(configDir: string, id: string, out: Out = process.stdout): number {
  loadCurrent(configDir);
  const { doc } = readTenant(configDir, id);
  const s = doc.get('suspended');
  if (s === undefined || s === false) throw new Error(`tenant "${id}" is not suspended`);
  doc.delete('suspended');
  writeTenant(configDir, id, doc.toString({ lineWidth: 0, flowCollectionPadding: false }));
  out.write(`resumed tenant ${id}\n`);
  return 0;
}

/** A move that also works across file systems (copy, then remove the original). */
function move(from: string, to: string): void {
  try {
    renameSync(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    cpSync(from, to, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
    rmSync(from, { recursive: true });
  }
}

/**
 * `makewaves tenant remove ID --yes`: moves the tenant's file and web root
 * to `<data>/archive/<id>-<UTC timestamp>/` and writes its state rows
 * (traffic, form log) there as JSON. Nothing is deleted.
 */
export function tenantRemove(configDir: string, id: string, opts: { yes: boolean }, out: Out = process.stdout): number {
  const config = loadCurrent(configDir);
  const entry = config.tenants.find((t) => t.id === id);
  if (!entry) throw new Error(`no tenant "${id}" (makewaves tenant list shows them)`);
  if (!opts.yes) throw new Error(`removing tenant "${id}" takes its sites off line; run again with --yes (its file, web root and state are archived, not deleted)`);
  // The rest of the config must still load without this tenant (nothing refers to it today, but the loader decides).
  validateEdit(configDir, id, null);
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const archive = path.join(config.main.dataDir, 'archive', `${id}-${stamp}`);
  mkdirSync(archive, { recursive: true, mode: 0o700 });

  const dbFile = path.join(config.main.dataDir, 'makewaves.db');
  if (existsSync(dbFile)) {
    const state = openState(config.main.dataDir);
    try {
      const rows = {
        traffic: state.db.prepare('SELECT * FROM traffic WHERE tenant = ? ORDER BY day').all(id),
        forms: state.db.prepare('SELECT * FROM form_submissions WHERE tenant = ? ORDER BY id').all(id),
      };
      writeFileSync(path.join(archive, 'state.json'), `${JSON.stringify(rows, null, 1)}\n`, { mode: 0o600 });
    } finally {
      state.close();
    }
  }
  // The file first: the server's reload stops serving the tenant before its files go.
  move(entry.file, path.join(archive, `${id}.yaml`));
  const root = path.join(config.main.sitesDir, id);
  if (existsSync(root)) move(root, path.join(archive, 'site'));
  out.write(`removed tenant ${id}; its file, web root and state are in ${archive}\n`);
  return 0;
}

/** Finds the tenant hosting `local@domain`; throws a clear line if there is none. */
function aliasOwner(config: LoadedConfig, address: string): { tenant: Tenant; local: string; domain: string } {
  const m = /^([^@\s]+)@([^@\s]+)$/.exec(address);
  if (!m) throw new Error(`"${address}" is not an address of the form local@domain`);
  const local = m[1]!.toLowerCase();
  const domain = m[2]!.toLowerCase();
  // The same characters an address local part may carry unquoted (RFC 5321 §4.1.2 Dot-string), without "+" tags.
  if (!/^[a-z0-9!#$%&'*/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*/=?^_`{|}~-]+)*$/.test(local)) throw new Error(`"${m[1]}" is not a plain local part`);
  const tenant = new Registry(config).tenantForHost(domain);
  if (!tenant) throw new Error(`no tenant has the domain "${domain}"`);
  return { tenant, local, domain };
}

/** `makewaves alias add local@domain target [target…]`: adds the targets to the tenant's `mail.forward.<local>`. */
export function aliasAdd(configDir: string, address: string, targets: string[], out: Out = process.stdout): number {
  if (targets.length === 0) throw new Error('give at least one target address');
  const config = loadCurrent(configDir);
  const { tenant, local } = aliasOwner(config, address);
  const { doc } = readTenant(configDir, tenant.id);
  const existing = doc.getIn(['mail', 'forward', local]);
  const before: string[] = existing === undefined ? [] : typeof existing === 'string' ? [existing] : (doc.getIn(['mail', 'forward', local], false) as { toJSON(): string[] }).toJSON();
  const merged = [...before];
  for (const t of targets.map((x) => x.toLowerCase())) if (!merged.includes(t)) merged.push(t);
  if (merged.length === before.length) throw new Error(`${local}@${tenant.domains[0]} already forwards to ${targets.join(', ')}`);
  const node = doc.createNode(merged);
  node.flow = true;
  if (!isMap(doc.get('mail'))) doc.set('mail', doc.createNode({ forward: {} }));
  if (!isMap(doc.getIn(['mail', 'forward']))) doc.setIn(['mail', 'forward'], doc.createNode({}));
  doc.setIn(['mail', 'forward', local], node);
  writeTenant(configDir, tenant.id, doc.toString({ lineWidth: 0, flowCollectionPadding: false }));
  const others = tenant.domains.length > 1 ? ` (and @${tenant.domains.slice(1).join(', @')})` : '';
  out.write(`${local}@${tenant.domains[0]}${others} → ${merged.join(', ')} (tenant ${tenant.id})\n`);
  return 0;
}

/** `makewaves alias remove local@domain`. */
export function aliasRemove(configDir: string, address: string, out: Out = process.stdout): number {
  const config = loadCurrent(configDir);
  const { tenant, local } = aliasOwner(config, address);
  const { doc } = readTenant(configDir, tenant.id);
  if (!doc.hasIn(['mail', 'forward', local])) throw new Error(`tenant ${tenant.id} has no alias ${local}`);
  doc.deleteIn(['mail', 'forward', local]);
  writeTenant(configDir, tenant.id, doc.toString({ lineWidth: 0, flowCollectionPadding: false }));
  out.write(`removed alias ${local}@${tenant.domains[0]} (tenant ${tenant.id})\n`);
  return 0;
}
