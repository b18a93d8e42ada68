import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { parseDocument } from 'yaml';
import type { LoadedConfig } from '../../core/config/load.ts';
import { controlRequest } from '../../core/control.ts';
import { openState } from '../../state/index.ts';
import { archiveTenantState } from '../../state/tenantarchive.ts';
import { restoreOwnedRows, restoreTenantRows, type TenantRows } from '../../state/tenantdata.ts';
import { moveTree as move, ownedFolders, removeTenant, type ArchiveManifest as Manifest } from '../../core/tenantadmin.ts';
import { loadCurrent, tenantFile, validateEdit, writeTenant } from '../../core/tenantfile.ts';

type Out = NodeJS.WritableStream;

/** True when a server runs on this data folder (its control socket answers). */
async function serverRunning(dataDir: string): Promise<boolean> {
  try {
    return (await controlRequest(path.join(dataDir, 'mail.sock'), { cmd: 'ping' }, 3_000)).ok;
  } catch {
    // No socket, or nothing answers on it: no server uses this data folder.
    return false;
  }
}

/**
 * `makewaves tenant remove ID --yes`: core/tenantadmin.ts `removeTenant`
 * (the operator's panel calls it too), with the state part done on the
 * state file here: a running server's queue removes the tenant's queued
 * messages itself over the control socket (it holds their spool files and
 * may be delivering one); with none running, their rows go and the spool
 * file is left for the next start to clear, as for any finished message.
 */
export async function tenantRemove(configDir: string, id: string, opts: { yes: boolean }, out: Out = process.stdout): Promise<number> {
  const config = loadCurrent(configDir);
  if (!config.tenants.some((t) => t.id === id)) throw new Error(`no tenant "${id}" (makewaves tenant list shows them)`);
  if (!opts.yes) throw new Error(`removing tenant "${id}" takes its sites off line; run again with --yes (its file, web root and state are archived, not deleted)`);
  const done = await removeTenant(configDir, id, async (o) => {
    // The state file is read only if it exists: a removal must not create it.
    if (!existsSync(path.join(o.dataDir, 'makewaves.db'))) return [];
    const state = openState(o.dataDir);
    try {
      const socket = path.join(o.dataDir, 'mail.sock');
      let running: boolean | undefined;
      return await archiveTenantState(state, o, async (m) => {
        running ??= await serverRunning(o.dataDir);
        if (!running) {
          state.mailQueue.remove(m.id, m.file, true);
          return;
        }
        const res = await controlRequest(socket, { cmd: 'delete', id: m.id });
        // Gone already (delivered or bounced since the list was read): nothing left to remove.
        if (!res.ok && !/no message/.test(res.error)) throw new Error(`the running server did not remove queued message ${m.id}: ${res.error}`);
      });
    } finally {
      state.close();
    }
  });
  out.write(`removed tenant ${id}: file, web root, logs, handler scratch folder, DKIM keys, state and ${done.queued} queued message(s) archived in ${done.archive}\n`);
  out.write(`(makewaves tenant restore ${done.archive} brings it back)\n`);
  return 0;
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
