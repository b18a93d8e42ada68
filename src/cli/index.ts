import path from 'node:path';
import { Command, CommanderError } from 'commander';
import { isConfigDir } from '../core/config/load.ts';
import { packageRoot } from '../lib/paths.ts';
import { check } from './commands/check.ts';
import { DEFAULT_GRACE_DAYS, dkimList, dkimRotate, dnsCheck, dnsSuite, dnsTenant } from './commands/dns.ts';
import { forms, formsRecipients } from './commands/forms.ts';
import { ftpLocks, ftpUnlock, sftpFingerprints } from './commands/ftp.ts';
import { listAdd, listCreate, listDelete, listHeld, listMembers, listModerate, listRemove, listSet } from './commands/list.ts';
import { queueControl, queueList } from './commands/queue.ts';
import { hashPasswordCommand } from './commands/hash-password.ts';
import { init } from './commands/init.ts';
import { panelAudit } from './commands/panel.ts';
import { passwd } from './commands/passwd.ts';
import { aliasAdd, aliasCatchAll, aliasRemove, tenantAdd, tenantList, tenantResume, tenantShow, tenantSuspend } from './commands/tenant.ts';
import { tenantRemove, tenantRestore } from './commands/tenant-archive.ts';

/** The bundled example config, used when the current folder has none. */
const BUNDLED = path.join(packageRoot(), 'config');

function configDirOf(opt: string | undefined): string {
  if (opt) return path.resolve(opt);
  const local = path.resolve('config');
  return isConfigDir(local) ? local : BUNDLED;
}

/** Runs the CLI with `argv` (without node and script); resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  let code = 0;
  const program = new Command()
    .name('makewaves')
    .description('Shared hosting in one process: web, FTP, mail and forms for many tenants.')
    .option('--verbose', 'print the cause chain of errors')
    .exitOverride();

  program
    .command('serve')
    .description('serve the tenants of a config folder')
    .option('-c, --config <dir>', 'config folder (default: ./config, else the bundled example)')
    .action(async (opts: { config?: string }) => {
      const { runServer } = await import('../main.ts');
      code = await runServer(configDirOf(opts.config));
    });

  program
    .command('check')
    .description('validate a config folder: prints every problem with file and key; exit 1 if any')
    .option('-c, --config <dir>', 'config folder')
    .action((opts: { config?: string }) => {
      code = check(configDirOf(opts.config));
    });

  program
    .command('status')
    .description("summary of the running server, from its admin listener (admin.listen)")
    .option('-c, --config <dir>', 'config folder')
    .action(async (opts: { config?: string }) => {
      const { status } = await import('./commands/status.ts');
      code = await status(configDirOf(opts.config));
    });

  program
    .command('certs')
    .description('each tenant domain: certificate source (acme, file, self-signed), issuer, not-after, next renewal, last ACME error')
    .option('-c, --config <dir>', 'config folder')
    .action(async (opts: { config?: string }) => {
      const { certs } = await import('./commands/certs.ts');
      code = certs(configDirOf(opts.config));
    });

  const globalConfig = (cmd: Command) => configDirOf(cmd.optsWithGlobals<{ config?: string }>().config);
  const formsCmd = program
    .command('forms')
    .description("list the form submissions a tenant's handlers mailed (oldest first), with each one's delivery")
    .argument('<tenant>', 'tenant id')
    .option('-c, --config <dir>', 'config folder')
    .option('-n, --limit <n>', 'how many of the latest to show', '50')
    .option('--full', 'print each message text too')
    .action((tenant: string, opts: { config?: string; limit: string; full?: boolean }) => {
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1) throw new Error(`--limit must be a positive whole number, not "${opts.limit}"`);
      code = forms(configDirOf(opts.config), tenant, { limit, full: opts.full === true });
    });
  const recipients = formsCmd.command('recipients').description("the addresses a tenant's form handlers may mail (forms.recipients in its file, comments kept)");
  for (const verb of ['set', 'add', 'remove'] as const) {
    recipients
      .command(`${verb} <tenant> <addresses...>`)
      .description({ set: 'replace the recipients with these', add: 'add these recipients', remove: 'remove these recipients' }[verb])
      .action(function (this: Command, tenant: string, addresses: string[]) {
        code = formsRecipients(globalConfig(this), verb, tenant, addresses);
      });
  }

  const queue = program
    .command('queue')
    .description('list the outbound mail queue (id, age, sender, recipients, attempts, last reply)')
    .option('-c, --config <dir>', 'config folder')
    .action((opts: { config?: string }) => {
      code = queueList(configDirOf(opts.config));
    });
  queue
    .command('flush')
    .description('make the running server try every queued message now')
    .option('-c, --config <dir>', 'config folder')
    .action(async (opts: { config?: string }) => {
      code = await queueControl(configDirOf(opts.config ?? queue.opts<{ config?: string }>().config), 'flush');
    });
  queue
    .command('delete <id>')
    .description('remove a message from the running server\'s queue')
    .option('-c, --config <dir>', 'config folder')
    .action(async (id: string, opts: { config?: string }) => {
      code = await queueControl(configDirOf(opts.config ?? queue.opts<{ config?: string }>().config), 'delete', id);
    });

  const list = program.command('list').description('mailing lists: members, imports, held posts (LIST is the posting address, e.g. news@example.test)');
  const listConfig = (opts: { config?: string }) => configDirOf(opts.config ?? list.opts<{ config?: string }>().config);
  list.option('-c, --config <dir>', 'config folder');
  list
    .command('members <list>')
    .description('print the members: address, single or digest, enabled or disabled by bounces, bounce score')
    .option('-c, --config <dir>', 'config folder')
    .action((name: string, opts: { config?: string }) => {
      code = listMembers(listConfig(opts), name);
    });
  list
    .command('add <address> <list>')
    .description('subscribe an address: a confirmation request through the running server, or at once with --no-confirm (imports)')
    .option('-c, --config <dir>', 'config folder')
    .option('--no-confirm', 'add without asking the address (the operator vouches for it)')
    .option('--digest', 'one digest a day instead of every post')
    .action(async (address: string, name: string, opts: { config?: string; confirm: boolean; digest?: boolean }) => {
      code = await listAdd(listConfig(opts), address, name, { confirm: opts.confirm, digest: opts.digest === true });
    });
  list
    .command('remove <address> <list>')
    .description('unsubscribe an address at once')
    .option('-c, --config <dir>', 'config folder')
    .action((address: string, name: string, opts: { config?: string }) => {
      code = listRemove(listConfig(opts), address, name);
    });
  list
    .command('create <list>')
    .description('create a list (mail.lists.<name> in the tenant file of its domain, comments kept)')
    .requiredOption('--owner <address>', 'who gets held posts and notices')
    .option('--posting <policy>', 'open | members | moderated (default members)')
    .option('--archive', 'keep posts for the web archive')
    .action(function (this: Command, name: string, opts: { owner: string; posting?: string; archive?: boolean }) {
      code = listCreate(globalConfig(this), name, opts);
    });
  list
    .command('set <list>')
    .description("change a list's owner or posting policy")
    .option('--owner <address>', 'new owner')
    .option('--posting <policy>', 'open | members | moderated')
    .action(function (this: Command, name: string, opts: { owner?: string; posting?: string }) {
      code = listSet(globalConfig(this), name, opts);
    });
  list
    .command('delete <list>')
    .description('delete a list: out of the tenant file, its members, held posts and archive archived as JSON under <data>/archive/')
    .option('-y, --yes', 'really delete it')
    .action(function (this: Command, name: string, opts: { yes?: boolean }) {
      code = listDelete(globalConfig(this), name, { yes: opts.yes === true });
    });
  for (const verb of ['approve', 'reject'] as const) {
    list
      .command(`${verb} <list> <id>`)
      .description(verb === 'approve' ? 'post a held post (ID from list held) to the list, through the running server' : 'drop a held post; the poster is told')
      .action(async function (this: Command, name: string, id: string) {
        code = await listModerate(globalConfig(this), name, id, verb === 'approve');
      });
  }
  list
    .command('held <list>')
    .description('print the posts waiting for the owner\'s approval')
    .option('-c, --config <dir>', 'config folder')
    .action((name: string, opts: { config?: string }) => {
      code = listHeld(listConfig(opts), name);
    });

  program
    .command('hash-password')
    .description('read a password on stdin and print its scrypt hash (for a tenant file\'s ftp[].password)')
    .action(async () => {
      code = await hashPasswordCommand();
    });

  program
    .command('passwd')
    .description('set the FTP password of user@tenant (read on stdin) in the tenant\'s file, keeping its comments')
    .argument('<login>', 'user@<tenant id>; the user is added if the tenant has none of that name')
    .option('-c, --config <dir>', 'config folder')
    .action(async (login: string, opts: { config?: string }) => {
      code = await passwd(login, configDirOf(opts.config));
    });

  const cfg = (cmd: Command) => configDirOf(cmd.optsWithGlobals<{ config?: string }>().config);
  const tenant = program.command('tenant').description("add, list, show, suspend, resume and remove tenants (each change is picked up by the running server's reload)");
  tenant.option('-c, --config <dir>', 'config folder');
  tenant
    .command('add <id>')
    .description('add a tenant: writes tenants/<id>.yaml and creates its web root with a welcome page')
    .requiredOption('-d, --domain <domain>', 'a domain of the tenant (repeat for more)', (v: string, prev: string[] = []) => [...prev, v])
    .option('-q, --quota <size>', 'disk quota of its web root (512KiB, 10MB, ...)')
    .action(function (this: Command, id: string, opts: { domain: string[]; quota?: string }) {
      code = tenantAdd(cfg(this), id, { domains: opts.domain, quota: opts.quota });
    });
  tenant
    .command('list')
    .description('every tenant: domains, disk used / quota, traffic this month, FTP users, aliases, lists')
    .action(async function (this: Command) {
      code = await tenantList(cfg(this));
    });
  tenant
    .command('show <id>')
    .description('everything about one tenant')
    .action(async function (this: Command, id: string) {
      code = await tenantShow(cfg(this), id);
    });
  tenant
    .command('suspend <id>')
    .description('suspend a tenant: HTTP 503 on every path, FTP logins refused, its mail waits (450)')
    .option('-r, --reason <text>', 'why (kept in the tenant file for operators; never shown to visitors)')
    .action(function (this: Command, id: string, opts: { reason?: string }) {
      code = tenantSuspend(cfg(this), id, opts.reason);
    });
  tenant
    .command('resume <id>')
    .description('lift a suspension')
    .action(function (this: Command, id: string) {
      code = tenantResume(cfg(this), id);
    });
  tenant
    .command('remove <id>')
    .description('take a tenant off line and out of every service: its file, web root, logs, state rows and queued mail move to <data>/archive/<id>-<time>/')
    .option('-y, --yes', 'really remove it')
    .action(async function (this: Command, id: string, opts: { yes?: boolean }) {
      code = await tenantRemove(cfg(this), id, { yes: opts.yes === true });
    });
  tenant
    .command('restore <archive>')
    .description('bring back a removed tenant from its archive (a path, or a folder name under <data>/archive/)')
    .action(function (this: Command, archive: string) {
      code = tenantRestore(cfg(this), archive);
    });

  const alias = program.command('alias').description("mail forwards of a tenant's domains (mail.forward in its file, comments kept)");
  alias.option('-c, --config <dir>', 'config folder');
  alias
    .command('add <address> <targets...>')
    .description('forward local@domain to the targets (added to any it has)')
    .action(function (this: Command, address: string, targets: string[]) {
      code = aliasAdd(cfg(this), address, targets);
    });
  alias
    .command('catchall <domain> [target]')
    .description("where mail for any other address of the tenant's domains goes (mail.catchAll); --remove to drop it")
    .option('--remove', 'remove the catch-all')
    .action(function (this: Command, domain: string, target: string | undefined, opts: { remove?: boolean }) {
      code = aliasCatchAll(cfg(this), domain, target, { remove: opts.remove === true });
    });
  alias
    .command('remove <address>')
    .description('remove the forward of local@domain')
    .action(function (this: Command, address: string) {
      code = aliasRemove(cfg(this), address);
    });

  const ftp = program.command('ftp').description('FTP login locks (counted per login and address, kept in the state database)');
  ftp.option('-c, --config <dir>', 'config folder');
  ftp
    .command('locks')
    .description('list the login locks in force: login, address, minutes left')
    .option('-c, --config <dir>', 'config folder')
    .action(function (this: Command) {
      code = ftpLocks(globalConfig(this));
    });
  ftp
    .command('unlock <user>')
    .description('lift every lock of a login (user@tenant) and forget its failures; the running server sees it at once')
    .option('-c, --config <dir>', 'config folder')
    .action(function (this: Command, user: string) {
      code = ftpUnlock(globalConfig(this), user);
    });

  const panel = program.command('panel').description("the customers' control panel (panel: in makewaves.yaml)");
  panel
    .command('audit')
    .description('what customers did in the panel: when, from where, who, what, on which tenant (oldest first)')
    .option('-c, --config <dir>', 'config folder')
    .option('--tenant <id>', 'only this tenant')
    .option('--limit <n>', 'the newest N entries', '100')
    .action(function (this: Command, opts: { tenant?: string; limit: string }) {
      code = panelAudit(globalConfig(this), { tenant: opts.tenant, limit: Number(opts.limit) });
    });

  const sftp = program.command('sftp').description('SFTP host keys');
  sftp
    .command('fingerprints')
    .description("print the SFTP host keys' SHA256 fingerprints (as ssh-keygen -lf does), for customers to check at their first login")
    .option('-c, --config <dir>', 'config folder')
    .action(function (this: Command) {
      code = sftpFingerprints(globalConfig(this));
    });

  program
    .command('dns [tenant]')
    .description("the DNS records to publish, in zone-file form: a tenant's (MX, SPF, DKIM, DMARC for each of its domains) or, without one, this server's own")
    .option('-c, --config <dir>', 'config folder')
    .option('--check', "look the tenant's records up through the configured resolver (dns:) and say which are missing or wrong; exit 1 if any")
    .action(async (tenantId: string | undefined, opts: { config?: string; check?: boolean }) => {
      const dir = configDirOf(opts.config);
      if (opts.check && !tenantId) throw new Error('--check needs a tenant: makewaves dns --check TENANT');
      code = opts.check ? await dnsCheck(dir, tenantId!) : tenantId ? await dnsTenant(dir, tenantId) : await dnsSuite(dir);
    });

  const dkim = program.command('dkim').description('DKIM keys the suite signs its own mail with (one pair per domain, under <data>/dkim/)');
  dkim.option('-c, --config <dir>', 'config folder');
  dkim
    .command('list [domain]')
    .description('every key: domain, selector, algorithm, made, signing or retired (and until when it stays published)')
    .action(function (this: Command, domain: string | undefined) {
      code = dkimList(globalConfig(this), domain);
    });
  dkim
    .command('rotate <domain>')
    .description('new keys (new selectors) for a tenant domain or the host name; the old ones stop signing and stay published for the grace period')
    .option('--grace <days>', 'days the old keys stay published', String(DEFAULT_GRACE_DAYS))
    .action(async function (this: Command, domain: string, opts: { grace: string }) {
      code = await dkimRotate(globalConfig(this), domain, Number(opts.grace));
    });

  program
    .command('init')
    .description('create <data> and <sites> with the ownership and modes the service user needs (run as root)')
    .option('-c, --config <dir>', 'config folder')
    .action((opts: { config?: string }) => {
      code = init(configDirOf(opts.config));
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    process.stderr.write(`makewaves: ${(err as Error).message}\n`);
    if (program.opts().verbose) process.stderr.write(`${(err as Error).stack ?? ''}\n`);
    return 1;
  }
  return code;
}
