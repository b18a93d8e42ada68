import { Command } from 'commander';
import path from 'node:path';
import { hashPasswordCommand } from '../commands/hash-password.ts';
import { init } from '../commands/init.ts';
import { panelAudit } from '../commands/panel.ts';
import { passwd } from '../commands/passwd.ts';
import { tenantAdd, tenantList, tenantResume, tenantShow, tenantSuspend } from '../commands/tenant.ts';
import { tenantRemove, tenantRestore } from '../commands/tenant-archive.ts';
import { ftpUserRemove, tenantDomain, tenantQuota } from '../commands/tenant-edit.ts';
import { configDirOf, globalConfig, type Outcome } from './shared.ts';

/** The hash-password, passwd, tenant, panel, init verbs. */
export function registerTenants(program: Command, out: Outcome): void {
  program
    .command('hash-password')
    .description("read a password on stdin and print its scrypt hash (for a tenant file's ftp[].password, or a panel operator under panel.admins)")
    .action(async () => {
      out.code = await hashPasswordCommand();
    });

  program
    .command('passwd')
    .description('set the FTP password of user@tenant (read on stdin) in the tenant\'s file, keeping its comments')
    .argument('<login>', 'user@<tenant id>; the user is added if the tenant has none of that name')
    .option('-c, --config <dir>', 'config folder')
    .option('--remove', 'remove the FTP user instead (its password and SFTP keys); nothing is read on stdin')
    .action(async (login: string, opts: { config?: string; remove?: boolean }) => {
      out.code = opts.remove ? ftpUserRemove(configDirOf(opts.config), login) : await passwd(login, configDirOf(opts.config));
    });

  const tenant = program.command('tenant').description("add, list, show, change (domain, quota), suspend, resume and remove tenants (each change is picked up by the running server's reload)");
  tenant.option('-c, --config <dir>', 'config folder');
  tenant
    .command('add <id>')
    .description('add a tenant: writes tenants/<id>.yaml and creates its web root with a welcome page')
    .requiredOption('-d, --domain <domain>', 'a domain of the tenant (repeat for more)', (v: string, prev: string[] = []) => [...prev, v])
    .option('-q, --quota <size>', 'disk quota of its web root (512KiB, 10MB, ...)')
    .action(function (this: Command, id: string, opts: { domain: string[]; quota?: string }) {
      out.code = tenantAdd(globalConfig(this), id, { domains: opts.domain, quota: opts.quota });
    });
  const domain = tenant.command('domain').description("a tenant's domains (domains: in its file, comments kept)");
  for (const verb of ['add', 'remove'] as const) {
    domain
      .command(`${verb} <id> <domain>`)
      .description(verb === 'add' ? 'add a domain (refused if another tenant has it)' : 'remove a domain (not the last one)')
      .action(function (this: Command, id: string, d: string) {
        out.code = tenantDomain(globalConfig(this), verb, id, d);
      });
  }
  tenant
    .command('quota <id> <size>')
    .description('set the disk quota of its web root (512KiB, 10MB, ...), or "none" to lift it')
    .action(function (this: Command, id: string, size: string) {
      out.code = tenantQuota(globalConfig(this), id, size);
    });
  tenant
    .command('list')
    .description('every tenant: domains, disk used / quota, traffic this month, FTP users, aliases, lists')
    .action(async function (this: Command) {
      out.code = await tenantList(globalConfig(this));
    });
  tenant
    .command('show <id>')
    .description('everything about one tenant')
    .action(async function (this: Command, id: string) {
      out.code = await tenantShow(globalConfig(this), id);
    });
  tenant
    .command('suspend <id>')
    .description('suspend a tenant: HTTP 503 on every path, FTP logins refused, its mail waits (450)')
    .option('-r, --reason <text>', 'why (kept in the tenant file for operators; never shown to visitors)')
    .action(function (this: Command, id: string, opts: { reason?: string }) {
      out.code = tenantSuspend(globalConfig(this), id, opts.reason);
    });
  tenant
    .command('resume <id>')
    .description('lift a suspension')
    .action(function (this: Command, id: string) {
      out.code = tenantResume(globalConfig(this), id);
    });
  tenant
    .command('remove <id>')
    .description('take a tenant off line and out of every service: its file, web root, logs, state rows and queued mail move to <data>/archive/<id>-<time>/')
    .option('-y, --yes', 'really remove it')
    .action(async function (this: Command, id: string, opts: { yes?: boolean }) {
      out.code = await tenantRemove(globalConfig(this), id, { yes: opts.yes === true });
    });
  tenant
    .command('restore <archive>')
    .description('bring back a removed tenant from its archive (a path, or a folder name under <data>/archive/)')
    .action(function (this: Command, archive: string) {
      out.code = tenantRestore(globalConfig(this), archive);
    });

  const panel = program.command('panel').description("the control panel of customers and operators (panel: in makewaves.yaml)");
  panel
    .command('audit')
    .description('what customers and operators did in the panel: when, from where, who, what, on which tenant (oldest first)')
    .option('-c, --config <dir>', 'config folder')
    .option('--tenant <id>', 'only this tenant')
    .option('--limit <n>', 'the newest N entries', '100')
    .action(function (this: Command, opts: { tenant?: string; limit: string }) {
      out.code = panelAudit(globalConfig(this), { tenant: opts.tenant, limit: Number(opts.limit) });
    });

  program
    .command('init')
    .description('create <data> and <sites> with the ownership and modes the service user needs (run as root)')
    .option('-c, --config <dir>', 'config folder')
    .action((opts: { config?: string }) => {
      out.code = init(configDirOf(opts.config));
    });

}
