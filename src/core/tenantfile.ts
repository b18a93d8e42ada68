import { chmodSync, chownSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { isMap, isScalar, isSeq, parseDocument, type Document } from 'yaml';
import { ConfigError, loadConfig, loadMainConfig, TENANT_DIR, type LoadedConfig } from './config/load.ts';
import type { MainConfig } from './config/schema.ts';
import { Registry, type Tenant } from './registry.ts';
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

/** A refused edit, with the form field it is about (for the panel; the CLI prints the message alone). */
export class EditRefused extends Error {
  constructor(
    message: string,
    readonly field?: string,
    /** For `foreign`: the tenant the address belongs to. */
    readonly owner?: string,
  ) {
    super(message);
  }
}

/** Finds the tenant hosting `local@domain`; throws a clear line if there is none. */
export function forwardOwner(config: LoadedConfig, address: string): { tenant: Tenant; local: string; domain: string } {
  const m = /^([^@\s]+)@([^@\s]+)$/.exec(address);
  if (!m) throw new EditRefused(`"${address}" is not an address of the form local@domain`, 'address');
  const local = m[1]!.toLowerCase();
  const domain = m[2]!.toLowerCase();
  // The same characters an address local part may carry unquoted (RFC 5321 §4.1.2 Dot-string), without "+" tags.
  if (!/^[a-z0-9!#$%&'*/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*/=?^_`{|}~-]+)*$/.test(local)) throw new EditRefused(`"${m[1]}" is not a plain local part`, 'address');
  const tenant = new Registry(config).tenantForHost(domain);
  if (!tenant) throw new EditRefused(`no tenant has the domain "${domain}"`, 'address');
  return { tenant, local, domain };
}

/** Which field a loader refusal of a forward edit is about: a bad target, or the address itself. */
function forwardField(message: string): string {
  return /is not an e-mail address/.test(message) ? 'targets' : 'address';
}

/** Runs {@link writeTenant}, turning its refusal into an {@link EditRefused} about `field(message)`. */
function writeOrRefuse(configDir: string, id: string, text: string, field: (message: string) => string): void {
  try {
    writeTenant(configDir, id, text);
  } catch (err) {
    if (err instanceof EditRefused || !(err instanceof Error) || (err as NodeJS.ErrnoException).code !== undefined) throw err;
    throw new EditRefused(err.message, field(err.message));
  }
}

/**
 * Adds `targets` to the forward of `address` (`local@domain`) in its
 * tenant's file (`mail.forward.<local>`), keeping the file's comments, through
 * the loader's validation. With `tenantId`, the address must be one of that
 * tenant's (else {@link EditRefused} about `address`, field `foreign`).
 * Returns the tenant, the local part and the forward's targets now.
 */
export function addForward(
  configDir: string,
  address: string,
  targets: readonly string[],
  tenantId?: string,
  /** The panel's `panel.limits` (a customer's own changes); the operator's CLI passes none. */
  limits?: { forwardTargets: number; forwards: number },
): { tenant: Tenant; local: string; targets: string[] } {
  if (targets.length === 0) throw new EditRefused('give at least one target address', 'targets');
  const config = loadCurrent(configDir);
  const { tenant, local } = forwardOwner(config, address);
  if (tenantId !== undefined && tenant.id !== tenantId) throw new EditRefused(`"${address}" is not an address of tenant ${tenantId}`, 'foreign', tenant.id);
  const { doc } = readTenant(configDir, tenant.id);
  const existing = doc.getIn(['mail', 'forward', local]);
  const before: string[] = existing === undefined ? [] : typeof existing === 'string' ? [existing] : (doc.getIn(['mail', 'forward', local], false) as { toJSON(): string[] }).toJSON();
  const merged = [...before];
  for (const t of targets.map((x) => x.toLowerCase())) if (!merged.includes(t)) merged.push(t);
  if (merged.length === before.length) throw new EditRefused(`${local}@${tenant.domains[0]} already forwards to ${targets.join(', ')}`, 'targets');
  if (limits && merged.length > limits.forwardTargets) {
    throw new EditRefused(`tenant "${tenant.id}": mail.forward.${local}: ${merged.length} targets, more than the ${limits.forwardTargets} a forward may have (panel.limits.forwardTargets); nothing changed`, 'targets');
  }
  const count = Object.keys(tenant.config.mail?.forward ?? {}).length + (existing === undefined ? 1 : 0);
  if (limits && existing === undefined && count > limits.forwards) {
    throw new EditRefused(`tenant "${tenant.id}": mail.forward: ${count} forwards, more than the ${limits.forwards} allowed (panel.limits.forwards); nothing changed`, 'address');
  }
  const node = doc.createNode(merged);
  node.flow = true;
  if (!isMap(doc.get('mail'))) doc.set('mail', doc.createNode({ forward: {} }));
  if (!isMap(doc.getIn(['mail', 'forward']))) doc.setIn(['mail', 'forward'], doc.createNode({}));
  doc.setIn(['mail', 'forward', local], node);
  writeOrRefuse(configDir, tenant.id, tenantText(doc), forwardField);
  return { tenant, local, targets: merged };
}

/** Removes the forward of `address` from its tenant's file; with `tenantId`, only one of that tenant's (as {@link addForward}). */
export function removeForward(configDir: string, address: string, tenantId?: string): { tenant: Tenant; local: string } {
  const config = loadCurrent(configDir);
  const { tenant, local } = forwardOwner(config, address);
  if (tenantId !== undefined && tenant.id !== tenantId) throw new EditRefused(`"${address}" is not an address of tenant ${tenantId}`, 'foreign', tenant.id);
  const { doc } = readTenant(configDir, tenant.id);
  if (!doc.hasIn(['mail', 'forward', local])) throw new EditRefused(`tenant ${tenant.id} has no alias ${local}`, 'address');
  doc.deleteIn(['mail', 'forward', local]);
  writeOrRefuse(configDir, tenant.id, tenantText(doc), forwardField);
  return { tenant, local };
}

/**
 * Sets tenant `id`'s catch-all (`mail.catchAll`: where mail for every other
 * address of its domains goes) to `target`, or removes it with undefined,
 * through the loader's validation, comments kept.
 */
export function setCatchAll(configDir: string, id: string, target: string | undefined): void {
  const domain = loadCurrent(configDir).tenants.find((t) => t.id === id)?.config.domains[0] ?? id;
  const { doc } = readTenant(configDir, id);
  if (target === undefined) {
    if (!doc.hasIn(['mail', 'catchAll'])) throw new EditRefused(`${domain} has no catch-all`, 'catchAll');
    doc.deleteIn(['mail', 'catchAll']);
  } else {
    if (!isMap(doc.get('mail'))) doc.set('mail', doc.createNode({}));
    doc.setIn(['mail', 'catchAll'], target.trim().toLowerCase());
  }
  writeOrRefuse(configDir, id, tenantText(doc), () => 'catchAll');
}

/**
 * Changes tenant `id`'s `forms.recipients` (the only addresses its form
 * handlers may mail): `set` replaces them, `add` and `remove` change them
 * (adding one already there, removing one not there: refused). Addresses
 * are compared and written in lower case; the loader checks them, comments
 * stay. A refusal is an {@link EditRefused} about `recipients`. Returns the
 * recipients now.
 */
export function editFormsRecipients(
  configDir: string,
  id: string,
  verb: 'set' | 'add' | 'remove',
  addresses: readonly string[],
  /** The panel's `panel.limits` (a customer's own changes); the operator's CLI passes none. */
  limits?: { formsRecipients: number },
): string[] {
  if (addresses.length === 0) throw new EditRefused('give at least one address', 'recipients');
  const config = loadCurrent(configDir);
  if (!config.tenants.some((t) => t.id === id)) throw new EditRefused(`no tenant "${id}" (makewaves tenant list shows them)`, 'tenant');
  const given = addresses.map((a) => a.trim().toLowerCase());
  const { doc } = readTenant(configDir, id);
  const node = doc.getIn(['forms', 'recipients'], true);
  const before: string[] = isSeq(node) ? (node.toJSON() as string[]) : [];
  let next: string[];
  if (verb === 'set') next = [...new Set(given)];
  else if (verb === 'add') {
    const dup = given.find((a) => before.includes(a));
    if (dup) throw new EditRefused(`${dup} is already a forms recipient of ${id}`, 'recipients');
    next = [...before, ...new Set(given)];
    if (limits && next.length > limits.formsRecipients) {
      throw new EditRefused(`tenant "${id}": forms.recipients: ${next.length} addresses, more than the ${limits.formsRecipients} allowed (panel.limits.formsRecipients); nothing changed`, 'recipients');
    }
  } else {
    const missing = given.find((a) => !before.includes(a));
    if (missing) throw new EditRefused(`${missing} is not a forms recipient of ${id}`, 'recipients');
    next = before.filter((a) => !given.includes(a));
  }
  const seq = doc.createNode(next);
  seq.flow = true;
  if (!isMap(doc.get('forms'))) doc.set('forms', doc.createNode({}));
  // The sequence's own comment (after it on its line) stays with the key.
  if (isSeq(node)) seq.comment = node.comment;
  doc.setIn(['forms', 'recipients'], seq);
  writeOrRefuse(configDir, id, tenantText(doc), () => 'recipients');
  return next;
}

/**
 * Sets the owner and/or the posting policy of tenant `id`'s list `list`
 * (`mail.lists.<list>`), comments kept, through the loader's validation: a
 * value it refuses is an {@link EditRefused} about `owner` or `posting`.
 * Returns both as they are now.
 */
export function setListPolicy(configDir: string, id: string, list: string, o: { owner?: string; posting?: string }): { owner: string; posting: string } {
  const { doc } = readTenant(configDir, id);
  if (!doc.hasIn(['mail', 'lists', list])) throw new EditRefused(`tenant ${id} has no mailing list ${list}`, 'list');
  if (o.owner !== undefined) doc.setIn(['mail', 'lists', list, 'owner'], o.owner.trim().toLowerCase());
  if (o.posting !== undefined) doc.setIn(['mail', 'lists', list, 'posting'], o.posting);
  writeOrRefuse(configDir, id, tenantText(doc), (m) => (m.includes('.owner') ? 'owner' : 'posting'));
  return { owner: String(doc.getIn(['mail', 'lists', list, 'owner'])), posting: String(doc.getIn(['mail', 'lists', list, 'posting']) ?? 'members') };
}

/**
 * Sets (or adds) FTP user `user`'s password hash in tenant `id`'s file.
 * The edit is spliced into the original text at the offsets the parser
 * reports, so every other byte (comments, alignment, flow lists) stays as it
 * was; the result goes through {@link writeTenant} (the loader's validation,
 * then an atomic rename). Returns whether the user was added and the file.
 */
export function setFtpPassword(configDir: string, id: string, user: string, hash: string): { added: boolean; file: string } {
  const { file, doc } = readTenant(configDir, id);
  const text = readFileSync(file, 'utf8');
  const quoted = JSON.stringify(hash); // the hash is [A-Za-z0-9$=,_-]: a plain double-quoted scalar
  let out: string | undefined;
  let added = false;
  const ftp = doc.get('ftp', true);
  if (ftp !== undefined && ftp !== null && !isSeq(ftp)) throw new EditRefused(`${file}: ftp must be a list of users`);
  const entry = isSeq(ftp) ? ftp.items.find((item) => isMap(item) && String(item.get('user')) === user) : undefined;
  if (entry && isMap(entry)) {
    const node = entry.get('password', true);
    if (isScalar(node) && node.range) out = text.slice(0, node.range[0]) + quoted + text.slice(node.range[1]);
  } else {
    added = true;
    const first = isSeq(ftp) && !ftp.flow ? ftp.items[0] : undefined;
    if (isSeq(ftp) && isMap(first) && first.range && ftp.range) {
      // A block list: a new item in the same column as the first, after the last.
      const lineStart = text.lastIndexOf('\n', first.range[0] - 1) + 1;
      const col = first.range[0] - lineStart;
      const pad = ' '.repeat(col);
      const dash = ' '.repeat(Math.max(0, col - 2));
      const at = ftp.range[1];
      const before = text.slice(0, at);
      out = `${before}${before.endsWith('\n') ? '' : '\n'}${dash}- user: ${user}\n${pad}password: ${quoted}\n${text.slice(at).replace(/^\n/, '')}`;
    }
  }
  if (out === undefined && (ftp === undefined || ftp === null) && !doc.has('ftp')) {
    out = `${text}${text.endsWith('\n') || text === '' ? '' : '\n'}ftp:\n  - user: ${user}\n    password: ${quoted}\n`;
  }
  if (out === undefined) {
    // No list to extend in place (none yet, or a flow list): let yaml write the file, keeping comments.
    if (entry && isMap(entry)) entry.set('password', hash);
    else if (isSeq(ftp)) ftp.add(doc.createNode({ user, password: hash }));
    else doc.set('ftp', doc.createNode([{ user, password: hash }]));
    out = tenantText(doc);
  }
  const written = parseDocument(out).toJS() as { ftp?: Array<{ user?: unknown; password?: unknown }> } | null;
  if (written?.ftp?.find((u) => u.user === user)?.password !== hash) throw new Error(`${file}: the edit did not take; nothing changed`);
  writeOrRefuse(configDir, id, out, () => 'password');
  return { added, file };
}

/** Refuses a new password the CLI and the panel would both refuse (an empty one), in the same words. */
export function checkNewPassword(password: string): void {
  if (password === '') throw new EditRefused('empty password; nothing changed', 'password');
}

/**
 * Adds `domain` to tenant `id`'s `domains:` or removes it, comments kept,
 * through the loader's validation (a domain another tenant has, or the
 * last one, is refused there or here). Returns the domains now.
 */
export function editDomains(configDir: string, id: string, verb: 'add' | 'remove', domain: string): string[] {
  loadCurrent(configDir);
  const d = domain.trim().toLowerCase().replace(/\.$/, '');
  const { file, doc } = readTenant(configDir, id);
  const seq = doc.get('domains', true);
  if (!isSeq(seq)) throw new EditRefused(`${file}: domains must be a list`, 'domains');
  const at = seq.items.findIndex((item) => String(isScalar(item) ? item.value : item).toLowerCase() === d);
  if (verb === 'add') {
    if (at >= 0) throw new EditRefused(`tenant ${id} has the domain ${d} already`, 'domains');
    seq.add(doc.createNode(d));
  } else {
    if (at < 0) throw new EditRefused(`tenant ${id} has no domain ${d}`, 'domains');
    if (seq.items.length === 1) throw new EditRefused(`${d} is the only domain of tenant ${id}; a tenant needs at least one (makewaves tenant remove ${id} --yes removes the tenant)`, 'domains');
    seq.items.splice(at, 1);
  }
  writeOrRefuse(configDir, id, tenantText(doc), () => 'domains');
  return seq.items.map((item) => String(isScalar(item) ? item.value : item));
}

/** Sets tenant `id`'s disk quota (`quota:`, a size such as `50MiB`), or removes it with undefined; comments kept, validated. */
export function setQuota(configDir: string, id: string, quota: string | undefined): void {
  loadCurrent(configDir);
  const { doc } = readTenant(configDir, id);
  if (quota === undefined) {
    if (!doc.has('quota')) throw new EditRefused(`tenant ${id} has no quota`, 'quota');
    doc.delete('quota');
  } else {
    const q = quota.trim();
    doc.set('quota', /^\d+$/.test(q) ? Number(q) : q);
  }
  writeOrRefuse(configDir, id, tenantText(doc), () => 'quota');
}

/** The `ftp:` entry of `user` in a tenant file's Document; throws a clear line when there is none. */
function ftpEntry(doc: Document, id: string, user: string): { seq: ReturnType<typeof asSeq>; index: number } {
  const seq = asSeq(doc.get('ftp', true));
  const index = seq ? seq.items.findIndex((item) => isMap(item) && String(item.get('user')) === user) : -1;
  if (!seq || index < 0) throw new EditRefused(`tenant ${id} has no FTP user ${user}`, 'user');
  return { seq, index };
}

function asSeq(node: unknown) {
  return isSeq(node) ? node : undefined;
}

/** Removes FTP user `user` (its password and SFTP keys) from tenant `id`'s file, comments kept, validated. */
export function removeFtpUser(configDir: string, id: string, user: string): void {
  loadCurrent(configDir);
  const { doc } = readTenant(configDir, id);
  const { seq, index } = ftpEntry(doc, id, user);
  seq!.items.splice(index, 1);
  if (seq!.items.length === 0) doc.delete('ftp');
  writeOrRefuse(configDir, id, tenantText(doc), () => 'user');
}

/** The base64 blob of an authorized_keys line (what identifies the key). */
const keyBlob = (line: string) => line.trim().split(/\s+/)[1] ?? line.trim();

/**
 * Adds an SFTP public key (an authorized_keys line) to FTP user `user` of
 * tenant `id` (`keys:` of its `ftp:` entry), or removes one: given as the
 * whole line, its base64 part, or its comment. Comments kept, validated by
 * the loader (a line that is not a key is refused there). Returns the
 * user's keys now.
 */
export function editFtpKey(configDir: string, id: string, user: string, verb: 'add' | 'remove', key: string): string[] {
  loadCurrent(configDir);
  const { doc } = readTenant(configDir, id);
  const { seq, index } = ftpEntry(doc, id, user);
  const entry = seq!.items[index] as import('yaml').YAMLMap;
  const keys = asSeq(entry.get('keys', true));
  const lines = () => (keys ? keys.items.map((k) => String(isScalar(k) ? k.value : k)) : []);
  const given = key.trim().replace(/\s+/g, ' ');
  if (verb === 'add') {
    if (lines().some((l) => keyBlob(l) === keyBlob(given))) throw new EditRefused(`${user}@${id} has this key already`, 'keys');
    if (keys) keys.add(doc.createNode(given));
    else entry.set('keys', doc.createNode([given]));
  } else {
    const at = lines().findIndex((l) => l === given || keyBlob(l) === given || keyBlob(l) === keyBlob(given) || l.split(' ').slice(2).join(' ') === given);
    if (!keys || at < 0) throw new EditRefused(`${user}@${id} has no key "${given}"; its keys: ${lines().map((l) => l.split(' ').slice(2).join(' ') || `${keyBlob(l).slice(0, 16)}...`).join(', ') || 'none'}`, 'keys');
    keys.items.splice(at, 1);
    if (keys.items.length === 0) entry.delete('keys');
  }
  writeOrRefuse(configDir, id, tenantText(doc), () => 'keys');
  const now = asSeq((seq!.items[index] as import('yaml').YAMLMap).get('keys', true));
  return now ? now.items.map((k) => String(isScalar(k) ? k.value : k)) : [];
}
