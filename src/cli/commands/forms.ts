import { isMap, isSeq } from 'yaml';
import { ConfigError, loadConfig } from '../../core/config/load.ts';
import { openState, type FormSubmission } from '../../state/index.ts';
import { editTenant, loadCurrent } from '../../core/tenantfile.ts';

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
      process.stdout.write(`${r.at}  ${r.remote}  /cgi-bin/${r.handler}  → ${r.recipients.join(', ')}  "${r.subject}"  queue ${r.queueId}  ${outcome(r)}\n`);
      if (opts.full) process.stdout.write(`${r.text.replace(/^/gm, '    ')}\n`);
    }
    return 0;
  } finally {
    state.close();
  }
}

/** What became of a submission's mail, in a few words. */
function outcome(r: FormSubmission): string {
  if (r.status === 'bounced') return `bounced: ${r.reply ?? 'no reply recorded'}`;
  if (r.status === 'delivered') return 'delivered';
  return r.reply ? `queued (last try: ${r.reply})` : 'queued';
}

/**
 * `makewaves forms recipients set|add|remove TENANT ADDRESS…`: the
 * tenant's `forms.recipients`, the only addresses its form handlers may
 * mail. Addresses are compared and written in lower case.
 */
export function formsRecipients(configDir: string, verb: 'set' | 'add' | 'remove', tenant: string, addresses: string[], out: NodeJS.WritableStream = process.stdout): number {
  if (addresses.length === 0) throw new Error('give at least one address');
  const config = loadCurrent(configDir);
  if (!config.tenants.some((t) => t.id === tenant)) throw new Error(`no tenant "${tenant}" (makewaves tenant list shows them)`);
  const given = addresses.map((a) => a.trim().toLowerCase());
  const after = editTenant(configDir, tenant, (doc) => {
    const node = doc.getIn(['forms', 'recipients'], true);
    const before: string[] = isSeq(node) ? (node.toJSON() as string[]) : [];
    let next: string[];
    if (verb === 'set') next = [...new Set(given)];
    else if (verb === 'add') {
      const dup = given.find((a) => before.includes(a));
      if (dup) throw new Error(`${dup} is already a forms recipient of ${tenant}`);
      next = [...before, ...new Set(given)];
    } else {
      const missing = given.find((a) => !before.includes(a));
      if (missing) throw new Error(`${missing} is not a forms recipient of ${tenant}`);
      next = before.filter((a) => !given.includes(a));
    }
    const seq = doc.createNode(next);
    seq.flow = true;
    if (!isMap(doc.get('forms'))) doc.set('forms', doc.createNode({}));
    // The sequence's own comment (after it on its line) stays with the key.
    if (isSeq(node)) seq.comment = node.comment;
    doc.setIn(['forms', 'recipients'], seq);
    return next;
  });
  out.write(`${tenant}: forms go to ${after.join(', ') || 'nobody (form mail is refused)'}\n`);
  return 0;
}
