import { chownSync, cpSync, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { TENANT_ID } from './config/load.ts';
import { isValidHostname } from '../lib/hostname.ts';
import { parseSize } from '../lib/sizes.ts';
import { EditRefused, loadCurrent, readTenant, serviceOwner, tenantFile, tenantText, validateEdit, writeTenant } from './tenantfile.ts';

/*
 * A tenant's life: add, suspend, resume, remove. `makewaves tenant
 * add|suspend|resume|remove` and the operator's panel both call these, so
 * the two cannot disagree on what a tenant file says or what an archive
 * holds. A refusal is an {@link EditRefused} (one line, the CLI prints it,
 * the panel shows it next to the field); anything else is a failure of ours.
 */

/** Writes a tenant file, turning the loader's refusal into an {@link EditRefused} about `field`. */
function write(configDir: string, id: string, text: string, field: string): void {
  try {
    writeTenant(configDir, id, text);
  } catch (err) {
    if (err instanceof EditRefused || !(err instanceof Error) || (err as NodeJS.ErrnoException).code !== undefined) throw err;
    throw new EditRefused(err.message, field);
  }
}

function checkId(id: string): void {
  if (!TENANT_ID.test(id) || id.length > 253) {
    throw new EditRefused(`"${id}" is not a tenant id: lower-case letters, digits, "-" and "." between labels (a domain name is a good id)`, 'id');
  }
}

function checkDomain(d: string): string {
  const lower = d.toLowerCase();
  if (!isValidHostname(lower)) throw new EditRefused(`"${d}" is not a valid domain name`, 'domains');
  return lower;
}

function welcomePage(id: string, domain: string): string {
  return (
    `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>${domain}</title></head>\n` +
    `<body><h1>Welcome to ${domain}</h1>\n<p>This site is hosted by makewaves and has no content yet. ` +
    `Upload your pages over FTP to replace this one.</p>\n<!-- tenant ${id} -->\n</body></html>\n`
  );
}

export interface AddedTenant {
  file: string;
  root: string;
  domains: string[];
  /** False when a web root of that name was there already (kept as it was). */
  created: boolean;
}

/**
 * Adds tenant `id` with `domains` (and a quota): checks everything with the
 * loader first, creates its web root with a welcome page (owned by the
 * service user when run as root), then writes `tenants/<id>.yaml`, which a
 * running server's reload picks up.
 */
export function addTenant(configDir: string, id: string, opts: { domains: readonly string[]; quota?: string }, now = new Date()): AddedTenant {
  checkId(id);
  if (opts.domains.length === 0) throw new EditRefused('a tenant needs at least one domain', 'domains');
  const domains = opts.domains.map(checkDomain);
  if (opts.quota !== undefined && parseSize(opts.quota) === undefined) {
    throw new EditRefused(`quota "${opts.quota}" is not a size (examples: 1048576, 512KiB, 10MB)`, 'quota');
  }
  const config = loadCurrent(configDir);
  if (config.tenants.some((t) => t.id === id) || existsSync(tenantFile(configDir, id))) throw new EditRefused(`tenant "${id}" already exists`, 'id');
  const text =
    `# Tenant ${id}, added by \`makewaves tenant add\` on ${now.toISOString().slice(0, 10)}.\n` +
    `domains: [${domains.join(', ')}]\n` +
    (opts.quota !== undefined ? `quota: ${opts.quota.trim()}\n` : '');
  // Validated before anything is created, so a refusal leaves no web root behind.
  try {
    validateEdit(configDir, id, text);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== undefined) throw err;
    throw new EditRefused((err as Error).message, /quota/.test((err as Error).message) ? 'quota' : 'domains');
  }
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
  write(configDir, id, text, 'domains');
  return { file: tenantFile(configDir, id), root, domains, created };
}

/** Suspends tenant `id` (`suspended: { reason, since }` in its file): HTTP 503, FTP and panel logins refused, its mail waits. */
export function suspendTenant(configDir: string, id: string, reason: string | undefined, now = new Date()): void {
  loadCurrent(configDir);
  const { doc } = readTenant(configDir, id);
  if (doc.get('suspended') !== undefined && doc.get('suspended') !== false) throw new EditRefused(`tenant "${id}" is already suspended`, 'suspended');
  const value = doc.createNode({ reason: reason ?? '', since: now.toISOString().slice(0, 19) + 'Z' });
  value.flow = true;
  doc.set('suspended', value);
  write(configDir, id, tenantText(doc), 'reason');
}

/** Lifts tenant `id`'s suspension. */
export function resumeTenant(configDir: string, id: string): void {
  loadCurrent(configDir);
  const { doc } = readTenant(configDir, id);
  const s = doc.get('suspended');
  if (s === undefined || s === false) throw new EditRefused(`tenant "${id}" is not suspended`, 'suspended');
  doc.delete('suspended');
  write(configDir, id, tenantText(doc), 'suspended');
}

/** What an archive folder holds besides the files themselves (`manifest.json`). */
export interface ArchiveManifest {
  v: 1;
  tenant: string;
  removedAt: string;
  domains: string[];
  /** Queue ids of the messages taken off the queue; their copies are in `mail/`. */
  queued: string[];
}

/**
 * Takes a removed tenant's rows out of the state database into the
 * archive folder (`state.json`, `owned.json`, `mail/`) and returns the ids
 * of the queued messages taken. The CLI and the panel pass the same
 * implementation (state/tenantdata.ts `archiveTenantState`), each with its
 * own way of reaching the queue.
 */
export type StateArchiver = (o: { dataDir: string; tenant: string; domains: readonly string[]; archive: string }) => Promise<string[]>;

/** A move that also works across file systems (copy, then remove the original). */
export function moveTree(from: string, to: string): void {
  try {
    renameSync(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    cpSync(from, to, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
    rmSync(from, { recursive: true });
  }
}

/**
 * The folders under `<data>` a tenant owns, each with its place in the
 * archive: the handlers' scratch folder `cgi/<id>` and the DKIM keys of
 * each domain, `dkim/<domain>`.
 */
export function ownedFolders(dataDir: string, id: string, domains: readonly string[], archive: string): Array<[string, string]> {
  return [
    [path.join(dataDir, 'cgi', id), path.join(archive, 'cgi')],
    ...domains.map((d): [string, string] => [path.join(dataDir, 'dkim', d.toLowerCase()), path.join(archive, 'dkim', d.toLowerCase())]),
  ];
}

function writeManifest(archive: string, m: ArchiveManifest): void {
  writeFileSync(path.join(archive, 'manifest.json'), `${JSON.stringify(m, null, 1)}\n`, { mode: 0o600 });
}

/**
 * Takes tenant `id` off line and out of every service, keeping all of it
 * under `<data>/archive/<id>-<UTC time>/`: its file first (a running
 * server's reload then serves it no more), then its state rows and queued
 * mail (`archiveState`), its logs in `logs/`, its web root in `site/`, its
 * handlers' scratch folder in `cgi/` and its DKIM key files in `dkim/`.
 * `makewaves tenant restore` puts it back.
 */
export async function removeTenant(configDir: string, id: string, archiveState: StateArchiver, now = new Date()): Promise<{ archive: string; queued: number }> {
  const config = loadCurrent(configDir);
  const entry = config.tenants.find((t) => t.id === id);
  if (!entry) throw new EditRefused(`no tenant "${id}" (makewaves tenant list shows them)`, 'id');
  // The rest of the config must still load without this tenant (nothing refers to it today, but the loader decides).
  try {
    validateEdit(configDir, id, null);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== undefined) throw err;
    throw new EditRefused((err as Error).message, 'id');
  }
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const dataDir = config.main.dataDir;
  const archive = path.join(dataDir, 'archive', `${id}-${stamp}`);
  if (existsSync(archive)) throw new EditRefused(`${archive} exists already; try again in a second`, 'id');
  mkdirSync(archive, { recursive: true, mode: 0o700 });

  const manifest: ArchiveManifest = { v: 1, tenant: id, removedAt: now.toISOString(), domains: [...entry.config.domains], queued: [] };
  // Written at once and again at the end: an archive left half-way by a failure is still one restore understands.
  writeManifest(archive, manifest);
  // The file first: the server's reload stops serving the tenant before anything else of it goes.
  moveTree(entry.file, path.join(archive, `${id}.yaml`));
  manifest.queued = await archiveState({ dataDir, tenant: id, domains: manifest.domains, archive });
  writeManifest(archive, manifest);
  const logs = path.join(dataDir, 'logs', id);
  if (existsSync(logs)) moveTree(logs, path.join(archive, 'logs'));
  const root = path.join(config.main.sitesDir, id);
  if (existsSync(root)) moveTree(root, path.join(archive, 'site'));
  for (const [from, to] of ownedFolders(dataDir, id, manifest.domains, archive)) {
    if (!existsSync(from)) continue;
    mkdirSync(path.dirname(to), { recursive: true, mode: 0o700 });
    moveTree(from, to);
  }
  return { archive, queued: manifest.queued.length };
}
