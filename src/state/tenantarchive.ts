import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { State } from './index.ts';
import type { QueuedMessage } from './queue.ts';
import { Spool } from './spool.ts';
import { takeOwnedRows, takeTenantRows } from './tenantdata.ts';

/** The domain of an address, lower case. */
const domainOf = (a: string) => a.slice(a.lastIndexOf('@') + 1).toLowerCase();

/**
 * Takes a removed tenant's data out of state into its archive folder: its
 * queued messages (those sent on its behalf, and those addressed to its
 * domains: a bounce to forms@ or a list address), a copy of each (message
 * and envelope) in `mail/` first, each then dropped by `drop` (a running
 * server's queue removes it itself, as it holds its spool file and may be
 * delivering it); then its rows of every table that names a tenant
 * (`state.json`) and what it owns in tables keyed otherwise (`owned.json`).
 * Afterwards nothing in state names the tenant. Returns the queue ids taken.
 * `makewaves tenant remove` and the operator's panel both end here.
 */
export async function archiveTenantState(
  state: State,
  o: { dataDir: string; tenant: string; domains: readonly string[]; archive: string },
  drop: (m: QueuedMessage) => Promise<void>,
): Promise<string[]> {
  const spool = new Spool(path.join(o.dataDir, 'spool'));
  const mine = state.mailQueue.list().filter((m) => m.tenant === o.tenant || state.mailQueue.recipients(m.id).some((r) => o.domains.includes(domainOf(r.rcpt))));
  const taken: string[] = [];
  if (mine.length > 0) {
    const dir = path.join(o.archive, 'mail');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const m of mine) {
      const chunks: Buffer[] = [];
      for await (const c of spool.read(m.file, m.offset, m.size)) chunks.push(c as Buffer);
      writeFileSync(path.join(dir, `${m.id}.eml`), Buffer.concat(chunks), { mode: 0o600 });
      const envelope = { ...m, recipients: state.mailQueue.recipients(m.id) };
      writeFileSync(path.join(dir, `${m.id}.json`), `${JSON.stringify(envelope, null, 1)}\n`, { mode: 0o600 });
      await drop(m);
      taken.push(m.id);
    }
  }
  writeFileSync(path.join(o.archive, 'state.json'), `${JSON.stringify(takeTenantRows(state.db, o.tenant), null, 1)}\n`, { mode: 0o600 });
  writeFileSync(path.join(o.archive, 'owned.json'), `${JSON.stringify(takeOwnedRows(state.db, o.tenant, o.domains), null, 1)}\n`, { mode: 0o600 });
  return taken;
}
