import nodemailer from 'nodemailer';
import { loadConfig } from '../../core/config/load.ts';
import { isMailbox } from '../../core/listaddr.ts';
import { Registry } from '../../core/registry.ts';
import { parseListen } from '../../lib/listen.ts';
import { openState } from '../../state/index.ts';

/** A list named by its posting address (`news@example.test`), resolved against the config. */
function findList(configDir: string, listAddress: string): { tenant: string; list: string; dataDir: string; smtp: string | undefined; domain: string } {
  const config = loadConfig(configDir);
  const registry = new Registry(config);
  const at = listAddress.lastIndexOf('@');
  const name = listAddress.slice(0, at).toLowerCase();
  const domain = listAddress.slice(at + 1).toLowerCase();
  const tenant = at > 0 ? registry.tenantForHost(domain) : undefined;
  if (!tenant || !registry.listConfig(tenant, name)) throw new Error(`no mailing list ${listAddress} in ${config.dir}`);
  return { tenant: tenant.id, list: name, dataDir: config.main.dataDir, smtp: config.main.smtp?.listen[0], domain: tenant.domains[0]! };
}

function address(a: string): string {
  const lower = a.toLowerCase();
  if (!isMailbox(lower)) throw new Error(`"${a}" is not an e-mail address`);
  return lower;
}

/** `makewaves list members LIST`: one line per member (address, mode, state, bounce score). */
export function listMembers(configDir: string, listAddress: string, out: NodeJS.WritableStream = process.stdout): number {
  const l = findList(configDir, listAddress);
  const state = openState(l.dataDir);
  try {
    const members = state.lists.members(l.tenant, l.list);
    for (const m of members) {
      out.write(`${m.address}  ${m.mode}  ${m.disabled ? 'disabled (bounces)' : 'enabled'}  bounce score ${m.bounceScore}  since ${new Date(m.joinedAt).toISOString().slice(0, 10)}\n`);
    }
    out.write(`${members.length} member${members.length === 1 ? '' : 's'}\n`);
    return 0;
  } finally {
    state.close();
  }
}

/**
 * `makewaves list add ADDRESS LIST`: with `--no-confirm` (an operator's
 * import) the address is a member at once; without it a subscription
 * request goes to the running server over SMTP, so the address gets the
 * same confirmation message as anyone else and nothing happens until it
 * confirms.
 */
export async function listAdd(configDir: string, who: string, listAddress: string, opts: { confirm: boolean; digest: boolean }): Promise<number> {
  const l = findList(configDir, listAddress);
  const a = address(who);
  if (!opts.confirm) {
    const state = openState(l.dataDir);
    try {
      state.lists.addMember(l.tenant, l.list, a, opts.digest ? 'digest' : 'single', Date.now());
    } finally {
      state.close();
    }
    process.stdout.write(`${a} is a member of ${l.list}@${l.domain} (no confirmation asked)\n`);
    return 0;
  }
  const listen = l.smtp ? parseListen(l.smtp) : undefined;
  if (!listen) throw new Error('the config has no smtp.listen: a confirmation can only be sent by a running server (or use --no-confirm)');
  const host = listen.host === '0.0.0.0' || listen.host === '::' ? '127.0.0.1' : listen.host;
  const transport = nodemailer.createTransport({ host, port: listen.port, secure: false, ignoreTLS: true, name: 'makewaves-cli' });
  const request = `${l.list}-request@${l.domain}`;
  try {
    await transport.sendMail({
      envelope: { from: a, to: [request] },
      raw: `From: <${a}>\r\nTo: <${request}>\r\nSubject: subscribe${opts.digest ? ' digest' : ''}\r\n\r\nsubscribe request made with makewaves list add\r\n`,
    });
  } catch (err) {
    throw new Error(`could not reach the running server at ${host}:${listen.port} (${(err as Error).message}); is it running?`);
  } finally {
    transport.close();
  }
  process.stdout.write(`a confirmation request was sent to ${a}; it becomes a member once it confirms\n`);
  return 0;
}

/** `makewaves list remove ADDRESS LIST`: removes a member at once (the operator is trusted). */
export function listRemove(configDir: string, who: string, listAddress: string): number {
  const l = findList(configDir, listAddress);
  const a = address(who);
  const state = openState(l.dataDir);
  try {
    if (!state.lists.removeMember(l.tenant, l.list, a)) {
      process.stderr.write(`makewaves: ${a} is not a member of ${l.list}@${l.domain}\n`);
      return 1;
    }
    process.stdout.write(`${a} removed from ${l.list}@${l.domain}\n`);
    return 0;
  } finally {
    state.close();
  }
}

/** `makewaves list held LIST`: the posts waiting for the owner. */
export function listHeld(configDir: string, listAddress: string, out: NodeJS.WritableStream = process.stdout): number {
  const l = findList(configDir, listAddress);
  const state = openState(l.dataDir);
  try {
    const held = state.lists.heldOf(l.tenant, l.list);
    for (const h of held) {
      out.write(`#${h.id}  ${new Date(h.createdAt).toISOString()}  from ${h.poster}  "${h.subject}"  (${h.reason})  expires ${new Date(h.expiresAt).toISOString().slice(0, 10)}\n`);
    }
    out.write(`${held.length} held post${held.length === 1 ? '' : 's'}\n`);
    return 0;
  } finally {
    state.close();
  }
}
