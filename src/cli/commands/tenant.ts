import { existsSync } from 'node:fs';
import path from 'node:path';
import type { LoadedConfig } from '../../core/config/load.ts';
import { Registry, type Tenant } from '../../core/registry.ts';
import { scanUsage } from '../../lib/du.ts';
import { formatSize, parseSize } from '../../lib/sizes.ts';
import { openState } from '../../state/index.ts';
import { addTenant, resumeTenant, suspendTenant } from '../../core/tenantadmin.ts';
import { addForward, loadCurrent, removeForward, setCatchAll, tenantFile } from '../../core/tenantfile.ts';

type Out = NodeJS.WritableStream;

/** `makewaves tenant add ID --domain D [--domain D2] [--quota SIZE]` (core/tenantadmin.ts `addTenant`, as the panel's operator view). */
export function tenantAdd(configDir: string, id: string, opts: { domains: string[]; quota?: string }, out: Out = process.stdout): number {
  if (opts.domains.length === 0) throw new Error('a tenant needs at least one --domain');
  if (opts.quota !== undefined && parseSize(opts.quota) === undefined) {
    throw new Error(`--quota "${opts.quota}" is not a size (examples: 1048576, 512KiB, 10MB)`);
  }
  const added = addTenant(configDir, id, opts);
  out.write(`added tenant ${id} (${added.domains.join(', ')}${opts.quota ? `, quota ${opts.quota}` : ''}) in ${added.file}\n`);
  out.write(added.created ? `created web root ${added.root} with a welcome page\n` : `kept the existing web root ${added.root}\n`);
  return 0;
}

interface TenantFacts {
  tenant: Tenant;
  used: number;
  monthRequests: number;
  monthBytes: number;
}

async function facts(config: LoadedConfig, tenants: Tenant[]): Promise<TenantFacts[]> {
  // The state file is read only if it exists: a listing must not create it (as root, owned by root).
  const dbFile = path.join(config.main.dataDir, 'makewaves.db');
  const state = existsSync(dbFile) ? openState(config.main.dataDir) : undefined;
  const month = `${new Date().toISOString().slice(0, 7)}-01`;
  try {
    const out: TenantFacts[] = [];
    for (const tenant of tenants) {
      const traffic = state?.traffic.since(tenant.id, month) ?? { requests: 0, bytes: 0 };
      out.push({ tenant, used: await scanUsage(tenant.root), monthRequests: traffic.requests, monthBytes: traffic.bytes });
    }
    return out;
  } finally {
    state?.close();
  }
}

function quotaText(f: TenantFacts): string {
  const q = f.tenant.quota;
  return q === undefined ? `${formatSize(f.used)} / no quota` : `${formatSize(f.used)} / ${formatSize(q)} (${Math.round((f.used / Math.max(q, 1)) * 100)}%)`;
}

function suspension(t: Tenant): string | undefined {
  const s = t.config.suspended;
  if (s === false) return undefined;
  if (s === true) return 'suspended';
  return `suspended${s.since ? ` since ${s.since}` : ''}${s.reason ? `: ${s.reason}` : ''}`;
}

/** `makewaves tenant list`: one block per tenant. */
export async function tenantList(configDir: string, out: Out = process.stdout): Promise<number> {
  const config = loadCurrent(configDir);
  const reg = new Registry(config);
  const all = await facts(config, [...reg.tenants.values()]);
  for (const f of all) {
    const t = f.tenant;
    const mail = t.config.mail;
    out.write(
      `${t.id}${t.suspended ? `  [${suspension(t)}]` : ''}\n` +
        `  domains  ${t.domains.join(', ')}\n` +
        `  disk     ${quotaText(f)}\n` +
        `  traffic  ${f.monthRequests} requests, ${formatSize(f.monthBytes)} this month\n` +
        `  ftp      ${t.config.ftp.map((u) => `${u.user}@${t.id}`).join(', ') || '-'}\n` +
        `  aliases  ${Object.keys(mail?.forward ?? {}).length}${mail?.catchAll ? ' + catch-all' : ''}` +
        `   lists ${Object.keys(mail?.lists ?? {}).join(', ') || '-'}\n`,
    );
  }
  out.write(`${all.length} tenant${all.length === 1 ? '' : 's'}\n`);
  return 0;
}

/** `makewaves tenant show ID`: everything about one tenant. */
export async function tenantShow(configDir: string, id: string, out: Out = process.stdout): Promise<number> {
  const config = loadCurrent(configDir);
  const t = new Registry(config).tenants.get(id);
  if (!t) throw new Error(`no tenant "${id}" (makewaves tenant list shows them)`);
  const [f] = await facts(config, [t]);
  const c = t.config;
  const lines = [
    `tenant   ${t.id}${t.suspended ? `  [${suspension(t)}]` : ''}`,
    `file     ${tenantFile(configDir, id)}`,
    `domains  ${t.domains.join(', ')}`,
    `root     ${t.root}`,
    `disk     ${quotaText(f!)}`,
    `traffic  ${f!.monthRequests} requests, ${formatSize(f!.monthBytes)} this month`,
    `ftp      ${c.ftp.map((u) => `${u.user}@${t.id}`).join(', ') || '-'}`,
  ];
  for (const [local, targets] of Object.entries(c.mail?.forward ?? {})) lines.push(`alias    ${local}@${t.domains[0]} → ${targets.join(', ')}`);
  if (c.mail?.catchAll) lines.push(`catchall *@${t.domains[0]} → ${c.mail.catchAll}`);
  for (const [name, l] of Object.entries(c.mail?.lists ?? {})) lines.push(`list     ${name}@${t.domains[0]} (owner ${l.owner}, posting ${l.posting})`);
  if (c.forms) lines.push(`forms    to ${c.forms.recipients.join(', ') || '-'}`);
  lines.push(`cgi      ${c.cgi ? 'own handlers allowed' : 'suite handlers only'}`);
  for (const p of t.proxy) lines.push(`proxy    ${p.prefix} → ${p.origin}${p.replace ?? ''}`);
  out.write(`${lines.join('\n')}\n`);
  return 0;
}

/** `makewaves tenant suspend ID [--reason TEXT]`. */
export function tenantSuspend(configDir: string, id: string, reason: string | undefined, out: Out = process.stdout): number {
  suspendTenant(configDir, id, reason);
  out.write(`suspended tenant ${id}${reason ? ` (${reason})` : ''}: HTTP answers 503, FTP refuses logins, mail waits with 450\n`);
  return 0;
}

/** `makewaves tenant resume ID`. */
export function tenantResume(configDir: string, id: string, out: Out = process.stdout): number {
  resumeTenant(configDir, id);
  out.write(`resumed tenant ${id}\n`);
  return 0;
}

/** `makewaves alias add local@domain target [target…]`: adds the targets to the tenant's `mail.forward.<local>`. */
export function aliasAdd(configDir: string, address: string, targets: string[], out: Out = process.stdout): number {
  const { tenant, local, targets: now } = addForward(configDir, address, targets);
  const others = tenant.domains.length > 1 ? ` (and @${tenant.domains.slice(1).join(', @')})` : '';
  out.write(`${local}@${tenant.domains[0]}${others} → ${now.join(', ')} (tenant ${tenant.id})\n`);
  return 0;
}

/** `makewaves alias remove local@domain`. */
export function aliasRemove(configDir: string, address: string, out: Out = process.stdout): number {
  const { tenant, local } = removeForward(configDir, address);
  out.write(`removed alias ${local}@${tenant.domains[0]} (tenant ${tenant.id})\n`);
  return 0;
}

/** `makewaves alias catchall DOMAIN TARGET | --remove`: the tenant's `mail.catchAll` (every address of its domains without a forward of its own). */
export function aliasCatchAll(configDir: string, domain: string, target: string | undefined, opts: { remove: boolean }, out: Out = process.stdout): number {
  if (!opts.remove && target === undefined) throw new Error("give the catch-all's target address, or --remove");
  const tenant = new Registry(loadCurrent(configDir)).tenantForHost(domain.toLowerCase());
  if (!tenant) throw new Error(`no tenant has the domain "${domain.toLowerCase()}"`);
  setCatchAll(configDir, tenant.id, opts.remove ? undefined : target!);
  const others = tenant.domains.length > 1 ? ` (and @${tenant.domains.slice(1).join(', @')})` : '';
  out.write(opts.remove ? `removed the catch-all of ${tenant.domains[0]} (tenant ${tenant.id})\n` : `*@${tenant.domains[0]}${others} → ${target!.toLowerCase()} (tenant ${tenant.id})\n`);
  return 0;
}
