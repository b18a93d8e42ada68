import { chmodSync, chownSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseDocument, type Document } from 'yaml';
import { ConfigError, loadConfig, loadMainConfig, TENANT_DIR, type LoadedConfig } from '../core/config/load.ts';
import type { MainConfig } from '../core/config/schema.ts';
import { resolveServiceUser } from '../lib/users.ts';

/*
 * Editing a tenant's file the way every CLI verb does: read it as a yaml
 * Document (comments and layout survive), change it, check the result with
 * the real loader against every other file on disk, and write it whole
 * (temporary, then rename), so a running server's reload sees the old file
 * or the new one, never half of it, and never a file it would refuse.
 */

/** The path of a tenant's file (it need not exist). */
export function tenantFile(configDir: string, id: string): string {
  return path.join(configDir, TENANT_DIR, `${id}.yaml`);
}

/** Loads the config as it is now; a config that is already broken is refused, so an edit is never blamed for it. */
export function loadCurrent(configDir: string): LoadedConfig {
  try {
    return loadConfig(configDir);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    throw new Error(`the configuration already has ${err.problems.length} problem(s), first: ${err.problems[0]}; fix them first (makewaves check)`);
  }
}

/** Reads a tenant's file as a yaml Document (which keeps comments and layout when written back). */
export function readTenant(configDir: string, id: string): { file: string; doc: Document } {
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
export function validateEdit(configDir: string, id: string, text: string | null): void {
  try {
    loadConfig(configDir, new Map([[id, text]]));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    throw new Error(explain(id, err.problems));
  }
}

/** The loader's problems with the edited file, as one line about that tenant. */
function explain(id: string, problems: readonly string[]): string {
  const own = new RegExp(`^(?:\\S*/)?${id.replace(/\./g, '\\.')}\\.yaml: (.*)$`);
  const lines = problems.map((p) => {
    const mine = own.exec(p);
    // The edit is the file at fault here: naming the tenant that owns the domain is enough.
    if (mine) return mine[1]!.replace(/ \([^()]*\); only one of the two files may list it$/, '');
    // A clash is reported on the file that sorts later, which may be the other tenant's.
    const clash = /^(?:\S*\/)?([^/\s]+)\.yaml: domains\[\d+\]: "([^"]+)" is already claimed by tenant "([^"]+)"/.exec(p);
    if (clash && clash[3] === id) return `"${clash[2]}" is already claimed by tenant "${clash[1]}"`;
    return p;
  });
  return `tenant "${id}": ${lines.join('; ')}; nothing changed`;
}

/** The service account's uid/gid when this command runs as root and `user:` is configured (web roots are given to it). */
export function serviceOwner(main: MainConfig): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0 || !main.user) return undefined;
  return resolveServiceUser(main.user, main.group);
}

/** How every verb serialises a tenant file: no line wrapping, flow sequences as `[a, b]`. */
export function tenantText(doc: Document): string {
  return doc.toString({ lineWidth: 0, flowCollectionPadding: false });
}

/**
 * Reads tenant `id`'s file, lets `edit` change the Document (it throws one
 * line to refuse), and writes the result through {@link writeTenant}:
 * validated by the loader first, then atomically. A refusal at any step
 * leaves the file as it was. Returns what `edit` returned.
 */
export function editTenant<T>(configDir: string, id: string, edit: (doc: Document) => T): T {
  loadCurrent(configDir);
  const { doc } = readTenant(configDir, id);
  const result = edit(doc);
  writeTenant(configDir, id, tenantText(doc));
  return result;
}
