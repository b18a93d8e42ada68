import { isIP } from 'node:net';
import { loadConfig, type LoadedConfig } from '../../core/config/load.ts';
import { suiteResolver } from '../../core/dns.ts';
import { parseListen } from '../../lib/listen.ts';
import { openState, type DkimKey, type State } from '../../state/index.ts';

/** Days a retired DKIM key stays published after `makewaves dkim rotate` (mail signed with it may still be on its way). */
export const DEFAULT_GRACE_DAYS = 7;

const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/** A TXT value in zone-file form: quoted strings of at most 255 characters each (RFC 1035 §3.3.14). */
export function txt(value: string): string {
  const parts: string[] = [];
  for (let i = 0; i < value.length; i += 255) parts.push(`"${value.slice(i, i + 255).replace(/["\\]/g, '\\$&')}"`);
  return parts.join(' ');
}

/** One zone-file line: owner name (absolute), class, type, data. */
function line(owner: string, type: string, data: string): string {
  return `${`${owner}.`.padEnd(40)} IN ${type.padEnd(5)} ${data}`;
}

/** The DKIM records of `domain` (making its keys if it has none yet), with a comment for each retired one. */
async function dkimLines(state: State, domain: string, now: number): Promise<string[]> {
  await state.dkim.ensure(domain, now);
  const out: string[] = [];
  for (const k of state.dkim.published(domain, now)) {
    if (k.retiredAt !== null) out.push(`; retired ${day(k.retiredAt)}: keep until ${day(k.unpublishAt ?? k.retiredAt)}, then remove`);
    out.push(line(`${k.selector}._domainkey.${domain}`, 'TXT', txt(state.dkim.record(k))));
  }
  return out;
}

/** Where outbound mail leaves from, in one comment line when it is not this server. */
function relayNote(config: LoadedConfig): string[] {
  const relay = config.main.smtp?.relay;
  return relay ? [`; outbound mail leaves through smtp.relay (${new URL(relay).hostname}): add that host's senders to the SPF records (include: or a:)`] : [];
}

/**
 * `makewaves dns TENANT`: what the tenant must publish for each of its
 * domains, in zone-file form: MX (this server), SPF naming this server, the
 * DKIM keys the suite signs with (made now if the domain has none), a DMARC
 * record to start with.
 */
export async function dnsTenant(configDir: string, tenant: string, out: NodeJS.WritableStream = process.stdout, now = Date.now()): Promise<number> {
  const config = loadConfig(configDir);
  const entry = config.tenants.find((t) => t.id === tenant);
  if (!entry) throw new Error(`no tenant "${tenant}" (makewaves tenant list shows them)`);
  const host = config.main.hostname;
  const state = openState(config.main.dataDir);
  try {
    const lines = [
      `; DNS records for tenant ${tenant}: publish each in the zone of its domain.`,
      `; Mail for these domains is received by ${host}; mail the suite sends for them is DKIM-signed with these keys.`,
      ...relayNote(config),
      '$TTL 3600',
    ];
    for (const domain of entry.config.domains) {
      lines.push('', `; ${domain}`);
      lines.push(line(domain, 'MX', `10 ${host}.`));
      lines.push('; SPF: add your other senders (include:, a:, ip4:) before ~all; make it -all once they are all listed');
      lines.push(line(domain, 'TXT', txt(`v=spf1 a:${host} ~all`)));
      lines.push(...(await dkimLines(state, domain, now)));
      lines.push('; DMARC to start with: reports only; raise to p=quarantine, then p=reject, once SPF and DKIM pass');
      lines.push(line(`_dmarc.${domain}`, 'TXT', txt('v=DMARC1; p=none; adkim=r; aspf=r')));
    }
    out.write(`${lines.join('\n')}\n`);
    return 0;
  } finally {
    state.close();
  }
}

/**
 * `makewaves dns`: the suite's own records: its host name's addresses (from
 * the listen addresses when they are public, else a line to fill in), PTR
 * advice, SPF for the host name (and the SRS domain: forwarded mail's
 * envelope sender), the DKIM key that signs bounces, DMARC, and the ARC
 * key that seals forwarded mail and list posts (made now if there is none).
 */
export async function dnsSuite(configDir: string, out: NodeJS.WritableStream = process.stdout, now = Date.now()): Promise<number> {
  const config = loadConfig(configDir);
  const host = config.main.hostname;
  const listens = [...(config.main.smtp?.listen ?? []), ...config.main.http.listen];
  const addresses = [...new Set(listens.map((l) => parseListen(l)?.host ?? '').filter((h) => isIP(h) !== 0 && isPublic(h)))];
  const state = openState(config.main.dataDir);
  try {
    const lines = [`; DNS records for this server, ${host}: publish them in the zone of ${host}.`, ...relayNote(config), '$TTL 3600', ''];
    if (addresses.length === 0) {
      lines.push(`; ${host} listens on no public address in makewaves.yaml: publish the one it is reached at`);
      lines.push(`; ${`${host}.`.padEnd(38)} IN A     <public IPv4 address>`, `; ${`${host}.`.padEnd(38)} IN AAAA  <public IPv6 address>`);
    }
    for (const a of addresses) lines.push(line(host, isIP(a) === 4 ? 'A' : 'AAAA', a));
    lines.push(`; PTR: ask whoever holds each address (your ISP or host) to point its reverse name at ${host}. (receivers check it matches)`);
    lines.push(line(host, 'TXT', txt('v=spf1 a -all')));
    const srs = config.main.smtp?.srsDomain;
    if (srs && srs !== host) {
      lines.push(`; SRS: forwarded mail's envelope sender is in ${srs}`);
      lines.push(line(srs, 'TXT', txt(`v=spf1 a:${host} -all`)));
    }
    lines.push(`; DKIM: bounces (From: MAILER-DAEMON@${host}) are signed with this key`);
    lines.push(...(await dkimLines(state, host, now)));
    lines.push(line(`_dmarc.${host}`, 'TXT', txt('v=DMARC1; p=none; adkim=r; aspf=r')));
    if (config.main.smtp?.checks.enabled && config.main.smtp.checks.arcSeal) {
      await state.dkim.ensureArc(host, now);
      lines.push(`; ARC: forwarded mail and list posts are sealed (RFC 8617) with this key, d=${host}`);
      // After `makewaves dkim rotate --arc` the retired key stays listed for its grace period: mail sealed with it may be on its way.
      for (const k of state.dkim.published(host, now, 'arc')) {
        if (k.retiredAt !== null) lines.push(`; ARC, retired ${day(k.retiredAt)}: keep until ${day(k.unpublishAt ?? k.retiredAt)}, then remove`);
        lines.push(line(`${k.selector}._domainkey.${host}`, 'TXT', txt(state.dkim.record(k))));
      }
    } else {
      lines.push('; ARC: sealing is off (smtp.checks in makewaves.yaml), so there is no ARC key to publish');
    }
    out.write(`${lines.join('\n')}\n`);
    return 0;
  } finally {
    state.close();
  }
}

/** Not loopback, unspecified, private or link-local: an address the world can reach. */
function isPublic(ip: string): boolean {
  if (isIP(ip) === 4) return !/^(0\.|127\.|10\.|192\.168\.|169\.254\.|172\.(1[6-9]|2\d|3[01])\.)/.test(ip);
  const v6 = ip.toLowerCase();
  return !(v6 === '::' || v6 === '::1' || v6.startsWith('fe80:') || v6.startsWith('fc') || v6.startsWith('fd'));
}

/** The domains whose mail the suite signs: every tenant domain and its own host name. */
function signable(config: LoadedConfig): Set<string> {
  return new Set([config.main.hostname, ...config.tenants.flatMap((t) => t.config.domains)]);
}

function describeKey(k: DkimKey, now: number): string {
  const status = k.retiredAt === null ? 'signing' : (k.unpublishAt ?? 0) > now ? `retired ${day(k.retiredAt)}, publish until ${day(k.unpublishAt!)}` : `retired ${day(k.retiredAt)}, may be unpublished`;
  return `${k.domain}  ${k.selector}  ${k.algorithm === 'rsa' ? 'rsa-sha256 2048' : 'ed25519-sha256'}${k.purpose === 'arc' ? ' (ARC seal)' : ''}  made ${day(k.createdAt)}  ${status}`;
}

/**
 * `makewaves dkim rotate DOMAIN`: a new signing pair (new selectors) for a
 * tenant domain or the host name; the old pair stops signing at once and
 * stays published for `graceDays`. A running server signs its next message
 * with the new keys.
 */
export async function dkimRotate(configDir: string, domain: string, graceDays: number, out: NodeJS.WritableStream = process.stdout, now = Date.now()): Promise<number> {
  const config = loadConfig(configDir);
  const d = domain.toLowerCase().replace(/\.$/, '');
  if (!signable(config).has(d)) throw new Error(`"${domain}" is neither a tenant domain nor this server's host name (${config.main.hostname})`);
  if (!Number.isFinite(graceDays) || graceDays < 0) throw new Error(`--grace must be a number of days (0 or more), not "${graceDays}"`);
  const state = openState(config.main.dataDir);
  try {
    const { made, retired } = await state.dkim.rotate(d, graceDays, now);
    for (const k of retired) out.write(`retired ${describeKey(k, now)}\n`);
    for (const k of made) out.write(`new     ${describeKey(k, now)}\n`);
    out.write(`Publish the new records now (mail is signed with them from now on); the retired ones stay listed by \`makewaves dns\` until their date:\n`);
    for (const k of made) out.write(`${line(`${k.selector}._domainkey.${d}`, 'TXT', txt(state.dkim.record(k)))}\n`);
    return 0;
  } finally {
    state.close();
  }
}

/**
 * `makewaves dkim rotate --arc`: a new ARC sealing key (new selector) under
 * the host name; the old one stops sealing at once and stays published
 * (`makewaves dns` lists it) for `graceDays`: receivers check a seal when
 * the message reaches them, which may be days after it was sealed. A
 * running server seals its next message with the new key.
 */
export async function arcRotate(configDir: string, domain: string | undefined, graceDays: number, out: NodeJS.WritableStream = process.stdout, now = Date.now()): Promise<number> {
  const config = loadConfig(configDir);
  const host = config.main.hostname;
  if (domain !== undefined && domain.toLowerCase().replace(/\.$/, '') !== host) {
    throw new Error(`the ARC key is this server's own, under its host name ${host}: run makewaves dkim rotate --arc without a domain (or with ${host})`);
  }
  if (!Number.isFinite(graceDays) || graceDays < 0) throw new Error(`--grace must be a number of days (0 or more), not "${graceDays}"`);
  const state = openState(config.main.dataDir);
  try {
    const { made, retired } = await state.dkim.rotate(host, graceDays, now, 'arc');
    for (const k of retired) out.write(`retired ${describeKey(k, now)}\n`);
    for (const k of made) out.write(`new     ${describeKey(k, now)}\n`);
    if (!(config.main.smtp?.checks.enabled && config.main.smtp.checks.arcSeal)) {
      out.write('ARC sealing is off (smtp.checks in makewaves.yaml): the new key seals nothing until it is turned on.\n');
    }
    out.write(`Publish the new record now (mail is sealed with it from now on); the retired one stays listed by \`makewaves dns\` until its date:\n`);
    for (const k of made) out.write(`${line(`${k.selector}._domainkey.${host}`, 'TXT', txt(state.dkim.record(k)))}\n`);
    return 0;
  } finally {
    state.close();
  }
}

/** `makewaves dkim list [DOMAIN]`: every DKIM key recorded, with its selector and status. */
export function dkimList(configDir: string, domain: string | undefined, out: NodeJS.WritableStream = process.stdout, now = Date.now()): number {
  const config = loadConfig(configDir);
  const state = openState(config.main.dataDir);
  try {
    const keys = state.dkim.list(domain);
    for (const k of keys) out.write(`${describeKey(k, now)}\n`);
    if (keys.length === 0) out.write(`no DKIM keys yet${domain ? ` for ${domain}` : ''}: they are made at a domain's first message or by \`makewaves dns\`\n`);
    return 0;
  } finally {
    state.close();
  }
}

type Verdict = 'ok' | 'missing' | 'wrong' | 'unknown';

/** What one lookup found: the answers, none (NXDOMAIN, no data), or trouble (timeout, SERVFAIL: says nothing either way). */
async function lookup<T>(ask: () => Promise<T[]>): Promise<{ answers: T[] } | { trouble: string }> {
  try {
    return { answers: await ask() };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTFOUND' || code === 'ENODATA') return { answers: [] };
    return { trouble: code ?? (err as Error).message };
  }
}

/** The `p=` of a DKIM record, without whitespace. */
const pValue = (record: string) => /(?:^|;)\s*p=([^;]*)/.exec(record)?.[1]?.replace(/\s+/g, '');

/**
 * `makewaves dns --check TENANT`: looks up what `makewaves dns TENANT`
 * prints, through the configured resolver (`dns:`), and says per record
 * whether it is there and right. Exit 0 when every record is, 1 otherwise
 * (a lookup that failed for DNS trouble counts as not checked).
 */
export async function dnsCheck(configDir: string, tenant: string, out: NodeJS.WritableStream = process.stdout, now = Date.now()): Promise<number> {
  const config = loadConfig(configDir);
  const entry = config.tenants.find((t) => t.id === tenant);
  if (!entry) throw new Error(`no tenant "${tenant}" (makewaves tenant list shows them)`);
  const host = config.main.hostname;
  const resolver = suiteResolver(config.main.dns);
  const state = openState(config.main.dataDir);
  let bad = 0;
  const say = (verdict: Verdict, what: string, detail: string) => {
    if (verdict !== 'ok') bad++;
    out.write(`${verdict.padEnd(8)}${what.padEnd(56)} ${detail}\n`);
  };
  try {
    for (const domain of entry.config.domains) {
      const mx = await lookup(() => resolver.resolveMx(domain));
      if ('trouble' in mx) say('unknown', `MX ${domain}`, `lookup failed (${mx.trouble})`);
      else if (mx.answers.length === 0) say('missing', `MX ${domain}`, `publish: 10 ${host}.`);
      else if (mx.answers.some((a) => a.exchange.toLowerCase().replace(/\.$/, '') === host)) say('ok', `MX ${domain}`, `→ ${host}`);
      else say('wrong', `MX ${domain}`, `points at ${mx.answers.map((a) => a.exchange).join(', ')}, not ${host}`);

      const txt = await lookup(() => resolver.resolveTxt(domain));
      const spf = 'answers' in txt ? txt.answers.map((parts) => parts.join('')).filter((t) => /^v=spf1(\s|$)/i.test(t)) : [];
      if ('trouble' in txt) say('unknown', `SPF ${domain}`, `lookup failed (${txt.trouble})`);
      else if (spf.length === 0) say('missing', `SPF ${domain}`, `publish: "v=spf1 a:${host} ~all"`);
      else if (spf.length > 1) say('wrong', `SPF ${domain}`, `${spf.length} v=spf1 records: receivers treat that as an error (RFC 7208 §4.5); keep one`);
      else if (new RegExp(`(^|\\s)[+]?(a|mx|include):${host.replace(/\./g, '\\.')}(\\s|$)`, 'i').test(spf[0]!)) say('ok', `SPF ${domain}`, spf[0]!);
      else say('wrong', `SPF ${domain}`, `"${spf[0]}" does not name ${host} (add a:${host})`);

      await state.dkim.ensure(domain, now);
      for (const k of state.dkim.published(domain, now)) {
        const name = `${k.selector}._domainkey.${domain}`;
        const got = await lookup(() => resolver.resolveTxt(name));
        const want = pValue(state.dkim.record(k));
        if ('trouble' in got) say('unknown', `DKIM ${name}`, `lookup failed (${got.trouble})`);
        else if (got.answers.length === 0) say('missing', `DKIM ${name}`, k.retiredAt === null ? 'mail signed with this key fails DKIM until it is published' : 'retired, but still needed until its grace period ends');
        else if (got.answers.some((parts) => pValue(parts.join('')) === want)) say('ok', `DKIM ${name}`, k.retiredAt === null ? 'signing key' : 'retired key, still published');
        else say('wrong', `DKIM ${name}`, 'the published key is not the one the suite signs with (print it again with makewaves dns)');
      }

      const dmarc = await lookup(() => resolver.resolveTxt(`_dmarc.${domain}`));
      const policy = 'answers' in dmarc ? dmarc.answers.map((parts) => parts.join('')).find((t) => /^v=DMARC1\s*(;|$)/i.test(t)) : undefined;
      if ('trouble' in dmarc) say('unknown', `DMARC _dmarc.${domain}`, `lookup failed (${dmarc.trouble})`);
      else if (!policy) say('missing', `DMARC _dmarc.${domain}`, 'publish: "v=DMARC1; p=none; adkim=r; aspf=r"');
      else say('ok', `DMARC _dmarc.${domain}`, policy);
    }
    out.write(bad === 0 ? `${tenant}: every record is published\n` : `${tenant}: ${bad} record${bad === 1 ? '' : 's'} missing, wrong or not checked\n`);
    return bad === 0 ? 0 : 1;
  } finally {
    state.close();
  }
}
