import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { loadMainConfig, MAIN_FILE, TENANT_DIR } from '../../core/config/load.ts';
import { giveTree, resolveServiceUser } from '../../lib/users.ts';

/**
 * `makewaves init`: creates `<data>` (0750) and `<sites>` (0755) and, run
 * as root with `user:` configured, gives both trees to that user and group
 * and lets the group read the config folder (0750, files 0640), so the
 * server can start as root, bind, drop to the user and still read, write
 * and reload everything it needs. Safe to run again.
 */
export function init(configDir: string, out: NodeJS.WritableStream = process.stdout): number {
  const main = loadMainConfig(configDir);
  const dataDir = path.resolve(configDir, main.data);
  const sitesDir = path.resolve(configDir, main.sites);
  const isRoot = process.getuid?.() === 0;
  const owner = main.user ? resolveServiceUser(main.user, main.group) : undefined;
  if (owner && !isRoot) throw new Error(`user: ${main.user} is configured, but init must run as root to give it ${dataDir} and ${sitesDir}`);

  mkdirSync(dataDir, { recursive: true, mode: 0o750 });
  chmodSync(dataDir, 0o750);
  mkdirSync(sitesDir, { recursive: true, mode: 0o755 });
  chmodSync(sitesDir, 0o755);
  out.write(`data  ${dataDir} (0750)\nsites ${sitesDir} (0755)\n`);
  if (!owner) {
    out.write(main.user ? '' : 'no user: in makewaves.yaml: the server keeps the user it is started as\n');
    return 0;
  }
  // Not <data>/cgi: root's (the handler launcher keeps its cache there), each tenant's scratch folder its own uid's.
  const n = giveTree(dataDir, owner.uid, owner.gid, [path.join(dataDir, 'cgi')]) + giveTree(sitesDir, owner.uid, owner.gid);
  // The config stays root's to edit; the service group may read it (tenant files hold FTP password hashes).
  const tenants = path.join(configDir, TENANT_DIR);
  mkdirSync(tenants, { recursive: true });
  for (const d of [configDir, tenants]) {
    chownSync(d, 0, owner.gid);
    chmodSync(d, 0o750);
  }
  for (const f of [path.join(configDir, MAIN_FILE), ...readdirSync(tenants).map((n) => path.join(tenants, n))]) {
    if (!lstatSync(f).isFile()) continue;
    chownSync(f, 0, owner.gid);
    chmodSync(f, 0o640);
  }
  out.write(`gave ${n} files and folders under data and sites (those not yet theirs) to ${main.user}:${main.group ?? owner.gid}; the config folder is readable by its group\n`);
  return 0;
}
