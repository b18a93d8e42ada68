import { chmodSync, chownSync, lstatSync, mkdirSync, renameSync, statSync, symlinkSync, writeFileSync, type Stats } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Launcher } from '../../../src/cgi/launcher.ts';
import type { SandboxCapabilities } from '../../../src/cgi/sandbox.ts';
import { createLogger } from '../../../src/core/log.ts';
import { writeConfig } from '../../helpers/suite.ts';
import { tempDirs } from '../../helpers/tmp.ts';

const tmp = tempDirs('makewaves-launcher-race-');
const fs = createRequire(import.meta.url)('node:fs') as typeof import('node:fs');
const real = { lstatSync: fs.lstatSync, fstatSync: fs.fstatSync };
afterEach(() => {
  Object.assign(fs, real);
  syncBuiltinESMExports();
});

const caps: SandboxCapabilities = { permissionFlag: '--permission', box: undefined, refusal: 'no box in this test', nice: undefined, drop: undefined, prlimit: undefined };
const log = createLogger({ level: 'silent' });
const SERVICE = 40_322;
const root = process.getuid?.() === 0;

// The launcher stays root for good; <data> is the service user's, who may at any moment move <data>/cgi (root's, in
// its own folder) aside and put a folder of its own there. The move is made right after the launcher has looked at
// the tenant's scratch folder (by name or on an open file), before it sets the folder's mode and owner.
describe.skipIf(!root)(root ? 'Launcher: a tenant\'s scratch folder repaired as root' : 'Launcher scratch folder (skipped: needs root)', () => {
  it('is changed on what was looked at, never through <data>/cgi swapped for the service user\'s folder meanwhile', () => {
    const dir = tmp();
    const { configDir, dataDir } = writeConfig(dir, { main: { cgi: { uids: '244000-244099' } }, tenants: { 'a.test': { domains: ['a.test'] } } });
    const suiteDir = path.join(dir, 'suite');
    mkdirSync(suiteDir);
    const launcher = new Launcher({ configDir, suiteDir, log, sandbox: () => caps });
    chownSync(dataDir, SERVICE, SERVICE);
    const cgi = path.join(dataDir, 'cgi');
    const scratch = path.join(cgi, 'a.test');
    // A folder that needs repair (a handler opened it up): its mode and owner are set again.
    mkdirSync(scratch, { recursive: true });
    chmodSync(scratch, 0o755);
    const victim = path.join(dir, 'root-only');
    writeFileSync(victim, 'root only\n');
    chmodSync(victim, 0o644);
    let swapped = false;
    const ino = lstatSync(scratch).ino;
    const once = <T,>(st: T): T => {
      if (!swapped && (st as Stats | undefined)?.ino === ino) {
        swapped = true;
        renameSync(cgi, `${cgi}.aside`);
        mkdirSync(cgi);
        chownSync(cgi, SERVICE, SERVICE);
        symlinkSync(victim, scratch);
      }
      return st;
    };
    Object.assign(fs, {
      lstatSync: (...args: Parameters<typeof fs.lstatSync>) => once(real.lstatSync(...args)),
      fstatSync: (...args: Parameters<typeof fs.fstatSync>) => once(real.fstatSync(...args)),
    });
    syncBuiltinESMExports();
    try {
      launcher.repairScratch('a.test');
    } catch {
      // Refusing the run is as good as repairing the folder looked at: what matters is the file the link names.
    }
    Object.assign(fs, real);
    syncBuiltinESMExports();
    expect(swapped).toBe(true);
    const st = statSync(victim);
    expect([st.uid, st.gid, (st.mode & 0o7777).toString(8)]).toEqual([0, 0, '644']);
    const uid = launcher.uidOf('a.test')!;
    const fixed = statSync(path.join(`${cgi}.aside`, 'a.test'));
    expect([fixed.uid, (fixed.mode & 0o7777).toString(8)]).toEqual([uid, '700']);
  });
});
