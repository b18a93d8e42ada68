import { ConfigError, loadConfig } from '../../core/config/load.ts';
import { describeOutcome, openState } from '../../state/index.ts';
import { editFormsRecipients } from '../../core/tenantfile.ts';

/** `makewaves forms <tenant>`: lists the form submissions handlers mailed for a tenant, oldest first. */
export function forms(configDir: string, tenant: string, opts: { limit: number; full: boolean }): number {
  let dataDir: string;
  let known: boolean;
  try {
    const config = loadConfig(configDir);
    dataDir = config.main.dataDir;
    known = config.tenants.some((t) => t.id === tenant);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 1;
    }
    throw err;
  }
  if (!known) {
    process.stderr.write(`makewaves: no tenant "${tenant}" in ${configDir}\n`);
    return 1;
  }
  const state = openState(dataDir);
  try {
    const rows = state.forms.list(tenant, opts.limit);
    if (rows.length === 0) {
      process.stdout.write(`${tenant}: no form submissions\n`);
      return 0;
    }
    for (const r of rows) {
      process.stdout.write(`${r.at}  ${r.remote}  /cgi-bin/${r.handler}  → ${r.recipients.join(', ')}  "${r.subject}"  queue ${r.queueId}  ${describeOutcome(r)}\n`);
      if (opts.full) process.stdout.write(`${r.text.replace(/^/gm, '    ')}\n`);
    }
    return 0;
  } finally {
    state.close();
  }
}


/**
 * `makewaves forms recipients set|add|remove TENANT ADDRESS…`: the
 * tenant's `forms.recipients`, the only addresses its form handlers may
 * mail. Addresses are compared and written in lower case.
 */
export function formsRecipients(configDir: string, verb: 'set' | 'add' | 'remove', tenant: string, addresses: string[], out: NodeJS.WritableStream = process.stdout): number {
  const after = editFormsRecipients(configDir, tenant, verb, addresses);
  out.write(`${tenant}: forms go to ${after.join(', ') || 'nobody (form mail is refused)'}\n`);
  return 0;
}
