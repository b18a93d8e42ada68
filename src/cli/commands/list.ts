import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { isMap, type Document } from 'yaml';
import { loadConfig } from '../../core/config/load.ts';
import { memberAddress } from '../../core/listaddr.ts';
import { Registry } from '../../core/registry.ts';
import { parseListen } from '../../lib/listen.ts';
import { openState } from '../../state/index.ts';
import { takeListRows } from '../../state/tenantdata.ts';
import { editTenant, loadCurrent, setListPolicy } from '../../core/tenantfile.ts';

type Out = NodeJS.WritableStream;

/** A list named by its posting address (`news@example.test`), resolved against the config. */
function findList(configDir: string, listAddress: string): { tenant: string; list: string; dataDir: string; smtp: string | undefined; domain: string; owner: string } {
  const config = loadConfig(configDir);
  const registry = new Registry(config);
  const at = listAddress.lastIndexOf('@');
  const name = listAddress.slice(0, at).toLowerCase();
  const domain = listAddress.slice(at + 1).toLowerCase();
  const tenant = at > 0 ? registry.tenantForHost(domain) : undefined;
  const cfg = tenant && registry.listConfig(tenant, name);
  if (!tenant || !cfg) throw new Error(`no mailing list ${listAddress} in ${config.dir}`);
  return { tenant: tenant.id, list: name, dataDir: config.main.dataDir, smtp: config.main.smtp?.listen[0], domain: tenant.domains[0]!, owner: cfg.owner };
}

/** The host and port where a CLI command reaches the running server's SMTP listener, if the config has one. */
function serverSmtp(listenAddr: string | undefined): { host: string; port: number } | undefined {
  const listen = listenAddr ? parseListen(listenAddr) : undefined;
  if (!listen) return undefined;
  return { host: listen.host === '0.0.0.0' || listen.host === '::' ? '127.0.0.1' : listen.host, port: listen.port };
}

/** Sends one small command message to the running server; rejects with a clear line when nothing answers. */
async function sendToServer(at: { host: string; port: number }, from: string, to: string, subject: string, text: string): Promise<void> {
  const { default: nodemailer } = await import('nodemailer');
  const transport = nodemailer.createTransport({ host: at.host, port: at.port, secure: false, ignoreTLS: true, name: 'makewaves-cli' });
  try {
    await transport.sendMail({ envelope: { from, to: [to] }, raw: `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\n\r\n${text}\r\n` });
  } catch (err) {
    throw new Error(`could not reach the running server at ${at.host}:${at.port} (${(err as Error).message}); is it running?`);
  } finally {
    transport.close();
  }
}

const address = memberAddress;

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
  const at = serverSmtp(l.smtp);
  if (!at) throw new Error('the config has no smtp.listen: a confirmation can only be sent by a running server (or use --no-confirm)');
  await sendToServer(at, a, `${l.list}-request@${l.domain}`, `subscribe${opts.digest ? ' digest' : ''}`, 'subscribe request made with makewaves list add');
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

/** `name@domain` split and lower-cased, with the tenant hosting the domain; throws a clear line if there is none. */
function newListAddress(configDir: string, listAddress: string): { tenant: string; name: string; domain: string } {
  const config = loadCurrent(configDir);
  const at = listAddress.lastIndexOf('@');
  if (at <= 0) throw new Error(`"${listAddress}" is not a list address of the form name@domain`);
  const name = listAddress.slice(0, at).toLowerCase();
  const domain = listAddress.slice(at + 1).toLowerCase();
  // The schema's rule for names under mail.lists; its own message for a bad record key ("Invalid key in record") says too little.
  if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(name)) throw new Error(`"${name}" is not a list name: lower-case letters, digits, ".", "_" or "-", starting with a letter or digit`);
  const tenant = new Registry(config).tenantForHost(domain);
  if (!tenant) throw new Error(`no tenant has the domain "${domain}"`);
  return { tenant: tenant.id, name, domain: tenant.domains[0]! };
}

/** `mail.lists` of a Document, made (with `mail`) when the file has none. */
function listsMap(doc: Document): void {
  if (!isMap(doc.get('mail'))) doc.set('mail', doc.createNode({}));
  if (!isMap(doc.getIn(['mail', 'lists']))) doc.setIn(['mail', 'lists'], doc.createNode({}));
}

/**
 * `makewaves list create NAME@DOMAIN --owner ADDRESS [--posting P] [--archive]`:
 * adds `mail.lists.<name>` to the tenant that has the domain. The list's
 * addresses use the tenant's first domain, as the server does.
 */
export function listCreate(configDir: string, listAddress: string, opts: { owner: string; posting?: string; archive?: boolean }, out: Out = process.stdout): number {
  const l = newListAddress(configDir, listAddress);
  editTenant(configDir, l.tenant, (doc) => {
    if (doc.hasIn(['mail', 'lists', l.name])) throw new Error(`${l.tenant} already has a list ${l.name}@${l.domain}`);
    listsMap(doc);
    const node = doc.createNode({ owner: opts.owner.toLowerCase(), ...(opts.posting !== undefined ? { posting: opts.posting } : {}), ...(opts.archive ? { archive: true } : {}) });
    node.flow = true;
    doc.setIn(['mail', 'lists', l.name], node);
  });
  out.write(`created list ${l.name}@${l.domain} (tenant ${l.tenant}, owner ${opts.owner.toLowerCase()}, posting ${opts.posting ?? 'members'}, archive ${opts.archive ? 'on' : 'off'})\n`);
  return 0;
}

/** `makewaves list set LIST [--owner ADDRESS] [--posting P]`. */
export function listSet(configDir: string, listAddress: string, opts: { owner?: string; posting?: string }, out: Out = process.stdout): number {
  if (opts.owner === undefined && opts.posting === undefined) throw new Error('give --owner and/or --posting');
  const l = findList(configDir, listAddress);
  const after = setListPolicy(configDir, l.tenant, l.list, opts);
  out.write(`${l.list}@${l.domain}: owner ${after.owner}, posting ${after.posting}\n`);
  return 0;
}

/**
 * `makewaves list delete LIST --yes`: removes `mail.lists.<name>` from the
 * tenant file (the server's reload stops routing its addresses), then takes
 * the list's rows out of state (members, tokens, held posts, inbox, digest
 * and archive) into `<data>/archive/<tenant>-<list>-<time>.json`, so a list
 * created again under that name starts empty.
 */
export function listDelete(configDir: string, listAddress: string, opts: { yes: boolean }, out: Out = process.stdout): number {
  const l = findList(configDir, listAddress);
  if (!opts.yes) throw new Error(`deleting ${l.list}@${l.domain} drops its members, held posts and archive; run again with --yes`);
  editTenant(configDir, l.tenant, (doc) => {
    doc.deleteIn(['mail', 'lists', l.list]);
  });
  const state = openState(l.dataDir);
  let file: string;
  let members = 0;
  try {
    const rows = takeListRows(state.db, l.tenant, l.list);
    members = rows.list_members?.length ?? 0;
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
    const dir = path.join(l.dataDir, 'archive');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    file = path.join(dir, `${l.tenant}-${l.list}-${stamp}.json`);
    writeFileSync(file, `${JSON.stringify({ v: 1, tenant: l.tenant, list: l.list, rows }, null, 1)}\n`, { mode: 0o600 });
  } finally {
    state.close();
  }
  out.write(`deleted list ${l.list}@${l.domain} (tenant ${l.tenant}); its ${members} member(s) and other rows are archived in ${file}\n`);
  return 0;
}

/** How long the approval token a CLI moderation makes stays good: it is used at once, by the server it is sent to. */
const CLI_TOKEN_TTL_MS = 3600_000;

/**
 * `makewaves list approve|reject LIST ID`: decides a held post the way its
 * owner does by mail. A fresh approval token for the post is stored, and
 * `confirm TOKEN` (approve) or `reject TOKEN` is sent to the running
 * server's list addresses, so the server itself distributes the post (or
 * tells the poster) through its queue, exactly as for the owner's reply.
 */
export async function listModerate(configDir: string, listAddress: string, idText: string, approve: boolean, out: Out = process.stdout): Promise<number> {
  if (!/^#?\d{1,15}$/.test(idText)) throw new Error(`"${idText}" is not a held post number`);
  const id = Number(idText.replace('#', ''));
  const l = findList(configDir, listAddress);
  const at = serverSmtp(l.smtp);
  if (!at) throw new Error('the config has no smtp.listen: a held post is posted by the running server, which needs one');
  const state = openState(l.dataDir);
  let token: string;
  let held: { poster: string; subject: string };
  try {
    const h = state.lists.held(id);
    if (!h || h.tenant !== l.tenant || h.list !== l.list) throw new Error(`no held post #${id} on ${l.list}@${l.domain} (makewaves list held ${l.list}@${l.domain} shows them)`);
    held = { poster: h.poster, subject: h.subject };
    token = state.lists.moderationToken(l.tenant, l.list, id, l.owner, Date.now(), CLI_TOKEN_TTL_MS);
  } finally {
    state.close();
  }
  if (approve) await sendToServer(at, l.owner, `${l.list}-confirm+${token}@${l.domain}`, `confirm ${token}`, 'approved with makewaves list approve');
  else await sendToServer(at, l.owner, `${l.list}-request@${l.domain}`, `reject ${token}`, 'rejected with makewaves list reject');
  out.write(
    approve
      ? `approved #${id} "${held.subject}" from ${held.poster}: the running server posts it to ${l.list}@${l.domain}\n`
      : `rejected #${id} "${held.subject}" from ${held.poster}; the poster is told\n`,
  );
  return 0;
}
