import { closeSync, existsSync, fchmodSync, fchownSync, fstatSync, mkdirSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, loadConfig, loadMainConfig } from '../core/config/load.ts';
import { ParseCache } from '../core/config/parsecache.ts';
import type { Logger } from '../core/log.ts';
import { Registry, type Tenant } from '../core/registry.ts';
import { resolveInJail } from '../lib/jail.ts';
import { openFolderNoLink } from '../lib/modes.ts';
import { readOwnFile, writeOwnFile } from '../lib/ownfile.ts';
import { findDelegatedCgroup, TenantCgroups, type CgroupFinding } from '../lib/cgroup.ts';
import { lookupUser } from '../lib/users.ts';
import { openDb } from '../state/db.ts';
import { CgiUids, cgiUidMigrations, type UidRange } from '../state/cgiuids.ts';
import { boxOptionsOf, type BoxPoolOptions } from './boxes.ts';
import { findScriptSync } from './classic.ts';
import { GrantCache } from './grants.ts';
import { compileBoxInit, type BoxInit, type RunRequest } from './forkbox.ts';
import { nativeDir } from '../lib/paths.ts';
import { detectSandbox, forkBoxSpec, scriptSpec, spawnSpec, tenantCgroupLimits, type SandboxCapabilities, type SpawnSpec } from './sandbox.ts';

/**
 * The launcher: the one part of the suite that stays root after the
 * server drops to `user:` (as suEXEC, or Postfix's master). The server
 * asks it, one JSON text per request, to "run handler X of tenant T"; it
 * checks T and X against its own view of the config (loaded by itself from
 * the config folder it was started with), builds the box with T's own
 * uid, and hands the process's stdin, stdout and stderr back. Nothing in a
 * request names a uid, a path or a command line: a request carrying any
 * field beyond these is refused, as is every other kind of request.
 *
 *   {"op":"run","id":7,"tenant":"a","kind":"script","name":"hello.pl","env":{"QUERY_STRING":"x=1",…}}
 *   {"op":"kill","id":7}        ends run 7 (SIGKILL), one this launcher started
 *   {"op":"scratch","id":8,"tenant":"a"}  sets a's scratch folder back to 0700 and a's uid (before each warm run)
 *   {"op":"reload"}             reads the config folder again (new tenants get their uid); answered
 *                               {"op":"reloaded"}, or {"op":"reloaded","why":…} when it keeps the config it had
 */
export const MAX_REQUEST = 64 * 1024;

/** A run the launcher accepted: what to spawn, with which environment (inside the box only). */
export interface Accepted {
  id: number;
  tenant: string;
  uid: number;
  spec: SpawnSpec;
  /** A script run in the tenant's persistent box (forkbox.ts): what the box is made of (its key), its command line, the run itself. */
  fork?: { key: string; box: () => SpawnSpec; run: RunRequest };
}

export type Request =
  | { op: 'run'; id: number; tenant: string; kind: 'suite' | 'own' | 'script'; name: string; env: Record<string, string> }
  | { op: 'kill'; id: number }
  | { op: 'scratch'; id: number; tenant: string }
  | { op: 'reload' };

export type Parsed = { ok: true; req: Request } | { ok: false; why: string; id?: number };

const TENANT = /^[a-z0-9][a-z0-9._-]{0,62}$/i;
const HANDLER = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const SCRIPT = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** The meta-variables a script gets (RFC 3875 §4.1, and Apache's REQUEST_SCHEME/HTTPS): nothing else passes. */
const META = /^(?:HTTP_[A-Z0-9_]{1,256}|GATEWAY_INTERFACE|SERVER_NAME|SERVER_PORT|SERVER_PROTOCOL|REQUEST_METHOD|QUERY_STRING|CONTENT_TYPE|CONTENT_LENGTH|REMOTE_ADDR|REMOTE_PORT|SCRIPT_NAME|PATH_INFO|REQUEST_SCHEME|HTTPS|REQUEST_URI)$/;

function isId(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0;
}

/** Reads one request: a JSON text of at most MAX_REQUEST characters, in one of the three shapes, with no other field. */
export function parseRequest(raw: unknown): Parsed {
  if (typeof raw !== 'string') return { ok: false, why: 'a request is a JSON text' };
  if (raw.length > MAX_REQUEST) return { ok: false, why: `request over ${MAX_REQUEST} characters` };
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    return { ok: false, why: 'malformed JSON' };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false, why: 'a request is a JSON object' };
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).sort().join(',');
  const id = isId(o.id) ? o.id : undefined;
  const refuse = (why: string): Parsed => ({ ok: false, why, ...(id !== undefined ? { id } : {}) });
  switch (o.op) {
    case 'reload':
      return keys === 'op' ? { ok: true, req: { op: 'reload' } } : refuse('reload takes no fields');
    case 'kill':
      return keys === 'id,op' && id !== undefined ? { ok: true, req: { op: 'kill', id } } : refuse('kill takes only an id');
    case 'scratch':
      return keys === 'id,op,tenant' && id !== undefined && typeof o.tenant === 'string' && TENANT.test(o.tenant)
        ? { ok: true, req: { op: 'scratch', id, tenant: o.tenant } }
        : refuse('scratch takes only an id and a tenant');
    case 'run': {
      if (keys !== 'env,id,kind,name,op,tenant') return refuse(`run takes exactly op, id, tenant, kind, name, env (got ${keys.slice(0, 200)})`);
      if (id === undefined) return refuse('id must be a positive integer');
      if (typeof o.tenant !== 'string' || !TENANT.test(o.tenant)) return refuse('tenant is not a tenant name');
      if (o.kind !== 'suite' && o.kind !== 'own' && o.kind !== 'script') return refuse('kind must be suite, own or script');
      const nameOk = typeof o.name === 'string' && (o.kind === 'script' ? SCRIPT.test(o.name) && !o.name.endsWith('.js') : HANDLER.test(o.name));
      if (!nameOk) return refuse(`name is not a ${o.kind === 'script' ? 'script file' : 'handler'} name`);
      if (typeof o.env !== 'object' || o.env === null || Array.isArray(o.env)) return refuse('env must be an object');
      const env: Record<string, string> = {};
      for (const [k, val] of Object.entries(o.env as Record<string, unknown>)) {
        if (!META.test(k)) return refuse(`env ${k.slice(0, 64)} is not a CGI meta-variable`);
        if (typeof val !== 'string' || val.includes('\0')) return refuse(`env ${k} must be a string without NUL`);
        env[k] = val;
      }
      if (o.kind !== 'script' && Object.keys(env).length > 0) return refuse('only scripts take env');
      return { ok: true, req: { op: 'run', id, tenant: o.tenant as string, kind: o.kind, name: o.name as string, env } };
    }
    default:
      return refuse('op must be run, kill, scratch or reload');
  }
}

/**
 * The launcher's own cache of parsed tenant files (as the server's
 * `<data>/config-cache.json`, keyed by each file's text), in `<data>/cgi`:
 * root's folder, 0711, which the server's user cannot write. Read only if
 * root alone can have written it (lib/ownfile.ts): a cache the server's
 * user could forge would decide which domains, handlers and limits the
 * launcher grants a tenant.
 */
export const LAUNCHER_CACHE_FILE = '.config-cache.json';

/**
 * Opens the folder `at` names (made by `make` when missing), never through a link there: a link, or anything not a
 * folder, is refused with `refusal`.
 */
function openFolder(at: string, make: () => void, refusal: string): number {
  try {
    return openFolderNoLink(at, refusal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  try {
    make();
  } catch (err) {
    // Made meanwhile (a run of the same tenant): opened as it is, below.
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return openFolderNoLink(at, refusal);
}

export function parseUidRange(s: string): UidRange {
  const [first, last] = s.split('-').map(Number) as [number, number];
  return { first, last };
}

export interface LauncherOptions {
  configDir: string;
  suiteDir: string;
  log: Logger;
  /** Told when a tenant's scratch folder had to be set back to 0700 (a handler opened it up). */
  onRepair?: (tenant: string, dir: string, was: string) => void;
  /** What the box can use (tests: the real detectSandbox). */
  sandbox?: (user: string) => SandboxCapabilities;
  /** The delegated cgroup v2 (tests; default: found from /proc/self/cgroup). */
  cgroup?: CgroupFinding;
  /** box-init (tests; default: built by compileBoxInit into nativeDir()). */
  boxInit?: BoxInit;
}

/**
 * The launcher's checks and its view of the world: the config it loaded,
 * each tenant's uid (from state, given here), the suite's handler names.
 */
export class Launcher {
  private registry!: Registry;
  private uids = new Map<string, number>();
  private suiteNames = new Set<string>();
  private suiteReal = '';
  private caps!: SandboxCapabilities;
  private allowedOwners = new Set<number>([0]);
  private readonly grants: GrantCache;
  /** The delegated cgroup v2 tenants' runs go below, or why there is none (rlimits only). */
  readonly cgroup: CgroupFinding;
  private readonly tenantCgroups = new TenantCgroups(() => this.cgroup);
  /** box-init, for persistent script boxes; or why scripts get one fresh box per run. */
  readonly boxInit: BoxInit;
  /** Parsed tenant files, kept by their text (see LAUNCHER_CACHE_FILE); the file is read at the first load. */
  private readonly parseCache = new ParseCache();
  private cacheFile: string | undefined;
  /** The user the cache's file and folder must belong to: this process's (root, in launcher-main). */
  private readonly owner = process.getuid?.() ?? 0;

  constructor(private readonly opts: LauncherOptions) {
    this.grants = new GrantCache(opts.log, () => undefined);
    this.load();
    this.caps = (opts.sandbox ?? detectSandbox)(this.registry.config.main.cgi.user);
    this.cgroup = opts.cgroup ?? findDelegatedCgroup();
    this.boxInit = opts.boxInit ?? compileBoxInit(nativeDir());
  }

  /** The tenant's cgroup.procs below the delegated cgroup v2, made with the limits of the config now; undefined without one. */
  private cgroupOf(t: Tenant): string | undefined {
    return this.tenantCgroups.procsOf(t.id, tenantCgroupLimits(this.registry.config.main.cgi));
  }

  /**
   * (Re)reads the config folder and gives every tenant without a uid one. A uid once given is never changed here.
   * All or nothing: what can fail (the config, the uid store) is done before anything of the old config is
   * replaced, so a reload that throws leaves the launcher on the config it had.
   */
  load(): void {
    this.cacheFile ??= this.readCache();
    const config = loadConfig(this.opts.configDir, undefined, this.parseCache);
    const registry = new Registry(config);
    const main = config.main;
    const avoid = new Set<number>([0]);
    for (const u of [main.user, main.cgi.user]) {
      const found = u ? lookupUser(u) : undefined;
      if (found) avoid.add(found.uid);
    }
    const allowedOwners = new Set([0, ...(main.user ? [lookupUser(main.user)?.uid ?? 0] : [])]);
    let given: Map<string, number>;
    const db = openDb(main.dataDir, cgiUidMigrations);
    try {
      const store = new CgiUids(db);
      const left = store.assign([...registry.tenants.keys()].sort(), parseUidRange(main.cgi.uids), avoid, (t) =>
        existsSync(path.join(main.dataDir, 'cgi', t)) || existsSync(path.join(main.sitesDir, t)),
      );
      for (const t of left) this.opts.log.error({ tenant: t, range: main.cgi.uids }, 'cgi.uids is exhausted: this tenant gets no uid and its handlers are refused');
      given = store.all();
    } finally {
      db.close();
    }
    // Nothing below throws: the switch to the new config.
    this.registry = registry;
    this.allowedOwners = allowedOwners;
    // Uids given before stay as this process first read them: state is the server's file too.
    for (const [t, uid] of given) if (!this.uids.has(t) || this.uids.get(t) === uid) this.uids.set(t, uid);
    // Limits may have changed: each tenant's cgroup is set again at its next run; removed tenants' cgroups go.
    // (Not at the first load: the cgroup is looked for after it.)
    if (this.cgroup) {
      for (const left of this.tenantCgroups.reload(this.registry.tenants.keys())) this.opts.log.warn(left, 'a removed tenant\'s cgroup is still in use: tried again at the next reload');
    }
    try {
      this.suiteReal = realpathSync(this.opts.suiteDir);
      this.suiteNames = new Set(readdirSync(this.suiteReal).filter((f) => f.endsWith('.js')).map((f) => f.slice(0, -3)).filter((n) => HANDLER.test(n)));
    } catch {
      this.suiteNames = new Set();
    }
  }

  /** Takes in the launcher's cache file if root alone can have written it; its path (undefined while makewaves.yaml is refused). */
  private readCache(): string | undefined {
    let file: string;
    try {
      file = path.join(path.resolve(this.opts.configDir, loadMainConfig(this.opts.configDir).data), 'cgi', LAUNCHER_CACHE_FILE);
    } catch (err) {
      // loadConfig, next, names every problem.
      if (err instanceof ConfigError) return undefined;
      throw err;
    }
    const read = readOwnFile(file, this.owner);
    if (read.ok) this.parseCache.loadText(read.text);
    else if (!read.missing) this.opts.log.warn({ file, why: read.why }, 'not using the cache of parsed tenant files: root alone must be able to have written it (every file is parsed; it is written anew)');
    return file;
  }

  /** Writes the cache of parsed tenant files if it changed since (after the start: not on its path); why not, if it could not. */
  saveCache(): string | undefined {
    if (!this.cacheFile) return undefined;
    return this.parseCache.save(this.cacheFile, (file, text) => {
      mkdirSync(path.dirname(file), { recursive: true, mode: 0o711 });
      writeOwnFile(file, text, this.owner);
    });
  }

  /**
   * Runs the launcher lets live at once: twice `cgi.total` (the server keeps
   * to cgi.total; the margin covers processes still ending while their
   * replacements start). A server asking for more is refused.
   */
  maxRuns(): number {
    return this.registry.config.main.cgi.total * 2;
  }

  /** How many script boxes to start ahead (boxes.ts): two per tenant, at most cgi.total, idle as warm processes. */
  boxOptions(log?: Logger): BoxPoolOptions {
    return boxOptionsOf(this.registry, log);
  }

  uidMap(): Record<string, number> {
    return Object.fromEntries([...this.uids].filter(([t]) => this.registry.tenants.has(t)));
  }

  uidOf(tenant: string): number | undefined {
    return this.uids.get(tenant);
  }

  /** Repairs a known tenant's scratch folder (mode 0700, its uid); why not, when it cannot. */
  repairScratch(tenant: string): string | undefined {
    const t = this.registry.tenants.get(tenant);
    const uid = this.uids.get(tenant);
    if (!t || uid === undefined) return `unknown tenant ${tenant}`;
    this.scratch(t, uid);
    return undefined;
  }

  /** The tenant's scratch folder, 0700 and owned by its uid, made or repaired now. */
  private scratch(t: Tenant, uid: number): string {
    const parent = path.join(this.registry.config.main.dataDir, 'cgi');
    const dir = path.join(parent, t.id);
    // Never by its path: <data> is the service user's, who may at any moment put a link, or a folder of its own, where
    // <data>/cgi goes (moving root's aside), and this process is root for good. <data>/cgi is opened without following
    // a link and kept root's on what was opened; the tenant's folder is made, checked and changed through it.
    const pfd = openFolder(parent, () => mkdirSync(parent, { recursive: true, mode: 0o711 }), `${parent} is a symbolic link or not a folder; refused (move it away)`);
    try {
      const pst = fstatSync(pfd);
      if (pst.uid !== this.owner || (pst.mode & 0o022) !== 0) {
        this.opts.log.warn({ dir: parent, uid: pst.uid, mode: (pst.mode & 0o7777).toString(8) }, `${parent} was not root's alone: taken back (0711)`);
        fchownSync(pfd, this.owner, process.getgid?.() ?? 0);
        fchmodSync(pfd, 0o711);
      }
      const at = `/proc/self/fd/${pfd}/${t.id}`;
      const fd = openFolder(at, () => mkdirSync(at, { mode: 0o700 }), `${dir} is not a folder`);
      try {
        const st = fstatSync(fd);
        if ((st.mode & 0o7777) !== 0o700) {
          this.opts.onRepair?.(t.id, dir, (st.mode & 0o7777).toString(8));
          fchmodSync(fd, 0o700);
        }
        if (st.uid !== uid || st.gid !== uid) fchownSync(fd, uid, uid);
      } finally {
        closeSync(fd);
      }
    } finally {
      closeSync(pfd);
    }
    return dir;
  }

  /** Checks one run request against the launcher's own config; the spawn spec with the tenant's uid, or why not. */
  async check(req: Extract<Request, { op: 'run' }>): Promise<{ ok: true; run: Accepted } | { ok: false; why: string }> {
    const t = this.registry.tenants.get(req.tenant);
    if (!t) return { ok: false, why: `unknown tenant ${req.tenant}` };
    if (t.suspended) return { ok: false, why: `tenant ${t.id} is suspended` };
    const uid = this.uids.get(t.id);
    if (uid === undefined) return { ok: false, why: `tenant ${t.id} has no uid (cgi.uids exhausted)` };
    if (!this.caps.box) return { ok: false, why: this.caps.refusal ?? 'no box' };
    const cfg = this.registry.config.main.cgi;
    let root: string | undefined;
    try {
      root = realpathSync.native(t.root);
    } catch {
      // no web root: only the suite's handlers can run
    }
    if (req.kind !== 'suite' && (!t.config.cgi || root === undefined)) return { ok: false, why: `tenant ${t.id} may not run its own handlers (cgi: false or no web root)` };
    const caps: SandboxCapabilities = { ...this.caps, drop: { user: `tenant ${t.id}`, uid, gid: uid, setpriv: this.caps.drop?.setpriv ?? 'setpriv' } };
    const cgroup = this.cgroupOf(t);
    const common = { folders: [] as string[], memory: cfg.memory, fileMax: cfg.scratchFileMax, nproc: cfg.tenantProcesses, ...(cgroup ? { cgroup } : {}) };
    if (req.kind === 'script') {
      // Synchronous: this process has nothing else to do meanwhile, and a hop per call costs more than the call.
      const found = findScriptSync(root!, req.name);
      if (!found) return { ok: false, why: `no script ${req.name} in ${t.id}'s cgi-bin` };
      if (!found.ok) return { ok: false, why: found.why };
      const file = found.argv[found.argv.length - 1]!;
      for (const f of [file, path.dirname(file)]) {
        const owner = statSync(f).uid;
        if (!this.allowedOwners.has(owner)) return { ok: false, why: `${f} is owned by uid ${owner}, not by root or the suite's user` };
      }
      const env = { ...req.env, SERVER_SOFTWARE: 'makewaves', SCRIPT_FILENAME: file, DOCUMENT_ROOT: root!, PATH: '/usr/local/bin:/usr/bin:/bin' };
      const scratch = this.scratch(t, uid);
      if (this.boxInit.ok) {
        const init = this.boxInit.path;
        // The box's command line only when a box is started (once per tenant until a reload or its idle end).
        const box = () => forkBoxSpec(caps, { ...common, folders: [root!], scratch, init });
        const limits = { cpu: cfg.timeout + 1, data: cfg.memory, fsize: cfg.scratchFileMax, nofile: 256, tmp: cfg.scratchFileMax };
        const run = { cwd: path.dirname(file), argv: found.argv, env, limits };
        // What its box is made of besides the config (a reload ends every box): the tenant's uid, web root and scratch folder.
        const key = [t.id, uid, root!, scratch].join('\0');
        return { ok: true, run: { id: req.id, tenant: t.id, uid, get spec() { return box(); }, fork: { key, box, run } } };
      }
      const spec = scriptSpec(caps, { ...common, argv: found.argv, folders: [root!], scratch, env });
      return { ok: true, run: { id: req.id, tenant: t.id, uid, spec } };
    }
    let reads: string[];
    let folders: string[];
    if (req.kind === 'suite') {
      if (!this.suiteNames.has(req.name)) return { ok: false, why: `no suite handler ${req.name}` };
      reads = [this.suiteReal, ...(root !== undefined ? await this.grants.get(t.id, root) : [])];
      folders = [this.suiteReal, ...(root !== undefined ? [root] : [])];
    } else {
      const js = await resolveInJail(root!, ['cgi-bin', `${req.name}.js`]);
      // Gone since it was resolved: no such handler (refused just below).
      const st = js.ok ? await stat(js.real).catch(() => undefined) : undefined;
      if (!js.ok || !st?.isFile()) return { ok: false, why: `no handler ${req.name}.js in ${t.id}'s cgi-bin` };
      reads = await this.grants.get(t.id, root!);
      folders = [root!];
    }
    const spec = spawnSpec(caps, { ...common, reads, folders, scratch: this.scratch(t, uid) });
    return { ok: true, run: { id: req.id, tenant: t.id, uid, spec } };
  }
}
