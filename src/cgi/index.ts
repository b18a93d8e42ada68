import { readdirSync, realpathSync, statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { packageRoot } from '../lib/paths.ts';
import type { GatewayRequest, HandlerGateway, HttpOutcome, MailSubmitter } from '../core/contracts.ts';
import { errorRef, replyCode, type ErrorCode } from '../core/errors.ts';
import type { Service } from '../core/lifecycle.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Logger } from '../core/log.ts';
import type { Registry, Tenant } from '../core/registry.ts';
import { normalizeHost } from '../lib/hostname.ts';
import { resolveInJail } from '../lib/jail.ts';
import { Timeline } from '../lib/timeline.ts';
import { metaVariables, parseCgiOutput } from './cgi.ts';
import { GrantCache } from './grants.ts';
import { HandlerMail, type SentForm } from './mail.ts';
import { handlerErrorPage } from './pages.ts';
import { Pools, type PoolLimits } from './pool.ts';
import { findDelegatedCgroup, limitsNote, type CgroupFinding } from '../lib/cgroup.ts';
import { tenantPlaces } from './places.ts';
import { BoxPool, boxOptionsOf } from './boxes.ts';
import { findScriptSync, runScript } from './classic.ts';
import { detectSandbox, scriptSpec, spawnSpec, type SandboxCapabilities, type SpawnSpec } from './sandbox.ts';
import { LocalRuns } from './localboxes.ts';
import type { RunResult } from './worker.ts';
import { LauncherClient, type LauncherOptions } from './launched.ts';

/** Seconds a handler request refused because the launcher is still starting is told to wait (Retry-After). */
export const LAUNCHER_RETRY_AFTER = 5;

export type { MailAnswer } from './mail.ts';

/** The suite's own handlers: `<repo>/cgi-bin/<name>.js`. */
export const SUITE_HANDLERS = path.join(packageRoot(), 'cgi-bin') + path.sep;

/**
 * Forks the root launcher (launcher.ts) for the config folder `configDir`
 * now, before the server loads that folder: the launcher loads it too, as
 * root, in its own process, and with 10,000 tenants each load takes most of
 * a second; started ahead, the two overlap. Hand it to createCgi
 * (`launcherStarted`), which uses it or stops it; stop it if the start fails
 * before that.
 */
export function startLauncher(configDir: string, log: Logger, options?: LauncherOptions): LauncherClient {
  return new LauncherClient(configDir, SUITE_HANDLERS, log.child({ svc: 'cgi' }), options);
}

export interface CgiDeps {
  registry: Registry;
  log: Logger;
  /** The durable outbound queue; without it handlers' mail is refused as unavailable. */
  mail?: MailSubmitter;
  /** Called after each message a handler got queued (the form log). */
  onSent?: (sent: SentForm) => void;
  /** Folder of the suite's handlers (tests point it elsewhere). */
  suiteDir?: string;
  /** What the sandbox may use; found by detectSandbox at start when not given (tests give a machine without namespaces). */
  sandbox?: (user: string) => SandboxCapabilities;
  metrics?: Metrics;
  /**
   * Whether a root launcher starts every run with the tenant's own uid
   * (launcher.ts). Default: when the suite starts as root (tests of a
   * machine without namespaces turn it off).
   */
  launcher?: boolean;
  /** The root launcher, started ahead of the rest ({@link startLauncher}); used if runs get it, else stopped at start. */
  launcherStarted?: LauncherClient;
  /** Where tenants' cgroups go (tests give a made-up one); default: a delegated cgroup v2 found from /proc/self/cgroup. */
  cgroup?: () => CgroupFinding;
}

export interface Cgi {
  /** What http/ calls for /cgi-bin/<name>. */
  gateway: HandlerGateway;
  /** Lifecycle: start finds the sandbox's means, stop ends every handler process. */
  service: Service;
  /** Processes alive now (for tests and metrics). */
  processes(): number;
  /** Runs of one tenant in progress now. */
  running(tenant: string): number;
  /** The root launcher, when runs get each tenant's own uid (for tests). */
  launcher(): LauncherClient | undefined;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
/** A classic CGI script's file name in cgi-bin/ (contact.pl, form.cgi, hello). */
const SCRIPT_FILE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const HONEYPOT_DEFAULT = 'homepage';

function limitsOf(reg: Registry): PoolLimits {
  const c = reg.config.main.cgi;
  return {
    timeoutMs: c.timeout * 1000,
    memory: c.memory,
    maxOutput: c.maxOutput,
    perTenant: c.perTenant,
    total: c.total,
    queue: c.queue,
    requestsPerProcess: c.requestsPerProcess,
    idleMs: c.idleTimeout * 1000,
  };
}

function mailLimitsOf(reg: Registry) {
  const c = reg.config.main.cgi;
  return { perTenantPerHour: c.mailPerHour, perIpPerHour: c.mailPerIpPerHour };
}

type BodyRead = { ok: true; body: Buffer } | { ok: false; code: Extract<ErrorCode, 'TOO_LARGE' | 'BAD_SYNTAX'> };

/** The HTTP status of a catalogued condition (core/errors.ts). */
const status = (code: ErrorCode): number => replyCode(code, 'http');

function readBody(req: IncomingMessage, max: number): Promise<BodyRead> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > max) return Promise.resolve({ ok: false, code: 'TOO_LARGE' });
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > max) {
        done = true;
        resolve({ ok: false, code: 'TOO_LARGE' });
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (!done) resolve({ ok: true, body: Buffer.concat(chunks) });
      done = true;
    });
    // A client that goes away mid-body: nothing runs (the answer goes nowhere).
    const gone = () => {
      if (!done) resolve({ ok: false, code: 'BAD_SYNTAX' });
      done = true;
    };
    req.on('error', gone);
    req.on('close', gone);
  });
}

function send(req: IncomingMessage, res: ServerResponse, status: number, headers: Array<[string, string]>, body: Buffer): HttpOutcome {
  const head = req.method === 'HEAD';
  res.statusCode = status;
  for (const [k, v] of headers) res.appendHeader(k, v);
  res.setHeader('Content-Length', body.length);
  res.end(head ? undefined : body);
  return { status, bytes: head ? 0 : body.length };
}

function page(req: IncomingMessage, res: ServerResponse, status: number, ref?: string, extra: Array<[string, string]> = []): HttpOutcome {
  // HTTP/2 has no Connection field (RFC 9113 §8.2.2): the stream ends, the session stays.
  if (!req.complete && req.httpVersionMajor < 2) extra.push(['Connection', 'close']);
  return send(req, res, status, [['Content-Type', 'text/html; charset=utf-8'], ...extra], handlerErrorPage(status, ref));
}

/** 503 with Retry-After (seconds): a refusal the client may try again later. */
function unavailable(req: IncomingMessage, res: ServerResponse, retryAfter: number): HttpOutcome {
  return page(req, res, status('UNAVAILABLE'), undefined, [['Retry-After', String(retryAfter)]]);
}

/**
 * Waits for the launcher's readiness `up`, at most `seconds` (cgi.timeout,
 * what the handler itself would get): undefined once it is ready, else why
 * not (for the refusal's log line).
 */
async function launcherNotReady(up: Promise<void>, seconds: number, doing = 'loading the configuration'): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`the handler launcher was still ${doing} after cgi.timeout (${seconds} s)`), seconds * 1000);
  });
  try {
    return await Promise.race([up.then(() => undefined, (err: Error) => `the handler launcher failed to start: ${err.message}`), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Folders on the way to `dir` that the handlers' user cannot pass through (no o+x). */
function closedOnTheWay(dir: string): string[] {
  const closed: string[] = [];
  for (let d = dir; ; d = path.dirname(d)) {
    try {
      if ((statSync(d).mode & 0o001) === 0) closed.push(d);
    } catch {
      // a folder that does not exist yet is created by the suite
    }
    if (path.dirname(d) === d) return closed;
  }
}

/**
 * The HTTP answer to one finished run: 504/502 for a broken limit or a
 * crash, 500 for a handler that threw, 502 for an answer that fails the
 * checks of parseCgiOutput, else the handler's own answer. Each failure is
 * logged with `ctx.who` and why.
 */
function respond(
  req: IncomingMessage,
  res: ServerResponse,
  result: RunResult,
  ctx: { log: Logger; who: Record<string, unknown>; timeout: number; domains: readonly string[] },
): HttpOutcome {
  switch (result.kind) {
    case 'timeout':
      ctx.log.info({ ...ctx.who, why: `ran longer than cgi.timeout (${ctx.timeout} s); killed` }, 'handler failed');
      return page(req, res, status('BACKEND_TIMEOUT'));
    case 'memory':
      ctx.log.info({ ...ctx.who, why: 'over cgi.memory; killed' }, 'handler failed');
      return page(req, res, status('BACKEND_FAILED'));
    case 'output':
      ctx.log.info({ ...ctx.who, why: 'printed more than cgi.maxOutput; killed' }, 'handler failed');
      return page(req, res, status('BACKEND_FAILED'));
    case 'crashed':
      ctx.log.info({ ...ctx.who, why: `process ended: ${result.detail}` }, 'handler failed');
      return page(req, res, status('BACKEND_FAILED'));
    case 'done':
      break;
  }
  if (result.error !== undefined && /Array buffer allocation failed/.test(result.error)) {
    // RLIMIT_DATA refused a Buffer: the handler ran out of its memory.
    ctx.log.info({ ...ctx.who, why: 'over cgi.memory (allocation refused)' }, 'handler failed');
    return page(req, res, status('BACKEND_FAILED'));
  }
  if (result.error !== undefined) {
    const ref = errorRef();
    ctx.log.info({ ...ctx.who, ref, error: result.error }, 'handler threw');
    return page(req, res, 500, ref);
  }
  const parsed = parseCgiOutput(result.output, ctx.domains);
  if (!parsed.ok) {
    const ref = errorRef();
    ctx.log.info({ ...ctx.who, ref, why: parsed.why }, 'handler answer refused');
    return page(req, res, status('BACKEND_FAILED'), ref);
  }
  ctx.log.debug({ ...ctx.who, status: parsed.status }, 'handler ran');
  return send(req, res, parsed.status, parsed.headers, parsed.body);
}

/**
 * The start-up log of the sandbox: what boxes handlers, as which uid
 * (each tenant's own, one for all, or this process's), the refusal when
 * there is no box, and each folder the handlers' uids cannot pass.
 */
function announce(
  log: Logger,
  c: SandboxCapabilities,
  launcher: LauncherClient | undefined,
  current: Registry,
  suiteReal: string,
  suiteNames: string[],
  cgroup: CgroupFinding,
  /** true: scripts run in persistent boxes; else why each run gets a box of its own. */
  scripts: true | string,
): void {
  log.info(
    {
      permission: c.permissionFlag,
      limits: limitsNote(cgroup),
      box: c.box ? `${c.box.bwrap}: own user, mount, PID, IPC, UTS, network and cgroup namespaces` : 'NONE: every handler is refused',
      ...(c.box ? { nestedUserNamespaces: c.box.noNestedUserns ? 'refused' : 'ALLOWED: bwrap older than 0.8 (no --disable-userns)' } : {}),
      user: launcher
        ? `each tenant its own uid from cgi.uids ${current.config.main.cgi.uids}, set by a root launcher`
        : c.drop
          ? `${c.drop.user} (${c.drop.uid}:${c.drop.gid}), the same for every tenant`
          : `unchanged: not started as root, so every tenant's handlers run as this process's own uid ${process.getuid?.()} (namespaces still on)`,
      ...(launcher ? { uids: launcher.uids } : {}),
      scripts:
        scripts === true
          ? 'one persistent box per tenant (box-init): each run cloned in fresh PID, mount, IPC and UTS namespaces'
          : `one fresh box per run (slower): ${scripts}`,
      handlers: suiteNames,
    },
    'form handler sandbox ready',
  );
  if (!c.box) log.error({ why: c.refusal }, 'no box for handlers: every /cgi-bin/ request is refused with 503');
  else if (!c.box.noNestedUserns) log.warn(`${c.box.bwrap} is older than 0.8: handlers can make user namespaces of their own inside the box`);
  const runAs = launcher ? "the tenants' own uids" : c.drop?.user;
  if (runAs) {
    const main = current.config.main;
    for (const d of new Set([...closedOnTheWay(main.sitesDir), ...closedOnTheWay(main.dataDir), ...closedOnTheWay(suiteReal)])) {
      log.warn({ dir: d, user: runAs }, `handlers run as ${runAs} and cannot pass through ${d} (chmod o+x it)`);
    }
  }
}

/** The suite's own handlers: their folder's real path and the names in it (none while it cannot be read; `was`, the path known before). */
function scanSuiteDir(dir: string, was: string): { real: string; names: Set<string> } {
  try {
    const real = realpathSync(dir);
    const names = readdirSync(real).filter((f) => f.endsWith('.js')).map((f) => f.slice(0, -3)).filter((n) => NAME.test(n));
    return { real, names: new Set(names) };
  } catch {
    return { real: was, names: new Set() };
  }
}

/**
 * The gateway over `handle`: a fault of the suite is answered 500 with a
 * reference (logged with its stack), or the connection ended if the answer
 * had begun.
 */
function guarded(handle: (r: GatewayRequest) => Promise<HttpOutcome>, log: Logger): HandlerGateway {
  return {
    async handle(r) {
      try {
        return await handle(r);
      } catch (err) {
        const ref = errorRef();
        log.error({ tenant: r.tenant.id, remote: r.remote, handler: r.name, ref, err: (err as Error).stack }, 'handler gateway failed');
        if (r.res.headersSent) {
          r.res.destroy();
          return { status: r.res.statusCode, bytes: 0 };
        }
        return page(r.req, r.res, 500, ref);
      }
    },
  };
}

/** A run the root launcher starts, with the tenant's own uid (see launcher.ts); it checks the ask itself. */
function launched(client: LauncherClient, tenant: string, kind: 'suite' | 'own' | 'script', name: string): SpawnSpec {
  return { command: '', args: [], cwd: '', forks: true, launch: { client, ask: { tenant, kind, name, env: {} } } };
}

/**
 * The handler gateway: `/cgi-bin/<name>` runs the suite's `cgi-bin/<name>.js`
 * or, for tenants with `cgi: true`, their own `<root>/cgi-bin/<name>.js`,
 * in a sandboxed warm process (see sandbox.ts and pool.ts), or their
 * classic CGI script `<root>/cgi-bin/<name>` in a fresh box (classic.ts),
 * and turns its CGI answer into the HTTP response. Every request is answered: a handler
 * that breaks a limit gets 502/503/504, never the suite's stack.
 */
export function createCgi({ registry, log: rootLog, mail, onSent, suiteDir = SUITE_HANDLERS, sandbox = detectSandbox, metrics, launcher: useLauncher, launcherStarted, cgroup: findCgroup = findDelegatedCgroup }: CgiDeps): Cgi {
  const runs = metrics?.counter('makewaves_handler_runs_total', 'Handler runs by tenant and result (ok, error, timeout, memory, output, crashed, busy; starting: refused while the launcher was not ready).', ['tenant', 'result']);
  const counted = (tenant: string, result: string) => runs?.inc({ tenant, result });
  const log = rootLog.child({ svc: 'cgi' });
  let current = registry;
  let caps: SandboxCapabilities | undefined;
  let launcher: LauncherClient | undefined;
  /** The launcher's readiness (it loads the config itself), while the other services start; undefined once it is ready. */
  let launcherUp: Promise<void> | undefined;
  let suiteReal = suiteDir;
  let suiteNames = new Set<string>();
  const pools = new Pools(limitsOf(registry), log);
  // Script boxes started ahead, when this process starts them itself (not root: no launcher).
  const boxes = new BoxPool(boxOptionsOf(registry, log));
  /** Without the launcher: the tenants' cgroups and persistent script boxes this process starts itself. */
  const local = new LocalRuns(() => current, log);
  const handlerMail = new HandlerMail(mail, mailLimitsOf(registry), log, onSent);
  /** Tenant handler file → the mtime:size:inode the warm processes loaded. */
  const versions = new Map<string, string>();
  const places = tenantPlaces(() => current, () => caps, log);
  const { realRoot, scratch } = places;
  // When a tenant's grants change, its warm processes (started with the old ones) retire.
  const grants = new GrantCache(log, (tenant) => {
    pools.retire(`${tenant}\0own`);
    pools.retire(`${tenant}\0suite`);
  });

  function scanSuite(): void {
    ({ real: suiteReal, names: suiteNames } = scanSuiteDir(suiteDir, suiteReal));
  }

  async function handle(r: GatewayRequest): Promise<HttpOutcome> {
    const { req, res, tenant, name, remote } = r;
    const who = { tenant: tenant.id, remote, handler: name };
    // A request between the HTTP listener opening and the launcher being ready waits for it, at most cgi.timeout; so
    // does one while its keeper starts it again after an end unasked.
    const again = launcher?.restarting;
    const notReady = launcherUp
      ? await launcherNotReady(launcherUp, current.config.main.cgi.timeout)
      : again && (await launcherNotReady(again.ready, current.config.main.cgi.timeout, `starting again after it ended (${again.why})`));
    if (notReady) {
      log.warn({ ...who, why: notReady }, 'handler request refused: the handler launcher is not ready');
      counted(tenant.id, 'starting');
      return unavailable(req, res, LAUNCHER_RETRY_AFTER);
    }
    const timeline = new Timeline();
    if (!caps) return page(req, res, status('UNAVAILABLE'));
    if (!caps.box) {
      // Never a weaker box: without bubblewrap no handler runs (the reason was logged at start).
      log.warn({ ...who, why: caps.refusal }, 'handler refused: no box for handlers');
      return page(req, res, status('UNAVAILABLE'));
    }
    let file: string;
    let kind: 'suite' | 'own' | 'script';
    let argv: string[] = [];
    const root = realRoot(tenant);
    const js = NAME.test(name) && tenant.config.cgi && root !== undefined ? await resolveInJail(root, ['cgi-bin', `${name}.js`]) : undefined;
    // Gone since it was resolved: no such handler.
    const jsStat = js?.ok ? await stat(js.real).catch(() => undefined) : undefined;
    if (NAME.test(name) && suiteNames.has(name)) {
      kind = 'suite';
      file = path.join(suiteReal, `${name}.js`);
    } else if (js?.ok && jsStat?.isFile()) {
      kind = 'own';
      // Warm processes keep the modules they loaded: a handler the tenant
      // replaced (an FTP upload) retires its pool, so the next run loads the new one.
      const version = `${jsStat.mtimeMs}:${jsStat.size}:${jsStat.ino}`;
      const seen = versions.get(js.real);
      if (seen !== undefined && seen !== version) pools.retire(`${tenant.id}\0own`);
      versions.set(js.real, version);
      file = js.real;
    } else if (SCRIPT_FILE.test(name) && !name.endsWith('.js') && tenant.config.cgi && root !== undefined) {
      // In one go, as the launcher does: a hop through the thread pool per file system call cost more than the calls.
      const found = findScriptSync(root, name);
      if (!found) return page(req, res, 404);
      if (!found.ok) {
        const ref = errorRef();
        log.warn({ ...who, ref, why: found.why }, 'handler refused');
        return page(req, res, 500, ref);
      }
      kind = 'script';
      timeline.mark('found');
      argv = found.argv;
      file = argv[argv.length - 1]!;
    } else {
      return page(req, res, 404);
    }

    const cfg = current.config.main.cgi;
    const read = await readBody(req, cfg.maxBody);
    if (!read.ok) {
      log.info({ ...who, why: read.code === 'TOO_LARGE' ? 'body over cgi.maxBody' : 'body unreadable' }, 'handler request refused');
      return page(req, res, status(read.code));
    }
    const host = req.headers.host ? normalizeHost(req.headers.host) : '';
    const env = metaVariables({
      req,
      serverName: tenant.domains.includes(host) ? host : tenant.domains[0]!,
      serverPort: r.serverPort,
      scriptName: `/cgi-bin/${name}`,
      pathInfo: r.pathInfo,
      query: r.query,
      remote,
      bodyLength: read.body.length,
    });
    let result: RunResult;
    const t0 = Date.now();
    timeline.mark('read');
    if (kind === 'script') {
      // One fresh box per run, counted against the same limits as warm processes (and queued as theirs).
      if (!(await pools.claim(tenant.id))) {
        log.info({ ...who, why: 'concurrency limits (cgi.perTenant, cgi.queue, cgi.total)' }, 'handler request refused');
        counted(tenant.id, 'busy');
        return unavailable(req, res, 1);
      }
      try {
        // RFC 3875 §4.1: the meta-variables are the script's environment; a PATH of the box's own folders, and Apache's usual extras
        // (the launcher adds those itself, from its own view of the tenant).
        const sendmail = handlerMail.forRun({ tenant, remote, handler: name });
        const whole = { ...env, SERVER_SOFTWARE: 'makewaves', SCRIPT_FILENAME: file, DOCUMENT_ROOT: root!, PATH: '/usr/local/bin:/usr/bin:/bin' };
        // Without the launcher this process makes the box, scratch folder included; with it, the launcher alone
        // (the folder is the tenant's uid's: set here to the handlers' user, runs side by side lost it).
        const box = () => ({ argv, folders: [root!], scratch: scratch(tenant), memory: cfg.memory, fileMax: cfg.scratchFileMax, ...local.cgroupOf(tenant) });
        const ran = launcher
          ? await runScript(launched(launcher, tenant.id, 'script', name), env, read.body, limitsOf(current), sendmail, undefined, timeline)
          : local.boxInit?.ok
            ? await runScript(local.run(caps, tenant.id, { ...box(), init: local.boxInit.path }, whole), env, read.body, limitsOf(current), sendmail, undefined, timeline)
            : await runScript(scriptSpec(caps, { ...box(), env: whole }), env, read.body, limitsOf(current), sendmail, boxes, timeline);
        if (ran.stderr) log.info({ ...who, stderr: ran.stderr }, 'handler wrote to stderr');
        result = ran.result;
      } finally {
        pools.unclaim(tenant.id);
      }
    } else {
      const reads = [...(kind === 'suite' ? [suiteReal] : []), ...(root !== undefined ? await grants.get(tenant.id, root) : [])];
      const spec = launcher
        ? launched(launcher, tenant.id, kind, name)
        : spawnSpec(caps, {
            reads,
            folders: [...(kind === 'suite' ? [suiteReal] : []), ...(root !== undefined ? [root] : [])],
            scratch: scratch(tenant),
            memory: cfg.memory,
            fileMax: cfg.scratchFileMax,
            ...local.cgroupOf(tenant),
          });
      // As without the launcher: checked before every run, not only when a process starts.
      if (launcher) await launcher.scratch(tenant.id);
      const worker = await pools.acquire(`${tenant.id}\0${kind}`, tenant.id, spec);
      if (!worker) {
        log.info({ ...who, why: 'concurrency limits (cgi.perTenant, cgi.queue, cgi.total)' }, 'handler request refused');
        counted(tenant.id, 'busy');
        return unavailable(req, res, 1);
      }
      try {
        result = await worker.run(
          { handler: file, env, site: { id: tenant.id, domains: tenant.domains, honeypot: tenant.config.forms?.honeypot ?? HONEYPOT_DEFAULT }, body: read.body },
          handlerMail.forRun({ tenant, remote, handler: name }),
        );
      } finally {
        const stderr = worker.takeStderr();
        if (stderr) log.info({ ...who, stderr }, 'handler wrote to stderr');
      }
      // A process whose handler threw may be half-broken (or already exiting): a fresh one serves the next run.
      pools.release(worker, result.kind === 'done' && result.error === undefined);
    }
    const ms = Date.now() - t0;
    counted(tenant.id, result.kind === 'done' ? (result.error === undefined ? 'ok' : 'error') : result.kind);
    const outcome = respond(req, res, result, { log, who: { ...who, ms }, timeout: cfg.timeout, domains: tenant.domains });
    if (kind === 'script') {
      timeline.mark('answered');
      // From the request's hand-over to this gateway: found, body read, asked, started, output, exited, closed, mailed, answered.
      log.debug({ ...who, ms: timeline.marks }, 'script timeline');
    }
    return outcome;
  }

  return {
    gateway: guarded(handle, log),
    service: {
      name: 'cgi',
      async start() {
        caps = sandbox(current.config.main.cgi.user);
        local.cgroup = findCgroup();
        scanSuite();
        const c = caps;
        const asRoot = process.getuid?.() === 0;
        if ((useLauncher ?? asRoot) && c.box) {
          // Not awaited here: the launcher loads the config in its own process while the other services start
          // (static files never need it); the suite's start awaits it through ready() before it says it serves.
          const l = (launcher = launcherStarted ?? new LauncherClient(current.config.dir, suiteDir, log));
          launcherUp = l.ready.then(() => {
            launcherUp = undefined;
            announce(log, c, l, current, suiteReal, [...suiteNames], local.cgroup, l.forkBox);
          });
          launcherUp.catch(() => undefined); // awaited by ready() (the start's failure, reported there) and by requests meanwhile
          return [];
        }
        void launcherStarted?.stop();
        const boxInit = c.box ? local.prepareBoxInit() : undefined;
        const scripts = boxInit === undefined ? 'no box' : boxInit.ok ? true : boxInit.why;
        announce(log, c, launcher, current, suiteReal, [...suiteNames], local.cgroup, scripts);
        return [];
      },
      async ready() {
        await launcherUp;
      },
      awaiting: () => (launcherUp ? 'the handler launcher is loading the configuration' : undefined),
      async stop(graceMs) {
        boxes.discard();
        local.retireAll();
        await pools.stop(graceMs);
        // Its end awaited (briefly): what it and its boxes write is done when the stop is.
        await launcher?.stop(Math.min(graceMs, 2_000));
      },
      reload(next) {
        // What the new snapshot's settings make, before anything switches to it.
        const limits = limitsOf(next);
        const mailLimits = mailLimitsOf(next);
        const boxOptions = boxOptionsOf(next, log);
        return () => {
          current = next;
          places.reload();
          grants.clear();
          pools.setLimits(limits);
          handlerMail.setLimits(mailLimits);
          pools.retireAll();
          boxes.discard();
          boxes.setOptions(boxOptions);
          local.reload(next, !launcher);
          launcher?.reload();
          scanSuite();
        };
      },
    },
    processes: () => pools.size,
    running: (tenant) => pools.running(tenant),
    launcher: () => launcher,
  };
}
