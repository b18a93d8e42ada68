import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { createLogger } from '../../src/core/log.ts';
import { startSuite, type Suite } from '../../src/main.ts';
import type { SandboxCapabilities } from '../../src/cgi/sandbox.ts';

export interface TestSuiteOptions {
  /** Tenant id → tenant config (an object, written as YAML). */
  tenants: Record<string, Record<string, unknown>>;
  /** Extra keys merged into makewaves.yaml (http.listen etc. default to 127.0.0.1:0). */
  main?: Record<string, unknown>;
  /** Leave the temp folder 0700 (handlers running as another user cannot reach the sites). */
  privateDir?: boolean;
  /** Files to create, relative to the sites folder: `"a.test/index.html": "..."`. */
  files?: Record<string, string | Buffer>;
  /** What the handler sandbox may use (default: what this machine allows). */
  sandbox?: (user: string) => SandboxCapabilities;
}

export interface TestSuite {
  suite: Suite;
  /** The temp folder: config/, sites/, data/ live below it. */
  dir: string;
  configDir: string;
  sitesDir: string;
  dataDir: string;
  /** Base URL of the first HTTP listener. */
  http: string;
  /** URL of the FTP listener (`ftp://127.0.0.1:port`), when `main.ftp` is configured. */
  ftp: string | undefined;
  /** Parsed log lines so far. */
  logs(): Array<Record<string, unknown>>;
  writeTenant(id: string, config: Record<string, unknown> | string): void;
  stop(): Promise<void>;
}

export function writeConfig(dir: string, opts: TestSuiteOptions): { configDir: string; sitesDir: string; dataDir: string } {
  const configDir = path.join(dir, 'config');
  const sitesDir = path.join(dir, 'sites');
  const dataDir = path.join(dir, 'data');
  mkdirSync(path.join(configDir, 'tenants'), { recursive: true });
  mkdirSync(sitesDir, { recursive: true });
  const main = {
    hostname: 'mx.test',
    data: '../data',
    sites: '../sites',
    ...opts.main,
    http: { listen: ['127.0.0.1:0'], ...(opts.main?.http as object | undefined) },
    ...(opts.main?.ftp ? { ftp: { listen: '127.0.0.1:0', ...(opts.main.ftp as object) } } : {}),
  };
  writeFileSync(path.join(configDir, 'makewaves.yaml'), stringify(main));
  for (const [id, t] of Object.entries(opts.tenants)) {
    writeFileSync(path.join(configDir, 'tenants', `${id}.yaml`), stringify(t));
    mkdirSync(path.join(sitesDir, id), { recursive: true });
  }
  for (const [rel, content] of Object.entries(opts.files ?? {})) {
    const file = path.join(sitesDir, rel);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, content);
  }
  return { configDir, sitesDir, dataDir };
}

/** Starts the real suite from a temp config folder, every listener on 127.0.0.1:0. */
export async function startTestSuite(opts: TestSuiteOptions): Promise<TestSuite> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-test-'));
  // mkdtemp makes a 0700 folder; form handlers run as an unprivileged user and must reach the sites below it.
  if (!opts.privateDir) chmodSync(dir, 0o755);
  const { configDir, sitesDir, dataDir } = writeConfig(dir, opts);
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  const log = createLogger({ level: 'debug', destination });
  let suite: Suite;
  try {
    suite = await startSuite({ configDir, log, watch: true, sandbox: opts.sandbox });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
    throw err;
  }
  return {
    suite,
    dir,
    configDir,
    sitesDir,
    dataDir,
    http: suite.urls.http![0]!,
    ftp: suite.urls.ftp?.[0],
    logs: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
    writeTenant(id, config) {
      writeFileSync(path.join(configDir, 'tenants', `${id}.yaml`), typeof config === 'string' ? config : stringify(config));
    },
    async stop() {
      await suite.stop(500);
      rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
    },
  };
}

/** Polls `check` until it returns a truthy value or `ms` pass (no fixed sleeps). */
export async function waitFor<T>(check: () => T | Promise<T>, ms = 5_000, what = 'condition'): Promise<NonNullable<T>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
