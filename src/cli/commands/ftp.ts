import { loadConfig } from '../../core/config/load.ts';
import { hostKeyFingerprints } from '../../core/hostkeys.ts';
import { openState } from '../../state/index.ts';

/** A lock's key, for people: `pair:<login>|<ip>`, `account:<login>`, `address:<ip>`. */
function describeKey(key: string): string {
  const [kind, rest = ''] = [key.slice(0, key.indexOf(':')), key.slice(key.indexOf(':') + 1)];
  if (kind === 'pair') {
    const bar = rest.lastIndexOf('|');
    return `${rest.slice(0, bar)}  from ${rest.slice(bar + 1)}`;
  }
  if (kind === 'account') return `${rest}  from any address`;
  return `any login  from ${rest}`;
}

/** `makewaves ftp locks`: the FTP login locks in force (read from state: a running server reads the same). */
export function ftpLocks(configDir: string, out: NodeJS.WritableStream = process.stdout): number {
  const config = loadConfig(configDir);
  const state = openState(config.main.dataDir);
  try {
    const now = Date.now();
    const locks = state.ftpLogins.locks(now);
    for (const l of locks) out.write(`${describeKey(l.key)}  for ${Math.ceil((l.until - now) / 60_000)} more minutes\n`);
    out.write(`${locks.length} lock${locks.length === 1 ? '' : 's'} in force\n`);
    return 0;
  } finally {
    state.close();
  }
}

/**
 * `makewaves ftp unlock USER`: lifts every lock of one login and forgets its
 * failures. The running server checks the state database at every login,
 * so this takes effect at once, with no reload.
 */
export function ftpUnlock(configDir: string, user: string, out: NodeJS.WritableStream = process.stdout): number {
  const login = user.trim().toLowerCase();
  const config = loadConfig(configDir);
  // The panel's operators (panel.admins) log in under the same lockout, by their name alone.
  const operator = Object.hasOwn(config.main.panel?.admins ?? {}, login);
  if (!operator && !/^[^\s@]+@[^\s@]+$/.test(login)) throw new Error(`"${user}" is not an FTP login: give it as user@tenant, e.g. alice@example.test (or an operator name of panel.admins)`);
  const state = openState(config.main.dataDir);
  try {
    const n = state.ftpLogins.unlock(login);
    out.write(n === 0 ? `${login}: no lock in force; its failures are forgotten\n` : `${login}: ${n} lock${n === 1 ? '' : 's'} lifted; its failures are forgotten\n`);
    return 0;
  } finally {
    state.close();
  }
}

/** `makewaves sftp fingerprints`: the SFTP host keys' SHA256 fingerprints, for customers to check at their first login. */
export function sftpFingerprints(configDir: string, out: NodeJS.WritableStream = process.stdout): number {
  const config = loadConfig(configDir);
  const fps = hostKeyFingerprints(config.main.dataDir);
  if (fps.length === 0) {
    out.write(`no SFTP host keys yet under ${config.main.dataDir}/sftp (they are made when the server first starts with sftp: set)\n`);
    return config.main.sftp ? 1 : 0;
  }
  for (const f of fps) out.write(`${f.type}  ${f.fingerprint}\n`);
  return 0;
}
