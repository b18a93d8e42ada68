import { randomBytes } from 'node:crypto';
import { readFileSync, realpathSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { formatAddress, parseListen } from '../lib/listen.ts';
import { makeDir } from '../lib/modes.ts';
import { writeOwnFile } from '../lib/ownfile.ts';
import { loadMainConfig, MAIN_FILE } from './config/load.ts';
import type { MainConfig } from './config/schema.ts';

/**
 * The run file: where a running suite says where it is (nginx's pid file,
 * Postfix's master.pid), so that `makewaves status` finds its admin listener
 * even on a port the kernel picked (`admin.listen: 127.0.0.1:0`). Written
 * under the data folder once every listener is bound, removed by a clean
 * stop of the suite that wrote it; a crash leaves it behind, and a reader
 * knows it for stale by its pid, which no longer runs.
 */
export const RUN_FILE = path.join('run', 'makewaves.json');

/** The run file of the data folder `dataDir`. */
export const runFileOf = (dataDir: string): string => path.join(dataDir, RUN_FILE);

// Not strict: a newer version may record more; what is read is checked.
const recordSchema = z.object({
  pid: z.number().int().positive(),
  id: z.string().min(1),
  startedAt: z.string(),
  config: z.string().min(1),
  // Bound addresses of a loopback listener (admin.listen may only be loopback): 127.x.y.z:port or [::1]:port.
  admin: z.string().regex(/^(127\.\d+\.\d+\.\d+|\[::1\]):\d{1,5}$/).optional(),
  listeners: z.record(z.string(), z.array(z.string())),
});

/** What the run file holds. */
export type RunRecord = z.infer<typeof recordSchema>;

/**
 * Writes the run file of a suite that has bound its listeners (`urls`: one
 * URL per listener, by service; `admin` among them when configured), mode
 * 0640 in `<data>/run/` (0750): the service user and its group may read it,
 * like the rest of `<data>`. Written whole or not at all (a temporary file
 * renamed over it); a suite started after a crash writes over the stale
 * one. Returns what it wrote (a stop removes the file only if it still
 * holds that). Throws when the folder or the file cannot be written.
 */
export function writeRunFile(dataDir: string, configDir: string, urls: Readonly<Record<string, readonly string[]>>): RunRecord {
  const listeners = Object.fromEntries(Object.entries(urls).filter(([, u]) => u.length > 0).map(([name, u]) => [name, [...u]]));
  const admin = urls.admin?.[0];
  const record: RunRecord = {
    pid: process.pid,
    // A second suite started in the same process (tests do) has the same pid, never the same id.
    id: randomBytes(8).toString('hex'),
    startedAt: new Date().toISOString(),
    config: path.resolve(configDir),
    ...(admin ? { admin: new URL(admin).host } : {}),
    listeners,
  };
  const file = runFileOf(dataDir);
  makeDir(path.dirname(file), 0o750);
  writeOwnFile(file, `${JSON.stringify(record, null, 2)}\n`, process.getuid?.() ?? 0, 0o640);
  return record;
}

/** What {@link readRunFile} found. */
export type RunRead = { ok: true; record: RunRecord } | { ok: false; missing: boolean; why: string };

/** Reads and checks the run file of `dataDir`. Never throws. */
export function readRunFile(dataDir: string): RunRead {
  const file = runFileOf(dataDir);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { ok: false, missing: code === 'ENOENT' || code === 'ENOTDIR', why: `cannot be read (${code ?? (err as Error).message})` };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // Not JSON (a file cut short by a full disk, or someone's edit): said as such, never used.
    return { ok: false, missing: false, why: 'is not JSON' };
  }
  const parsed = recordSchema.safeParse(json);
  return parsed.success ? { ok: true, record: parsed.data } : { ok: false, missing: false, why: 'is not a run file of makewaves' };
}

/**
 * Removes the run file of `dataDir` if it still holds `own` (same pid and
 * start id): never the file of a suite started since on the same data
 * folder. True if it removed it. Throws only when the removal itself fails.
 */
export function removeRunFile(dataDir: string, own: RunRecord): boolean {
  const now = readRunFile(dataDir);
  if (!now.ok || now.record.pid !== own.pid || now.record.id !== own.id) return false;
  try {
    unlinkSync(runFileOf(dataDir));
  } catch (err) {
    // Gone meanwhile: what a removal wanted.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  return true;
}

/** True while process `pid` runs: signal 0 only asks; EPERM is a process of another user, alive too. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The same folder, through symbolic links (`/tmp` and `/private/tmp`), or the same absolute name when one is gone. */
function sameFolder(a: string, b: string): boolean {
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      // Gone or unreadable: its absolute name is all there is to compare.
      return path.resolve(p);
    }
  };
  return real(a) === real(b);
}

/** Where the running suite's admin listener is, and where that came from, in words for the operator. */
export type AdminFound = { ok: true; base: string; from: string } | { ok: false; message: string };

/**
 * Where `makewaves` finds the admin listener of the suite serving
 * `configDir`: the run file first, when its process is alive and serves
 * this config folder (the bound address, the only way to a port the kernel
 * picked); else `admin.listen` of makewaves.yaml. `from` names the source,
 * and a run file passed over (stale, another folder's, unreadable) is named
 * with the reason. `main`: makewaves.yaml, when the caller has read it; read
 * here otherwise (a ConfigError thrown when it is refused).
 */
export function findAdmin(configDir: string, main: MainConfig = loadMainConfig(configDir)): AdminFound {
  const mainFile = path.join(path.resolve(configDir), MAIN_FILE);
  const dataDir = path.resolve(configDir, main.data);
  const file = runFileOf(dataDir);
  const run = readRunFile(dataDir);
  let passed: string;
  if (run.ok) {
    const r = run.record;
    if (!pidAlive(r.pid)) passed = `ignored ${file}: stale, its pid ${r.pid} is not running`;
    else if (!sameFolder(r.config, configDir)) passed = `ignored ${file}: its pid ${r.pid} serves another config folder, ${r.config}`;
    else if (!r.admin) {
      return { ok: false, message: `the server running from ${path.resolve(configDir)} (pid ${r.pid}, by ${file}) has no admin listener; add admin: { listen: "127.0.0.1:8081" } to ${mainFile} and restart it` };
    } else return { ok: true, base: `http://${r.admin}`, from: `${file}, pid ${r.pid}` };
  } else passed = run.missing ? `no ${file}` : `ignored ${file}: it ${run.why}`;
  const spec = main.admin?.listen;
  if (!spec) return { ok: false, message: `no admin listener in ${configDir}/makewaves.yaml (add admin: { listen: "127.0.0.1:8081" })${run.ok || !run.missing ? `; ${passed}` : ''}` };
  const address = parseListen(spec)!;
  if (address.port === 0) {
    return { ok: false, message: `no running server found: admin.listen in ${mainFile} is port 0 (the kernel picks one, and only the run file says which) and ${passed}; is it running?` };
  }
  return { ok: true, base: `http://${formatAddress(address)}`, from: `admin.listen in ${mainFile}; ${passed}` };
}
