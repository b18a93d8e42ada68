import { editDomains, editFtpKey, removeFtpUser, setQuota } from '../../core/tenantfile.ts';
import { formatSize, parseSize } from '../../lib/sizes.ts';

type Out = NodeJS.WritableStream;

/*
 * The verbs for the fields of a tenant file a customer's request changes
 * (domains, quota, FTP users and their SFTP keys). Each goes through
 * core/tenantfile.ts: comments kept, the result checked by the real loader,
 * written whole, so a running server's reload takes it in.
 */

/** `user@<tenant id>` split, or a clear refusal. */
export function parseLogin(login: string): { user: string; tenant: string } {
  const m = /^([a-z0-9][a-z0-9._-]{0,62})@([a-z0-9.-]+)$/.exec(login.toLowerCase());
  if (!m) throw new Error(`"${login}" is not a login of the form user@<tenant id>`);
  return { user: m[1]!, tenant: m[2]! };
}

/** `makewaves tenant domain add|remove ID DOMAIN`. */
export function tenantDomain(configDir: string, verb: 'add' | 'remove', id: string, domain: string, out: Out = process.stdout): number {
  const now = editDomains(configDir, id, verb, domain);
  out.write(`${verb === 'add' ? 'added' : 'removed'} ${domain.trim().toLowerCase()} ${verb === 'add' ? 'to' : 'from'} tenant ${id}: ${now.join(', ')}\n`);
  return 0;
}

/** `makewaves tenant quota ID SIZE|none`. */
export function tenantQuota(configDir: string, id: string, quota: string, out: Out = process.stdout): number {
  if (quota === 'none') {
    setQuota(configDir, id, undefined);
    out.write(`tenant ${id} has no quota now\n`);
    return 0;
  }
  const bytes = parseSize(quota);
  if (bytes === undefined) throw new Error(`"${quota}" is not a size (examples: 1048576, 512KiB, 10MB) nor "none"`);
  setQuota(configDir, id, quota);
  out.write(`tenant ${id}: quota ${formatSize(bytes)}\n`);
  return 0;
}

/** `makewaves passwd --remove user@tenant`: the FTP user goes, with its SFTP keys. */
export function ftpUserRemove(configDir: string, login: string, out: Out = process.stdout): number {
  const { user, tenant } = parseLogin(login);
  removeFtpUser(configDir, tenant, user);
  out.write(`removed FTP user ${user}@${tenant} (password and SFTP keys)\n`);
  return 0;
}

/** `makewaves ftp key add|remove user@tenant KEY`. */
export function ftpKey(configDir: string, verb: 'add' | 'remove', login: string, key: string, out: Out = process.stdout): number {
  const { user, tenant } = parseLogin(login);
  const now = editFtpKey(configDir, tenant, user, verb, key);
  out.write(`${verb === 'add' ? 'added a key to' : 'removed a key from'} ${user}@${tenant}: ${now.length} SFTP key${now.length === 1 ? '' : 's'}\n`);
  return 0;
}
