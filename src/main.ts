import { createCgi, startLauncher } from './cgi/index.ts';
import type { LauncherClient, LauncherOptions } from './cgi/launched.ts';
import { chmodSync, statSync } from 'node:fs';
import path from 'node:path';
import { CertStore, certificateExpiry } from './core/certs.ts';
import { CERT_WARN_DAYS, Health, diskProblems, listenerProblems } from './core/health.ts';
import { detectSandbox, type SandboxCapabilities } from './cgi/sandbox.ts';
import { ConfigError, loadConfig, loadMainConfig } from './core/config/load.ts';
import { PARSE_CACHE_FILE, sharedParseCache } from './core/config/parsecache.ts';
import { restartOnlyChanges } from './core/config/restart.ts';
import { watchConfig } from './core/config/watch.ts';
import type { ListInbox, ListPages, MailSubmitter, QueueRemover } from './core/contracts.ts';
import { reloadAll, startAll, stopAll, type Service } from './core/lifecycle.ts';
import { createLogger, type Logger } from './core/log.ts';
import { Registry } from './core/registry.ts';
import { removeRunFile, runFileOf, writeRunFile, type RunRecord } from './core/runfile.ts';
import { createAdminService } from './admin/index.ts';
import { Metrics } from './core/metrics.ts';
import type { createFtpService } from './ftp/index.ts';
import { createHttpService } from './http/index.ts';
import { createJobsService } from './jobs/index.ts';
import type { Lists } from './lists/index.ts';
import { compactAfterStart, keepTickShape } from './lib/memory.ts';
import { guardUmask, makeDir, tightenTree } from './lib/modes.ts';
import { holdConnections } from './lib/holdconn.ts';
import { dropPrivileges, giveTree, resolveServiceUser } from './lib/users.ts';
import { openState, type State } from './state/index.ts';

export interface SuiteOptions {
  configDir: string;
  log?: Logger;
  /** Reload when config files change (default true). */
  watch?: boolean;
  /** What the handler sandbox may use (tests: the service-user setup, handlers under the suite's own uid). */
  sandbox?: (user: string) => SandboxCapabilities;
  /** Started as root: the handler launcher's program and its time to become ready (tests give one that waits for them). */
  launcher?: LauncherOptions;
}

export interface Suite {
  /** One URL per listener, by service name. */
  readonly urls: Readonly<Record<string, string[]>>;
  readonly state: State;
  readonly metrics: Metrics;
  /** What is wrong right now (/healthz, makewaves status); services report into it. */
  readonly health: Health;
  /** The durable outbound mail queue, when `smtp` is configured (for form handlers and lists). */
  readonly mail: MailSubmitter | undefined;
  /** Mailing lists, when `smtp` is configured. */
  readonly lists: Lists | undefined;
  /** The root handler launcher, when started as root with bubblewrap (it reads the config itself). */
  launcher(): LauncherClient | undefined;
  registry(): Registry;
  /**
   * Loads the config again; true if every service took the new snapshot. False if it was refused, by the
   * config's checks or by a service that cannot take it (the old one keeps serving everywhere), or if a service
   * failed to switch to it after all had prepared it (a fault of ours: health names it, the others serve the new one).
   */
  reload(): boolean;
  stop(graceMs?: number): Promise<void>;
}

/**
 * The composition root: config → registry → state → services. Throws
 * ConfigError for a bad config and a LISTEN_FAILED error (naming host:port)
 * when a service cannot start; in both cases nothing is left running.
 */
export async function startSuite(options: SuiteOptions): Promise<Suite> {
  const log = options.log ?? createLogger();
  // Nothing the suite creates is group/world-writable, whoever starts it (the launcher forked next and its runs included).
  guardUmask();
  // Started as root, handlers run with each tenant's own uid through a root launcher that loads the config folder
  // itself: forked first, its load overlaps this process's own (most of a second each with 10,000 tenants).
  const launcher = process.getuid?.() === 0 ? startLauncher(options.configDir, log, options.launcher) : undefined;
  try {
    return await composeSuite(options, log, launcher);
  } catch (err) {
    void launcher?.stop();
    throw err;
  }
}

async function composeSuite(options: SuiteOptions, log: Logger, launcherStarted: LauncherClient | undefined): Promise<Suite> {
  // Tenant files' parsed YAML, kept by their text: in memory (for reloads and the panel's edits) and under <data> between starts.
  const parseCache = sharedParseCache();
  const cacheFile = parseCacheFile(options.configDir);
  if (cacheFile) parseCache.load(cacheFile);
  const config = loadConfig(options.configDir, undefined, parseCache);
  let registry = new Registry(config);
  const runAs = serviceAccount(config.main.user, config.main.group);
  // Started as root, handlers run as each tenant's own uid and must pass through <data> to their scratch folder (never list it).
  const asRoot = process.getuid?.() === 0;
  makeDir(config.main.dataDir, asRoot ? 0o711 : 0o750, { followLink: true });
  if (asRoot && (statSync(config.main.dataDir).mode & 0o001) === 0) chmodSync(config.main.dataDir, (statSync(config.main.dataDir).mode & 0o7777) | 0o001);
  const cacheUnsaved = parseCache.save(cacheFile);
  if (cacheUnsaved) log.warn({ file: path.join(config.main.dataDir, PARSE_CACHE_FILE), why: cacheUnsaved }, 'cannot write the cache of parsed tenant files; the next start parses every file again');
  const tightened = tightenTree(config.main.dataDir);
  if (tightened > 0) log.warn({ dir: config.main.dataDir, tightened }, `took group/world write and world read away from ${tightened} files and folders under ${config.main.dataDir}`);
  // One certificate store for HTTPS (by SNI) and, later, STARTTLS and FTPS.
  const tls = config.main.http.tls;
  const certs = tls ? new CertStore(path.resolve(config.dir, tls.certs), log.child({ svc: 'tls' })) : undefined;
  if (certs && tls?.selfSigned) {
    const made = await certs.ensureSelfSigned(registry, config.main.hostname);
    if (made.length > 0) log.warn({ certs: made }, `wrote self-signed certificates for ${made.join(', ')} (for trying out; put real ones in ${certs.dir})`);
  }
  if (certs) {
    // A domain nothing in the store answers for: its HTTPS handshakes fail until a certificate arrives.
    const bare = [...registry.tenants.values()].flatMap((t) => t.domains).filter((d) => !certs.contextFor(d, registry));
    if (bare.length > 0) {
      const why = config.main.acme ? `no certificate in ${certs.dir} yet (ACME is asked for one)` : `no certificate in ${certs.dir} and no default one`;
      log.warn({ offer: 'https', domains: bare, why }, `HTTPS is off for ${bare.join(', ')}: ${why}`);
    }
  }
  const state = openState(config.main.dataDir);

  const metrics = new Metrics();
  const health = new Health();
  const urls: Record<string, string[]> = {};
  const expiring = certificateExpiry(CERT_WARN_DAYS);
  health.probe(() => [...expiring(certs?.dir, registry), ...diskProblems(config.main.dataDir)]);
  // A listener closed or wedged under a running suite: /healthz 503 naming the service and address (admin answers the asking itself).
  health.probeAsync(() => listenerProblems(Object.fromEntries(Object.entries(urls).filter(([name]) => name !== 'admin'))));
  const services: Service[] = [];
  let mail: MailSubmitter | undefined;
  let lists: Lists | undefined;
  let queueRemover: QueueRemover | undefined;
  // The optional services (and the libraries only they use: smtp-server, mailauth, ftp-srv, ssh2, acme-client)
  // are loaded only when configured: with 10,000 tenants and HTTP alone, module loading was a third of the start.
  if (config.main.smtp) {
    const [{ createMailService }, { createListsService }] = await Promise.all([import('./mail/index.ts'), import('./lists/index.ts')]);
    // Mail hands list mail to the lists service, which sends through mail's queue: the inbox is bound once both exist.
    const inbox: ListInbox = { receive: (msg) => lists!.inbox.receive(msg) };
    state.mailStats.onError = (err) => log.error({ err: err.message }, "could not write the tenants' mail outcomes (the panel's Mail); they are kept for the next write");
    const m = createMailService({ registry, state, log, certs, metrics, health, lists: inbox, journal: state.mailStats });
    services.push(m.service);
    mail = m.submitter;
    queueRemover = { delete: (id) => m.queue.delete(id) };
    lists = createListsService({ registry, state, log, mail, sealer: m.sealer, dmarc: m.dmarc });
    services.push(lists.service);
  }
  const cgi = createCgi({
    registry,
    log,
    mail,
    metrics,
    onSent: (f) => state.forms.add({ ...f, recipients: f.to }),
    // Handlers are spawned after the drop: their sandbox is what the service account can build.
    sandbox: options.sandbox ?? (runAs ? (user) => detectSandbox(user, runAs) : undefined),
    launcherStarted,
  });
  services.push(cgi.service);
  // The launcher reads the config itself (it trusts no view of the server's): one it refused is the operator's to know.
  // Its keeper gone, every handler is refused until a restart: that is said first (a reload asks it nothing). A launcher
  // that ended unasked is started again by its keeper; until it is ready, handler requests wait for it.
  health.probe(() => {
    const launcher = cgi.launcher();
    const ended = launcher?.ended;
    if (ended !== undefined) return [{ key: 'launcher', severity: 'degraded', message: `the handler launcher is gone (${ended}): every handler request is refused until a restart` }];
    const again = launcher?.restarting;
    if (again)
      return [{ key: 'launcher', severity: 'degraded', message: `the handler launcher ended unasked (${again.why}) and is being started again (attempt ${again.attempt}); handler requests wait for it` }];
    const why = launcher?.reloadRefused;
    return why === undefined
      ? []
      : [{ key: 'launcher', severity: 'degraded', message: `the handler launcher refused the new configuration (${why}) and runs handlers by the one it had; fix it and reload` }];
  });
  const listPages: ListPages | undefined = lists?.pages;
  // ACME answers its HTTP-01 challenges through the HTTP service and starts after it (orders need the listener).
  const acme = config.main.acme && certs ? (await import('./acme/index.ts')).createAcmeService({ registry, log, certs, health, metrics }) : undefined;
  let ftp: ReturnType<typeof createFtpService> | undefined;
  // The panel writes tenant files as the CLI does, then takes them in with the same reload as SIGHUP.
  const panel = config.main.panel ? (await import('./panel/index.ts')).createPanel({
        registry,
        state,
        log,
        reload: () => reload(),
        lists: lists?.moderation,
        queue: queueRemover,
        // Uploads go through FTP's jail and quota (bound once the FTP service exists, below); none without `ftp:`.
        webRoot: config.main.ftp
          ? { free: (tenant) => ftp!.webRoot.free(tenant), store: (...args) => ftp!.webRoot.store(...args), storeTree: (...args) => ftp!.webRoot.storeTree(...args) }
          : undefined,
      }) : undefined;
  if (panel) services.push(panel.service);
  const http = createHttpService({ registry, state, log, metrics, certs, gateway: cgi.gateway, lists: listPages, acme: acme?.challenges, panel: panel?.pages });
  services.push(http);
  if (acme) services.push(acme);
  // FTP tells HTTP about every change it makes, so its cache serves the new files at once.
  if (config.main.ftp) {
    ftp = (await import('./ftp/index.ts')).createFtpService({ registry, log, siteChanges: http.siteChanges, certs, metrics, logins: state.ftpLogins });
    services.push(ftp);
  }
  services.push(createJobsService(() => services.flatMap((s) => s.jobs?.() ?? []), log));
  services.push(createAdminService({ registry, metrics, health, log, services: () => services.map((s) => s.name) }));

  const stopFailed = (name: string, err: Error) => log.error({ svc: name, err: err.message }, `${name} failed to stop`);
  // Started as root: every listener is bound as root, but nobody is served before the drop (src/lib/holdconn.ts).
  const hold = runAs ? holdConnections() : undefined;
  const wrapped = services.map((s) => ({
    ...s,
    start: async () => {
      const u = await s.start();
      urls[s.name] = u;
      return u;
    },
    // A start that fails stops the services started: a listener's close waits for every connection it accepted, the
    // held ones too, which its service never saw. They are ended first (after the release, this ends nothing).
    stop: (graceMs: number) => {
      hold?.drop();
      return s.stop(graceMs);
    },
  }));
  let run: RunRecord | undefined;
  try {
    await startAll(wrapped, log, () => {
      if (runAs) {
        // Every listener is bound (ports below 1024 need root); nothing after this point needs root, and the launcher's
        // readiness is awaited after it. What the start created as root under <data> (database, spool, logs) is handed
        // over first. Not <data>/cgi: each tenant's scratch folder belongs to its own uid (the launcher keeps it so).
        const given = giveTree(config.main.dataDir, runAs.uid, runAs.gid, [path.join(config.main.dataDir, 'cgi')]);
        dropPrivileges(runAs.uid, runAs.gid);
        log.info({ user: config.main.user, uid: runAs.uid, gid: runAs.gid, given, held: hold?.held }, `running as ${config.main.user} (${runAs.uid}:${runAs.gid}) from now on`);
        hold?.release();
      }
      // Where this suite is, as bound (a port 0 became the kernel's pick): written as the service user, who removes it at the stop.
      run = recordRun(config.main.dataDir, config.dir, urls, log);
    }, health);
  } catch (err) {
    // A start that failed before the drop serves no one it held.
    hold?.drop();
    forgetRun(config.main.dataDir, run, log);
    state.close();
    throw err;
  }
  log.info({ tenants: registry.tenants.size, config: config.dir }, `serving ${registry.tenants.size} tenants`);

  const reload = (): boolean => {
    // Validated whole first (every file parsed and checked, the registry built): a refusal changes nothing anywhere.
    let next: Registry;
    let pending: string[];
    try {
      next = new Registry(loadConfig(options.configDir, undefined, parseCache));
      // Compared with what is running (the config of the start), not the last reload: undoing a change clears the notice.
      pending = restartOnlyChanges(config.main, next.config.main);
    } catch (err) {
      const problems = err instanceof ConfigError ? err.problems : [(err as Error).message];
      log.error({ problems }, 'configuration change refused; the previous configuration keeps serving');
      metrics.configReloads.inc({ result: 'refused' });
      health.set('config', {
        severity: 'degraded',
        message: `the configuration on disk is refused (the previous one keeps serving): ${problems.join('; ')}`,
      });
      return false;
    }
    // Then applied, all or nothing: every service prepares the snapshot, and only once all can take it does each switch.
    const { applied, failed } = reloadAll(services, next, log, health);
    if (!applied) {
      const names = failed.map((f) => f.service);
      log.error({ refused: names }, `configuration change refused by ${names.join(', ')}; the previous configuration keeps serving everywhere`);
      metrics.configReloads.inc({ result: 'refused' });
      return false;
    }
    if (pending.length > 0) log.warn({ settings: pending }, `makewaves.yaml: ${pending.join(', ')} changed; they take effect on restart (the rest applies now)`);
    registry = next;
    const unsaved = parseCache.save(cacheFile);
    if (unsaved) log.warn({ why: unsaved }, 'cannot write the cache of parsed tenant files; the next start parses every file again');
    if (certs && next.config.main.http.tls?.selfSigned) {
      certs.ensureSelfSigned(next, next.config.main.hostname).catch((err: Error) => log.error({ err: err.message }, 'cannot write self-signed certificates'));
    }
    health.set('config', undefined);
    health.set('restart', pending.length > 0 ? { severity: 'degraded', message: `makewaves.yaml: ${pending.join(', ')} changed since the start; restart to apply` } : undefined);
    if (failed.length > 0) {
      const names = failed.map((f) => f.service);
      log.error({ failed: names }, `configuration reloaded except in ${names.join(', ')}, which failed to switch to it; restart to apply it everywhere`);
      metrics.configReloads.inc({ result: 'failed' });
      return false;
    }
    log.info({ tenants: next.tenants.size }, 'configuration reloaded');
    metrics.configReloads.inc({ result: 'ok' });
    return true;
  };
  const unwatch = options.watch === false ? undefined : await watchConfig(config.dir, () => void reload());

  let stopping: Promise<void> | undefined;
  return {
    urls,
    state,
    metrics,
    health,
    mail,
    lists,
    launcher: () => cgi.launcher(),
    registry: () => registry,
    reload,
    stop(graceMs = 5_000) {
      stopping ??= (async () => {
        await unwatch?.();
        await stopAll(services, graceMs, stopFailed);
        forgetRun(config.main.dataDir, run, log);
        state.close();
      })();
      return stopping;
    },
  };
}

/**
 * The account to drop to after binding, when `user:` is configured and the
 * process is root; undefined when there is nothing to drop (no `user:`, or
 * already running as that user). Throws a clear line when the user or
 * group does not exist or the process is some other unprivileged user.
 */
function serviceAccount(user: string | undefined, group: string | undefined): { uid: number; gid: number } | undefined {
  if (!user) return undefined;
  const account = resolveServiceUser(user, group);
  const uid = process.getuid?.();
  if (uid === 0) {
    if (account.uid === 0) throw new Error(`user: ${user} is root; name an unprivileged account to run as`);
    return account;
  }
  if (uid === account.uid) return undefined;
  throw new Error(
    `user: ${user} is configured, but makewaves runs as uid ${uid}, neither root nor ${user}: start it as root (it binds its ports, then becomes ${user}) or as ${user}`,
  );
}

/** Writes the run file (core/runfile.ts); a suite that cannot serves all the same, and the log says what status then cannot do. */
function recordRun(dataDir: string, configDir: string, urls: Record<string, string[]>, log: Logger): RunRecord | undefined {
  try {
    const run = writeRunFile(dataDir, configDir, urls);
    log.debug({ file: runFileOf(dataDir), admin: run.admin }, 'run file written');
    return run;
  } catch (err) {
    log.warn({ file: runFileOf(dataDir), err: (err as Error).message }, 'cannot write the run file; makewaves status finds this server by admin.listen alone');
    return undefined;
  }
}

/** Removes the run file this suite wrote, if it still holds what it wrote (a suite started since on the same data folder keeps its own). */
function forgetRun(dataDir: string, run: RunRecord | undefined, log: Logger): void {
  if (!run) return;
  try {
    removeRunFile(dataDir, run);
  } catch (err) {
    log.warn({ file: runFileOf(dataDir), err: (err as Error).message }, 'cannot remove the run file; makewaves status will find it stale (its pid gone)');
  }
}

/** Where the parse cache persists (`<data>/config-cache.json`); none while makewaves.yaml is refused (loadConfig then names every problem). */
function parseCacheFile(configDir: string): string | undefined {
  try {
    return path.join(path.resolve(configDir, loadMainConfig(configDir).data), PARSE_CACHE_FILE);
  } catch (err) {
    if (err instanceof ConfigError) return undefined;
    throw err;
  }
}

/**
 * `makewaves serve`: starts the suite and owns the process signals.
 * SIGTERM/SIGINT drain within `graceMs` and exit 0; SIGHUP reloads config.
 * Resolves with the process exit code.
 */
export async function runServer(configDir: string, graceMs = 5_000): Promise<number> {
  // Before any full collection of the start can free the tick object's class (lib/memory.ts says why).
  keepTickShape();
  const log = createLogger();
  // Owned from the first moment: a stop or a reload asked for while the suite starts (its HTTP listener may
  // already answer) is carried out as soon as the start is over, never the signal's default (ending the process).
  let stopNow: ((signal: string) => void) | undefined;
  let reloadNow: (() => void) | undefined;
  let stopAsked: string | undefined;
  let reloadAsked = false;
  const onStop = (signal: string) => {
    if (stopNow) return stopNow(signal);
    if (stopAsked) return;
    stopAsked = signal;
    // A start that never ends (a launcher that never becomes ready) must not hold a stop forever.
    setTimeout(() => {
      log.fatal({ signal }, `${signal} during the start, which did not finish within ${graceMs + 5_000} ms; exiting`);
      log.flush();
      process.exit(1);
    }, graceMs + 5_000).unref();
  };
  const onTerm = () => onStop('SIGTERM');
  const onInt = () => onStop('SIGINT');
  const onHup = () => (reloadNow ? reloadNow() : (reloadAsked = true));
  process.once('SIGTERM', onTerm);
  process.once('SIGINT', onInt);
  process.on('SIGHUP', onHup);
  let suite: Suite;
  try {
    suite = await startSuite({ configDir, log });
  } catch (err) {
    process.removeListener('SIGTERM', onTerm);
    process.removeListener('SIGINT', onInt);
    process.removeListener('SIGHUP', onHup);
    const msg = err instanceof ConfigError ? err.message : (err as Error).message;
    log.fatal(msg);
    log.flush();
    process.stderr.write(`makewaves: ${msg}\n`);
    return 1;
  }
  // What the start used once (every tenant file read and checked) is given back a few seconds later: V8 returns
  // its spare pages only once allocation has calmed down (collected at once, nothing is returned).
  const stopCompacting = compactAfterStart((before, after) =>
    log.debug({ rssMiB: Math.round(after / 1048576), wasMiB: Math.round(before / 1048576) }, 'start-up garbage collected'),
  );
  return new Promise<number>((resolve) => {
    const shutdown = (signal: string) => {
      log.info({ signal }, `${signal}: stopping (grace ${graceMs} ms)`);
      const hard = setTimeout(() => {
        log.error('graceful stop overran its deadline; exiting');
        resolve(1);
      }, graceMs + 5_000);
      hard.unref();
      void suite.stop(graceMs).then(() => {
        clearTimeout(hard);
        stopCompacting();
        log.info('stopped');
        log.flush();
        resolve(0);
      });
    };
    reloadNow = () => {
      log.info('SIGHUP: reloading configuration');
      suite.reload();
    };
    stopNow = shutdown;
    if (stopAsked) shutdown(stopAsked);
    else if (reloadAsked) reloadNow();
  });
}
