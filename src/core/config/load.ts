import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { parse, type YAMLParseError } from 'yaml';
import type { z } from 'zod';
import { MakewavesError } from '../errors.ts';
import { LIST_SUFFIXES } from '../listaddr.ts';
import { ParseCache, sharedParseCache } from './parsecache.ts';
import { mainSchema, tenantSchema, type MainConfig, type TenantConfig } from './schema.ts';

export const MAIN_FILE = 'makewaves.yaml';
export const TENANT_DIR = 'tenants';

export interface TenantEntry {
  /** The tenant id: the file name without `.yaml`. */
  readonly id: string;
  /** The file it came from (absolute). */
  readonly file: string;
  readonly config: TenantConfig;
}

export interface LoadedConfig {
  /** The config folder (absolute). */
  readonly dir: string;
  readonly main: MainConfig & { readonly dataDir: string; readonly sitesDir: string };
  readonly tenants: readonly TenantEntry[];
}

/** Thrown by {@link loadConfig}; `problems` holds one line per problem, each naming file and key. */
export class ConfigError extends MakewavesError {
  readonly problems: readonly string[];
  constructor(problems: string[]) {
    super('CONFIG_INVALID', `configuration is invalid:\n  ${problems.join('\n  ')}`);
    this.problems = problems;
  }
}

/** What a tenant id (its file name without `.yaml`) must look like. */
export const TENANT_ID = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$/;

function show(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith('..') ? rel : file;
}

/** Where a domain was claimed, for a clash's message (made only then: with 10,000 tenants, path.relative adds up). */
function where(at: { file: string; i: number }): string {
  return `${show(at.file)}: domains[${at.i}]`;
}

function keyPath(p: readonly PropertyKey[]): string {
  let out = '';
  for (const k of p) {
    if (typeof k === 'number') out += `[${k}]`;
    else out += out ? `.${String(k)}` : String(k);
  }
  return out;
}

/**
 * The path of the first key `__proto__` in a parsed file: YAML may hold one,
 * but a validated object cannot keep it, so the setting (a forward, say)
 * would be dropped without a word.
 */
function protoKey(value: unknown, at: PropertyKey[] = []): string | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  const entries: Array<[PropertyKey, unknown]> = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  for (const [k, v] of entries) {
    if (k === '__proto__') return keyPath([...at, k]);
    const deeper = protoKey(v, [...at, k]);
    if (deeper) return deeper;
  }
  return undefined;
}

function parseYaml(file: string, problems: string[], override?: string, cache?: ParseCache): unknown {
  // Known by its stat (not read at all), or the stat to record with what its text gives.
  const known = override === undefined ? cache?.unchanged(file) : undefined;
  if (known && 'value' in known) return known.value;
  let text: string;
  try {
    text = override ?? readFileSync(file, 'utf8');
  } catch (err) {
    problems.push(`${show(file)}: cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    return undefined;
  }
  const id = cache && ParseCache.identity(text);
  const hit = id === undefined ? undefined : cache!.get(file, id);
  if (hit) {
    if (known) cache!.seen(file, known);
    return hit.value;
  }
  try {
    // parse() stops at the first error; one precise problem per broken file is enough.
    const value: unknown = parse(text, { prettyErrors: true, uniqueKeys: true, logLevel: 'error' }) ?? {};
    const proto = protoKey(value);
    if (proto) {
      problems.push(`${show(file)}: ${proto}: "__proto__" cannot be a key`);
      return undefined;
    }
    if (id !== undefined) cache!.set(file, id, value, known);
    return value;
  } catch (err) {
    const e = err as YAMLParseError;
    const first = e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    const where = e.linePos?.[0] ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : 'YAML';
    problems.push(`${show(file)}: ${where}: ${first}`);
    return undefined;
  }
}

function validate<S extends z.ZodType>(schema: S, value: unknown, file: string, problems: string[]): z.output<S> | undefined {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  for (const issue of result.error.issues) {
    const key = keyPath(issue.path);
    if (issue.code === 'unrecognized_keys') {
      for (const k of issue.keys) problems.push(`${show(file)}: ${key ? `${key}.` : ''}${k}: unknown key (a typo?)`);
      continue;
    }
    // A record's refused key: zod says "Invalid key in record" and keeps the key's own reason inside.
    const message = issue.code === 'invalid_key' ? issue.issues.map((i) => i.message).join('; ') : issue.message;
    problems.push(`${show(file)}: ${key ? `${key}: ` : ''}${message}`);
  }
  return undefined;
}

/**
 * Reads, parses, validates and cross-checks `<dir>/makewaves.yaml` and
 * `<dir>/tenants/*.yaml`. Has no side effects. Returns a deeply frozen
 * config, or throws {@link ConfigError} listing every problem found.
 *
 * `tenantOverrides` (tenant id → YAML text, or null for a removed tenant)
 * stands in for files on disk: the CLI validates an edit with this same
 * loader before it renames the new file in.
 *
 * `cache` keeps tenant files' parsed YAML by their text, so an unchanged
 * file is not parsed again (the process's own, {@link sharedParseCache},
 * unless another is given); it is told which files are still there.
 */
export function loadConfig(dir: string, tenantOverrides: ReadonlyMap<string, string | null> = new Map(), cache: ParseCache = sharedParseCache()): LoadedConfig {
  const root = path.resolve(dir);
  const problems: string[] = [];
  const mainFile = path.join(root, MAIN_FILE);
  const rawMain = parseYaml(mainFile, problems);
  const main = rawMain === undefined ? undefined : validate(mainSchema, rawMain, mainFile, problems);
  if (main?.sftp && !main.ftp) problems.push(`${show(mainFile)}: sftp: needs ftp: too (SFTP logs in the tenants' FTP accounts under FTP's lockout rules)`);
  if (main?.panel && main.panel.host === main.http.userdir) problems.push(`${show(mainFile)}: panel.host: "${main.panel.host}" is also http.userdir; give the panel a name of its own`);
  const postmaster = main?.mail?.postmaster;
  const ownName = postmaster && [main.hostname, main.smtp?.srsDomain].find((n) => n !== undefined && postmaster.endsWith(`@${n}`));
  if (ownName) {
    problems.push(`${show(mainFile)}: mail.postmaster: "${postmaster}" is at this server's own name ${ownName}, which takes only postmaster@ and abuse@ (and sends them to mail.postmaster): give a mailbox elsewhere`);
  }
  if (main?.acme && !main.http.tls) problems.push(`${show(mainFile)}: acme: needs http.tls (its certificates go into that store and are served on its listener)`);

  const tenants: TenantEntry[] = [];
  const tenantDir = path.join(root, TENANT_DIR);
  let names: string[] = [];
  try {
    names = readdirSync(tenantDir).filter((n) => n.endsWith('.yaml') || n.endsWith('.yml'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      problems.push(`${show(tenantDir)}: cannot be read (${(err as NodeJS.ErrnoException).code})`);
    }
  }
  for (const [id, text] of tenantOverrides) {
    const name = `${id}.yaml`;
    if (text === null) names = names.filter((n) => n !== name);
    else if (!names.includes(name)) names.push(name);
  }
  names.sort();
  // Domain → the tenant that claimed it first, with its file and key, so a clash names both files.
  const domainOwner = new Map<string, string>();
  const domainWhere = new Map<string, { file: string; i: number }>();
  const ids = new Set<string>();
  for (const name of names) {
    const file = path.join(tenantDir, name);
    const id = name.replace(/\.ya?ml$/, '');
    if (!TENANT_ID.test(id)) {
      problems.push(`${show(file)}: the file name must be a tenant id: lower-case letters, digits, "-" and "." between labels`);
      continue;
    }
    if (ids.has(id)) {
      problems.push(`${show(file)}: tenant "${id}" is defined twice (.yaml and .yml)`);
      continue;
    }
    ids.add(id);
    const raw = parseYaml(file, problems, name.endsWith('.yaml') ? (tenantOverrides.get(id) ?? undefined) : undefined, cache);
    if (raw === undefined) continue;
    const config = validate(tenantSchema, raw, file, problems);
    // Even when other keys are wrong, valid domains still take part in the
    // cross-check, so one run of `check` reports every clash.
    const domains = config?.domains ?? tenantSchema.shape.domains.safeParse((raw as { domains?: unknown })?.domains).data ?? [];
    domains.forEach((d, i) => {
      const owner = domainOwner.get(d);
      if (owner !== undefined && owner !== id) {
        // Files load alphabetically: the one blamed here may be the good one, so both are named.
        problems.push(`${show(file)}: domains[${i}]: "${d}" is already claimed by tenant "${owner}" (${where(domainWhere.get(d)!)}); only one of the two files may list it`);
      } else if (owner === id) {
        problems.push(`${show(file)}: domains[${i}]: "${d}" is listed twice`);
      } else {
        domainOwner.set(d, id);
        domainWhere.set(d, { file, i });
      }
    });
    if (!config) continue;
    const users = new Set<string>();
    config.ftp.forEach((u, i) => {
      if (users.has(u.user)) problems.push(`${show(file)}: ftp[${i}].user: "${u.user}" is listed twice`);
      users.add(u.user);
    });
    // A list owns its name and every role address (news-request, news-owner...): a forward or another list with one of those names would shadow it.
    const taken = new Map<string, string>();
    for (const name of Object.keys(config.mail?.lists ?? {})) {
      for (const [suffix] of LIST_SUFFIXES) {
        const local = `${name}${suffix}`;
        const other = taken.get(local);
        if (other !== undefined) problems.push(`${show(file)}: mail.lists.${name}: its address "${local}" is also an address of list "${other}"`);
        taken.set(local, name);
      }
    }
    for (const local of Object.keys(config.mail?.forward ?? {})) {
      const list = taken.get(local.toLowerCase());
      if (list !== undefined) problems.push(`${show(file)}: mail.forward.${local}: "${local}" is an address of the mailing list "${list}"`);
    }
    if (main?.panel && domainOwner.get(main.panel.host) === id) {
      problems.push(`${show(file)}: domains: "${main.panel.host}" is the control panel's host (panel.host in ${MAIN_FILE})`);
    }
    if (main?.http.userdir && domainOwner.get(main.http.userdir) === id) {
      problems.push(`${show(file)}: domains: "${main.http.userdir}" is the userdir host (http.userdir in ${MAIN_FILE})`);
    }
    tenants.push({ id, file, config });
  }

  if (main?.dns && main.smtp?.dns) {
    problems.push(`${show(mainFile)}: smtp.dns: is the old name of dns: (set in the same file); keep only dns:`);
  }
  cache?.keepOnly(new Set(names.map((n) => path.join(tenantDir, n))));
  if (problems.length > 0 || !main) throw new ConfigError(problems);
  const loaded: LoadedConfig = {
    dir: root,
    // smtp.dns, the old name of the resolver setting, still works: it becomes dns.
    main: { ...main, dns: main.dns ?? main.smtp?.dns, dataDir: path.resolve(root, main.data), sitesDir: path.resolve(root, main.sites) },
    tenants,
  };
  return deepFreeze(loaded);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * Reads only `<dir>/makewaves.yaml` (for commands that talk to a running
 * server and need its addresses, even while a tenant file is broken).
 */
export function loadMainConfig(dir: string): MainConfig {
  const problems: string[] = [];
  const file = path.join(path.resolve(dir), MAIN_FILE);
  const raw = parseYaml(file, problems);
  const main = raw === undefined ? undefined : validate(mainSchema, raw, file, problems);
  if (!main) throw new ConfigError(problems);
  return main;
}

/** True when `dir` looks like a config folder (has makewaves.yaml). */
export function isConfigDir(dir: string): boolean {
  try {
    return statSync(path.join(dir, MAIN_FILE)).isFile();
  } catch {
    // No makewaves.yaml there: not a config folder, which is the answer asked for.
    return false;
  }
}
