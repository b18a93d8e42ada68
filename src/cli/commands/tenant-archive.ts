import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseDocument } from 'yaml';
import type { LoadedConfig } from '../../core/config/load.ts';
import { controlRequest } from '../../core/control.ts';
import { Spool } from '../../state/spool.ts';
import { openState, type State } from '../../state/index.ts';
import { restoreOwnedRows, restoreTenantRows, takeOwnedRows, takeTenantRows, type TenantRows } from '../../state/tenantdata.ts';
import { loadCurrent, tenantFile, validateEdit, writeTenant } from '../../core/tenantfile.ts';

type Out = NodeJS.WritableStream;

/** What an archive folder holds besides the files themselves (`manifest.json`). */
interface Manifest {
  v: 1;
  tenant: string;
  removedAt: string;
  domains: string[];
  /** Queue ids of the messages taken off the queue; their copies are in `mail/`. */
  queued: string[];
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

/** True when a server runs on this data folder (its control socket answers). */
async function serverRunning(dataDir: string): Promise<boolean> {
  try {
    return (await controlRequest(path.join(dataDir, 'mail.sock'), { cmd: 'ping' }, 3_000)).ok;
  } catch {
    // No socket, or nothing answers on it: no server uses this data folder.
    return false;
  }
}

/** The domain of an address, lower case. */
const domainOf = (a: string) => a.slice(a.lastIndexOf('@') + 1).toLowerCase();

/**
 * Takes the tenant's messages off the outbound queue: those sent on its
 * behalf (form mail, list copies, forwards of its addresses) and those
 * addressed to its domains (a bounce to forms@ or a list address). A copy
 * of each (message and envelope) goes to `<archive>/mail/` first. With a
 * server running, the queue itself removes them (it holds their spool files
 * and may be delivering one); otherwise their rows go and the spool file is
 * left for the next start to clear, as for any finished message.
 */
async function takeQueued(state: State, dataDir: string, tenant: string, domains: string[], archive: string): Promise<string[]> {
  const spool = new Spool(path.join(dataDir, 'spool'));
  const mine = state.mailQueue.list().filter((m) => m.tenant === tenant || state.mailQueue.recipients(m.id).some((r) => domains.includes(domainOf(r.rcpt))));
  if (mine.length === 0) return [];
  const dir = path.join(archive, 'mail');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const running = await serverRunning(dataDir);
  const taken: string[] = [];
  for (const m of mine) {
    const chunks: Buffer[] = [];
    for await (const c of spool.read(m.file, m.offset, m.size)) chunks.push(c as Buffer);
    writeFileSync(path.join(dir, `${m.id}.eml`), Buffer.concat(chunks), { mode: 0o600 });
    const envelope = { ...m, recipients: state.mailQueue.recipients(m.id) };
    writeFileSync(path.join(dir, `${m.id}.json`), `${JSON.stringify(envelope, null, 1)}\n`, { mode: 0o600 });
    if (running) {
      const res = await controlRequest(path.join(dataDir, 'mail.sock'), { cmd: 'delete', id: m.id });
      // Gone already (delivered or bounced since the list was read): nothing left to remove.
      if (!res.ok && !/no message/.test(res.error)) throw new Error(`the running server did not remove queued message ${m.id}: ${res.error}`);
    } else {
      state.mailQueue.remove(m.id, m.file, true);
    }
    taken.push(m.id);
  }
  return taken;
}

/**
 * `makewaves tenant remove ID --yes`: takes the tenant off line and out of
 * every service, keeping all of it under `<data>/archive/<id>-<UTC time>/`:
 * its file first (a running server's reload then serves it no more), then
 * its state rows of every table that names a tenant (list members, tokens,
 * held posts, list inbox, digests and archive, the form log, traffic) in
 * `state.json`, what it owns in tables keyed otherwise (DKIM keys by its
 * domains, FTP login throttle rows by its accounts) in `owned.json`, its
 * queued mail in `mail/`, its logs in `logs/`, its web root in `site/`, its
 * handlers' scratch folder in `cgi/` and its DKIM key files in `dkim/`. Afterwards nothing in state names the tenant, so a new
 * tenant with the same id starts empty; `makewaves tenant restore` puts it back.
 */
export async function tenantRemove(configDir: string, id: string, opts: { yes: boolean }, out: Out = process.stdout): Promise<number> {
  const config = loadCurrent(configDir);
  const entry = config.tenants.find((t) => t.id === id);
  if (!entry) throw new Error(`no tenant "${id}" (makewaves tenant list shows them)`);
  if (!opts.yes) throw new Error(`removing tenant "${id}" takes its sites off line; run again with --yes (its file, web root and state are archived, not deleted)`);
  // The rest of the config must still load without this tenant (nothing refers to it today, but the loader decides).
  validateEdit(configDir, id, null);
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const dataDir = config.main.dataDir;
  const archive = path.join(dataDir, 'archive', `${id}-${stamp}`);
  if (existsSync(archive)) throw new Error(`${archive} exists already; try again in a second`);
  mkdirSync(archive, { recursive: true, mode: 0o700 });

  const manifest: Manifest = { v: 1, tenant: id, removedAt: new Date().toISOString(), domains: [...entry.config.domains], queued: [] };
  // Written at once and again at the end: an archive left half-way by a failure is still one restore understands.
  writeFileSync(path.join(archive, 'manifest.json'), `${JSON.stringify(manifest, null, 1)}\n`, { mode: 0o600 });
  // The file first: the server's reload stops serving the tenant before anything else of it goes.
  move(entry.file, path.join(archive, `${id}.yaml`));
  if (existsSync(path.join(dataDir, 'makewaves.db'))) {
    const state = openState(dataDir);
    try {
      manifest.queued = await takeQueued(state, dataDir, id, manifest.domains, archive);
      writeFileSync(path.join(archive, 'state.json'), `${JSON.stringify(takeTenantRows(state.db, id), null, 1)}\n`, { mode: 0o600 });
      writeFileSync(path.join(archive, 'owned.json'), `${JSON.stringify(takeOwnedRows(state.db, id, manifest.domains), null, 1)}\n`, { mode: 0o600 });
    } finally {
      state.close();
    }
  }
  writeFileSync(path.join(archive, 'manifest.json'), `${JSON.stringify(manifest, null, 1)}\n`, { mode: 0o600 });
  const logs = path.join(dataDir, 'logs', id);
  if (existsSync(logs)) move(logs, path.join(archive, 'logs'));
  const root = path.join(config.main.sitesDir, id);
  if (existsSync(root)) move(root, path.join(archive, 'site'));
  for (const [from, to] of ownedFolders(dataDir, id, manifest.domains, archive)) {
    if (!existsSync(from)) continue;
    mkdirSync(path.dirname(to), { recursive: true, mode: 0o700 });
    move(from, to);
  }
  out.write(`removed tenant ${id}: file, web root, logs, handler scratch folder, DKIM keys, state and ${manifest.queued.length} queued message(s) archived in ${archive}\n`);
  out.write(`(makewaves tenant restore ${archive} brings it back)\n`);
  return 0;
}

/**
 * The folders under `<data>` a tenant owns, each with its place in the
 * archive: the handlers' scratch folder `cgi/<id>` and the DKIM keys of
 * each domain, `dkim/<domain>`.
 */
function ownedFolders(dataDir: string, id: string, domains: readonly string[], archive: string): Array<[string, string]> {
  return [
    [path.join(dataDir, 'cgi', id), path.join(archive, 'cgi')],
    ...domains.map((d): [string, string] => [path.join(dataDir, 'dkim', d.toLowerCase()), path.join(archive, 'dkim', d.toLowerCase())]),
  ];
}

/** The archive folder named on the command line: a path, or a folder name under `<data>/archive/`. */
function archiveDir(config: LoadedConfig, given: string): string {
  const candidates = [path.resolve(given), path.join(config.main.dataDir, 'archive', given)];
  const dir = candidates.find((d) => existsSync(path.join(d, 'manifest.json')));
  if (!dir) throw new Error(`"${given}" is not a tenant archive (no manifest.json in it, nor in ${candidates[1]})`);
  return dir;
}

/**
 * `makewaves tenant restore ARCHIVE`: the reverse of remove, for an archive
 * it wrote. Refused, with nothing changed, when a tenant of that id exists,
 * its web root exists, or its file no longer passes the loader (a domain
 * taken by another tenant since). The state rows go back first and the
 * tenant file last, so a running server starts serving a tenant whose data
 * is complete. Queued messages are not sent again: their copies stay in the
 * archive's `mail/` folder, which is all that is left of it afterwards.
 */
export function tenantRestore(configDir: string, given: string, out: Out = process.stdout): number {
  const config = loadCurrent(configDir);
  const dir = archiveDir(config, given);
  const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
  const id = manifest.tenant;
  if (config.tenants.some((t) => t.id === id) || existsSync(tenantFile(configDir, id))) throw new Error(`tenant "${id}" exists; remove it first (makewaves tenant remove ${id} --yes)`);
  const text = readFileSync(path.join(dir, `${id}.yaml`), 'utf8');
  if (parseDocument(text).errors.length > 0) throw new Error(`${path.join(dir, `${id}.yaml`)} is not valid YAML; nothing changed`);
  validateEdit(configDir, id, text);
  const root = path.join(config.main.sitesDir, id);
  if (existsSync(path.join(dir, 'site')) && existsSync(root)) throw new Error(`${root} exists; move it away first (nothing changed)`);
  const logs = path.join(config.main.dataDir, 'logs', id);

  const stateFile = path.join(dir, 'state.json');
  let restored: Record<string, number> = {};
  if (existsSync(stateFile)) {
    const rows = JSON.parse(readFileSync(stateFile, 'utf8')) as TenantRows;
    const state = openState(config.main.dataDir);
    try {
      restored = restoreTenantRows(state.db, id, rows);
    } finally {
      state.close();
    }
    rmSync(stateFile);
  }
  const ownedFile = path.join(dir, 'owned.json');
  let skipped: string[] = [];
  if (existsSync(ownedFile)) {
    const state = openState(config.main.dataDir);
    try {
      const back = restoreOwnedRows(state.db, JSON.parse(readFileSync(ownedFile, 'utf8')) as TenantRows);
      skipped = back.skipped;
      for (const [table, n] of Object.entries(back.counts)) restored[table] = (restored[table] ?? 0) + n;
    } finally {
      state.close();
    }
    rmSync(ownedFile);
  }
  // Folders that exist again meanwhile (a handler of a stand-in tenant ran, a domain got new keys) stay in the archive.
  for (const [to, from] of ownedFolders(config.main.dataDir, id, manifest.domains, dir)) {
    if (!existsSync(from) || existsSync(to) || skipped.some((d) => to.endsWith(path.join('dkim', d)))) continue;
    mkdirSync(path.dirname(to), { recursive: true, mode: path.basename(path.dirname(to)) === 'cgi' ? 0o711 : 0o700 });
    move(from, to);
  }
  for (const sub of ['cgi', 'dkim']) {
    const d = path.join(dir, sub);
    if (existsSync(d) && readdirSync(d).length === 0) rmSync(d, { recursive: true });
  }
  if (existsSync(path.join(dir, 'site'))) move(path.join(dir, 'site'), root);
  let logsKept = false;
  if (existsSync(path.join(dir, 'logs'))) {
    // Logs written for the id since the removal are not overwritten: the archived ones then stay where they are.
    if (existsSync(logs)) logsKept = true;
    else move(path.join(dir, 'logs'), logs);
  }
  writeTenant(configDir, id, text);
  rmSync(path.join(dir, `${id}.yaml`));
  const left = readdirSync(dir).filter((n) => n !== 'manifest.json');
  if (left.length === 0) rmSync(dir, { recursive: true });
  const rows = Object.values(restored).reduce((a, b) => a + b, 0);
  out.write(`restored tenant ${id}: its file, web root and ${rows} state row(s)\n`);
  if (manifest.queued.length > 0) out.write(`${manifest.queued.length} message(s) that were queued are not sent again; copies stay in ${path.join(dir, 'mail')}\n`);
  if (skipped.length > 0) out.write(`${skipped.join(', ')} has DKIM keys again since the removal: the archived ones stay in ${path.join(dir, 'dkim')}\n`);
  if (logsKept) out.write(`${logs} exists, so the archived logs stay in ${path.join(dir, 'logs')}\n`);
  return 0;
}
