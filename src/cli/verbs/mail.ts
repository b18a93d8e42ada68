import { Command } from 'commander';
import { arcRotate, DEFAULT_GRACE_DAYS, dkimList, dkimRotate, dnsCheck, dnsSuite, dnsTenant } from '../commands/dns.ts';
import { forms, formsRecipients } from '../commands/forms.ts';
import { listAdd, listCreate, listDelete, listHeld, listMembers, listModerate, listRemove, listSet } from '../commands/list.ts';
import { queueControl, queueList } from '../commands/queue.ts';
import { aliasAdd, aliasCatchAll, aliasRemove } from '../commands/tenant.ts';
import { configDirOf, globalConfig, type Outcome } from './shared.ts';

/** The forms, queue, list, alias, dns, dkim verbs. */
export function registerMail(program: Command, out: Outcome): void {
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
      out.code = forms(configDirOf(opts.config), tenant, { limit, full: opts.full === true });
    });
  const recipients = formsCmd.command('recipients').description("the addresses a tenant's form handlers may mail (forms.recipients in its file, comments kept)");
  for (const verb of ['set', 'add', 'remove'] as const) {
    recipients
      .command(`${verb} <tenant> <addresses...>`)
      .description({ set: 'replace the recipients with these', add: 'add these recipients', remove: 'remove these recipients' }[verb])
      .action(function (this: Command, tenant: string, addresses: string[]) {
        out.code = formsRecipients(globalConfig(this), verb, tenant, addresses);
      });
  }

  const queue = program
    .command('queue')
    .description('list the outbound mail queue (id, age, sender, recipients, attempts, last reply)')
    .option('-c, --config <dir>', 'config folder')
    .action((opts: { config?: string }) => {
      out.code = queueList(configDirOf(opts.config));
    });
  queue
    .command('flush')
    .description('make the running server try every queued message now')
    .option('-c, --config <dir>', 'config folder')
    .action(async (opts: { config?: string }) => {
      out.code = await queueControl(configDirOf(opts.config ?? queue.opts<{ config?: string }>().config), 'flush');
    });
  queue
    .command('delete <id>')
    .description('remove a message from the running server\'s queue')
    .option('-c, --config <dir>', 'config folder')
    .action(async (id: string, opts: { config?: string }) => {
      out.code = await queueControl(configDirOf(opts.config ?? queue.opts<{ config?: string }>().config), 'delete', id);
    });

  const list = program.command('list').description('mailing lists: members, imports, held posts (LIST is the posting address, e.g. news@example.test)');
  const listConfig = (opts: { config?: string }) => configDirOf(opts.config ?? list.opts<{ config?: string }>().config);
  list.option('-c, --config <dir>', 'config folder');
  list
    .command('members <list>')
    .description('print the members: address, single or digest, enabled or disabled by bounces, bounce score')
    .option('-c, --config <dir>', 'config folder')
    .action((name: string, opts: { config?: string }) => {
      out.code = listMembers(listConfig(opts), name);
    });
  list
    .command('add <address> <list>')
    .description('subscribe an address: a confirmation request through the running server, or at once with --no-confirm (imports)')
    .option('-c, --config <dir>', 'config folder')
    .option('--no-confirm', 'add without asking the address (the operator vouches for it)')
    .option('--digest', 'one digest a day instead of every post')
    .action(async (address: string, name: string, opts: { config?: string; confirm: boolean; digest?: boolean }) => {
      out.code = await listAdd(listConfig(opts), address, name, { confirm: opts.confirm, digest: opts.digest === true });
    });
  list
    .command('remove <address> <list>')
    .description('unsubscribe an address at once')
    .option('-c, --config <dir>', 'config folder')
    .action((address: string, name: string, opts: { config?: string }) => {
      out.code = listRemove(listConfig(opts), address, name);
    });
  list
    .command('create <list>')
    .description('create a list (mail.lists.<name> in the tenant file of its domain, comments kept)')
    .requiredOption('--owner <address>', 'who gets held posts and notices')
    .option('--posting <policy>', 'open | members | moderated (default members)')
    .option('--archive', 'keep posts for the web archive')
    .action(function (this: Command, name: string, opts: { owner: string; posting?: string; archive?: boolean }) {
      out.code = listCreate(globalConfig(this), name, opts);
    });
  list
    .command('set <list>')
    .description("change a list's owner or posting policy")
    .option('--owner <address>', 'new owner')
    .option('--posting <policy>', 'open | members | moderated')
    .action(function (this: Command, name: string, opts: { owner?: string; posting?: string }) {
      out.code = listSet(globalConfig(this), name, opts);
    });
  list
    .command('delete <list>')
    .description('delete a list: out of the tenant file, its members, held posts and archive archived as JSON under <data>/archive/')
    .option('-y, --yes', 'really delete it')
    .action(function (this: Command, name: string, opts: { yes?: boolean }) {
      out.code = listDelete(globalConfig(this), name, { yes: opts.yes === true });
    });
  for (const verb of ['approve', 'reject'] as const) {
    list
      .command(`${verb} <list> <id>`)
      .description(verb === 'approve' ? 'post a held post (ID from list held) to the list, through the running server' : 'drop a held post; the poster is told')
      .action(async function (this: Command, name: string, id: string) {
        out.code = await listModerate(globalConfig(this), name, id, verb === 'approve');
      });
  }
  list
    .command('held <list>')
    .description('print the posts waiting for the owner\'s approval')
    .option('-c, --config <dir>', 'config folder')
    .action((name: string, opts: { config?: string }) => {
      out.code = listHeld(listConfig(opts), name);
    });

  const alias = program.command('alias').description("mail forwards of a tenant's domains (mail.forward in its file, comments kept)");
  alias.option('-c, --config <dir>', 'config folder');
  alias
    .command('add <address> <targets...>')
    .description('forward local@domain to the targets (added to any it has)')
    .action(function (this: Command, address: string, targets: string[]) {
      out.code = aliasAdd(globalConfig(this), address, targets);
    });
  alias
    .command('catchall <domain> [target]')
    .description("where mail for any other address of the tenant's domains goes (mail.catchAll); --remove to drop it")
    .option('--remove', 'remove the catch-all')
    .action(function (this: Command, domain: string, target: string | undefined, opts: { remove?: boolean }) {
      out.code = aliasCatchAll(globalConfig(this), domain, target, { remove: opts.remove === true });
    });
  alias
    .command('remove <address>')
    .description('remove the forward of local@domain')
    .action(function (this: Command, address: string) {
      out.code = aliasRemove(globalConfig(this), address);
    });

  program
    .command('dns [tenant]')
    .description("the DNS records to publish, in zone-file form: a tenant's (MX, SPF, DKIM, DMARC for each of its domains) or, without one, this server's own")
    .option('-c, --config <dir>', 'config folder')
    .option('--check', "look the tenant's records up through the configured resolver (dns:) and say which are missing or wrong; exit 1 if any")
    .action(async (tenantId: string | undefined, opts: { config?: string; check?: boolean }) => {
      const dir = configDirOf(opts.config);
      if (opts.check && !tenantId) throw new Error('--check needs a tenant: makewaves dns --check TENANT');
      out.code = opts.check ? await dnsCheck(dir, tenantId!) : tenantId ? await dnsTenant(dir, tenantId) : await dnsSuite(dir);
    });

  const dkim = program.command('dkim').description('DKIM keys the suite signs its own mail with (one pair per domain, under <data>/dkim/)');
  dkim.option('-c, --config <dir>', 'config folder');
  dkim
    .command('list [domain]')
    .description('every key: domain, selector, algorithm, made, signing or retired (and until when it stays published)')
    .action(function (this: Command, domain: string | undefined) {
      out.code = dkimList(globalConfig(this), domain);
    });
  dkim
    .command('rotate [domain]')
    .description(
      "new keys (new selectors) for a tenant domain or the host name, or with --arc the server's ARC sealing key; the old ones stop signing and stay published for the grace period",
    )
    .option('--arc', 'rotate the key that ARC-seals forwarded mail and list posts (d=<hostname>), not DKIM keys')
    .option('--grace <days>', 'days the old keys stay published', String(DEFAULT_GRACE_DAYS))
    .action(async function (this: Command, domain: string | undefined, opts: { grace: string; arc?: boolean }) {
      if (opts.arc) {
        out.code = await arcRotate(globalConfig(this), domain, Number(opts.grace));
        return;
      }
      if (domain === undefined) throw new Error('which domain? makewaves dkim rotate DOMAIN (or --arc for the ARC sealing key)');
      out.code = await dkimRotate(globalConfig(this), domain, Number(opts.grace));
    });

}
