// The one file that knows mailauth (https://github.com/postalsys/mailauth), the
// DKIM, SPF, DMARC and ARC library by the author of nodemailer and smtp-server:
// its checks (authenticate()) are used as they are; its relaxed canonicalization
// and alignment test (lib/tools.js, not exported) build our own DKIM signatures
// and ARC sets, made with keys parsed once (its dkimSign() and sealMessage() take
// PEM text and parse it for every signature, which costs more than signing).
import { createHash, createPrivateKey, sign, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import type { DNSResolver } from 'mailauth';
import type { Logger } from '../core/log.ts';
import type { Registry } from '../core/registry.ts';
import type { DkimKey, DkimKeys } from '../state/index.ts';

/** Where a message the suite made came from, to choose the domain that signs it. */
export interface Origin {
  /** The envelope sender ("" for a DSN). */
  from: string;
  /** The tenant it is sent for, when there is one. */
  tenant?: string | undefined;
}

/**
 * The domain of the one address in the message's From: header (lower case),
 * or undefined: no From:, or more than one address in it (a list, a group).
 * Quoted strings and comments are not addresses ("Bob <b@x>" v@y is from y).
 */
export function fromDomain(raw: Buffer): string | undefined {
  const end = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, end === -1 ? Math.min(raw.length, 64 * 1024) : end + 2).toString('latin1');
  const m = /(?:^|\r\n)from:((?:[^\r]|\r\n[ \t])*)/i.exec(head);
  if (!m) return undefined;
  const value = m[1]!
    .replace(/\r\n[ \t]/g, ' ')
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\((?:[^()\\]|\\.)*\)/g, ' ');
  const addrs = [...value.matchAll(/<\s*([^<>\s]+@[^<>\s]+?)\s*>|([^\s<>"(),;:]+@[^\s<>"(),;:]+)/g)].map((a) => a[1] ?? a[2]!);
  if (addrs.length !== 1) return undefined;
  return addrs[0]!.slice(addrs[0]!.lastIndexOf('@') + 1).toLowerCase() || undefined;
}

export interface DkimSignerDeps {
  keys: DkimKeys;
  /** The current registry (tenant domains). */
  registry: () => Registry;
  /** The suite's own name: DSNs (From: MAILER-DAEMON@<hostname>) are signed with its key. */
  hostname: string;
  log: Logger;
  now?: () => number;
}

const tools = createRequire(import.meta.url)('mailauth/lib/tools.js') as {
  getAlignment(fromDomain: string, domains: string[], opts: { strict: boolean }): unknown;
  /** RFC 6376 §3.4.2 relaxed header canonicalization of one field (folded as written), with `suffix` appended. */
  formatRelaxedLine(line: string | Buffer, suffix?: string): Buffer;
  getPublicKey: PublicKeyReader;
};

/** mailauth's reading of a DKIM or ARC key record: asks `name`'s TXT record, checks and parses it. */
type PublicKeyReader = (type: string, name: string, minBitLength: number | undefined, resolver: DNSResolver | undefined) => Promise<{ publicKey: string; rr: string; modulusLength: number }>;

/** Key records {@link keptPublicKeys} answered without reading them again (a test's proof that mailauth still goes through it). */
export const keptKeyHits = { count: 0 };

/**
 * mailauth's reading of a key record, done once per record text: for each
 * signature it parses the record character by character, checks its
 * base64 with a schema, makes a key of it and exports that as PEM (a fifth
 * of a DKIM check's CPU, for a record that is the same for every message of
 * a sender). The record is still asked for every time (through the
 * resolver, which may keep answers); only what is made of the same text is
 * kept (at most `max` records, the oldest dropped first). Failures are not
 * kept.
 */
function keptPublicKeys(read: PublicKeyReader, max = 1000): PublicKeyReader {
  const kept = new Map<string, { publicKey: string; rr: string; modulusLength: number }>();
  return async (type, name, minBitLength, resolver) => {
    if (!resolver) return read(type, name, minBitLength, resolver);
    const list = (await resolver(name, 'TXT')) as unknown as string[][] | undefined;
    // The record's text as mailauth reads it (its first string set, joined, without whitespace).
    const rr = list ? ([] as string[]).concat(list[0] ?? []).join('').replace(/\s+/g, '') : '';
    const key = `${type}\0${minBitLength ?? ''}\0${rr}`;
    const have = rr ? kept.get(key) : undefined;
    if (have) {
      keptKeyHits.count++;
      return { ...have };
    }
    const made = await read(type, name, minBitLength, (() => Promise.resolve(list)) as unknown as DNSResolver);
    if (rr) {
      if (kept.size >= max) kept.delete(kept.keys().next().value!);
      kept.set(key, { ...made });
    }
    return made;
  };
}

// Before mailauth's own modules load: its DKIM verifier and ARC checker take their reference to getPublicKey then.
tools.getPublicKey = keptPublicKeys(tools.getPublicKey);
const mailauth = createRequire(import.meta.url)('mailauth') as typeof import('mailauth');

/**
 * Signs what the suite originates (form mail, list mail, DSNs) at the point
 * it enters the queue. The signing domain (`d=`) is the From: domain when it
 * is ours (a tenant domain or the suite's hostname), so DMARC aligns;
 * otherwise (a list post keeps its poster's From:) the envelope sender's
 * domain when ours, else the tenant's first domain. RSA-SHA256 (2048 bits)
 * and Ed25519-SHA256 (RFC 8463), relaxed/relaxed. Keys are made at the
 * domain's first message.
 */
export function createDkimSigner(d: DkimSignerDeps): (raw: Buffer, origin: Origin) => Promise<Buffer> {
  const ours = (domain: string | undefined): domain is string => domain !== undefined && (domain === d.hostname || d.registry().hostsDomain(domain));
  const choose = (raw: Buffer, origin: Origin): string | undefined => {
    const header = fromDomain(raw);
    if (ours(header)) return header;
    const envelope = origin.from.includes('@') ? origin.from.slice(origin.from.lastIndexOf('@') + 1).toLowerCase() : undefined;
    if (ours(envelope)) return envelope;
    return origin.tenant ? d.registry().tenants.get(origin.tenant)?.domains[0] : undefined;
  };
  return async (raw, origin) => {
    const domain = choose(raw, origin);
    if (!domain) {
      d.log.warn({ from: origin.from, tenant: origin.tenant }, 'message not DKIM-signed: neither its From: nor its sender is a domain of ours');
      return raw;
    }
    const keys: DkimKey[] = await d.keys.ensure(domain);
    const fields = headerFields(raw);
    const covered = fields.filter((f) => DKIM_SIGNED.has(f[0])).reverse();
    const h = fieldNames(covered);
    const bh = relaxedBodyHash(raw);
    const t = Math.floor((d.now ?? Date.now)() / 1000);
    const signatures = await Promise.all(
      keys.map(async (k) => {
        const key = d.keys.signingKey(k);
        const head = `DKIM-Signature: v=1; a=${k.algorithm}-sha256; c=relaxed/relaxed; d=${domain};\r\n s=${k.selector}; t=${t};\r\n h=${h};\r\n bh=${bh};\r\n b=`;
        return `${head}${foldB(await signFields(covered, head, key, k.algorithm))}\r\n`;
      }),
    );
    return Buffer.concat([Buffer.from(signatures.join(''), 'latin1'), raw]);
  };
}


const getDmarcRecord = createRequire(import.meta.url)('mailauth/lib/dmarc/get-dmarc-record.js') as (
  domain: string,
  resolver: DNSResolver,
) => Promise<false | { p?: string | false; sp?: string | false; isOrgRecord: boolean }>;

/**
 * The DMARC policy (RFC 7489 §6.3) that applies to mail From: `domain`:
 * its own `_dmarc` record's `p=`, or the organisational domain's (`sp=`
 * first, for a subdomain); undefined when neither publishes one (mailauth's
 * record lookup, through `resolver`). Rejects on a DNS failure (a timeout,
 * SERVFAIL): "no record" and "could not ask" are not the same.
 */
export async function dmarcPolicy(domain: string, resolver: DNSResolver): Promise<'none' | 'quarantine' | 'reject' | undefined> {
  const record = await getDmarcRecord(domain.toLowerCase(), resolver);
  if (!record) return undefined;
  const raw = record.isOrgRecord && record.sp ? record.sp : record.p;
  const p = typeof raw === 'string' ? raw.trim().toLowerCase() : '';
  return p === 'reject' || p === 'quarantine' || p === 'none' ? p : undefined;
}

/** How the From: domain was authenticated, aligned with it (RFC 7489 §3.1, relaxed): by DMARC's own verdict, or without a DMARC record by DKIM or SPF. */
export type Alignment = 'dmarc' | 'dkim' | 'spf';

/** What the inbound checks found for one message. */
export interface InboundAuth {
  /** The value of our one Authentication-Results field (RFC 8601): `<hostname>; dkim=…; spf=…; dmarc=…`. */
  results: string;
  /** The From: domain (lower case), when the message has exactly one From: address. */
  fromDomain: string | undefined;
  spf: string;
  dkim: string[];
  /** The signatures that verified: their domain (`d=`, lower case) and selector (`s=`). */
  dkimPass: Array<{ domain: string; selector: string }>;
  /** DMARC's result (`pass`, `fail`, `none`, `temperror`…) and the policy that applies to the From: domain (p=, or sp= for a subdomain). */
  dmarc: { result: string; policy: string | undefined };
  /** Set when the From: domain is authenticated in alignment. */
  aligned: Alignment | undefined;
  /** True when some check ended in temperror (a DNS timeout or SERVFAIL). */
  temporary: boolean;
  /** The ARC set for the message as it will leave, when the checks' thread was asked to make it (see inbound-pool.ts). */
  arcSet?: string;
}

export interface InboundOptions {
  /** The envelope sender ("" for the null sender: SPF then checks postmaster@<helo>, RFC 7208 §2.4). */
  sender: string;
  ip: string;
  helo: string;
  /** The suite's host name: the authserv-id of the Authentication-Results field. */
  hostname: string;
  resolver: DNSResolver;
}

/**
 * The resolver for one message's checks, with the TXT records they will ask
 * for asked at once: the sender domain's SPF, each DKIM-Signature's key,
 * the From: domain's DMARC record. mailauth asks them one after the other
 * (DKIM, then SPF, then DMARC); here the three round trips overlap. Each
 * answer (or error) is kept for this message only, and handed to mailauth
 * when it asks, as if asked then.
 */
function askedAhead(raw: Buffer, sender: string, resolver: DNSResolver): DNSResolver {
  const asked = new Map<string, Promise<unknown>>();
  const ask = (name: string, type: string) => {
    const key = `${type} ${name.toLowerCase()}`;
    let p = asked.get(key);
    if (!p) {
      p = resolver(name, type);
      asked.set(key, p);
    }
    return p;
  };
  const end = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, end === -1 ? Math.min(raw.length, 64 * 1024) : end).toString('latin1').replace(/\r\n[ \t]+/g, ' ');
  const names: string[] = [];
  if (sender.includes('@')) names.push(sender.slice(sender.lastIndexOf('@') + 1));
  for (const m of head.matchAll(/(?:^|\r\n)dkim-signature:([^\r]*)/gi)) {
    const tag = (t: string) => new RegExp(`(?:^|;)\\s*${t}\\s*=\\s*([^;\\s]+)`).exec(m[1]!)?.[1];
    const [s, d] = [tag('s'), tag('d')];
    if (s && d) names.push(`${s}._domainkey.${d}`);
  }
  const from = fromDomain(raw);
  if (from) names.push(`_dmarc.${from}`);
  for (const name of names.slice(0, 8)) {
    // Not asked for yet: an error here is mailauth's to see when it asks, not an unhandled rejection.
    ask(name, 'TXT').catch(() => undefined);
  }
  return ask as DNSResolver;
}

export const MAILAUTH_INTERNALS = {
  /** What mailauth does with a DKIM/ARC public key, which {@link keepParsedPublicKeys} relies on (checked by test/unit/mail/inbound-pool.test.ts). */
  crypto: ['createPublicKey({ key: Buffer, format: "pem" })', 'verify(algorithm, data, pem string, signature)'],
  /** What {@link keptPublicKeys} relies on: lib/tools.js's getPublicKey(type, name, minBitLength, resolver), taken by lib/dkim/dkim-verifier.js and lib/arc/index.js when they load (checked by test/unit/mail/mailauth-keys.test.ts). */
  tools: ['getPublicKey(type, name, minBitLength, resolver) → { publicKey, rr, modulusLength }'],
};

/** Keys {@link keepParsedPublicKeys} answered from its cache (a test's proof that mailauth still goes through it). */
export const parsedKeyHits = { count: 0 };

/**
 * Makes mailauth parse each DKIM/ARC public key once, not for every
 * message: it turns the record into a KeyObject (`createPublicKey`), then
 * back into PEM text, which `crypto.verify` parses again, and it has no way
 * to take a parsed key. Its `node:crypto` calls, CommonJS, go through the
 * module object, whose two functions are wrapped here with a cache by PEM
 * text (at most `max` keys, the oldest dropped first; a KeyObject cannot
 * be changed, so sharing one is safe). For the checks' thread only: our own
 * code imports its functions as ES bindings, which this leaves untouched.
 */
export function keepParsedPublicKeys(max = 1000): void {
  const c = createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto');
  const create = c.createPublicKey;
  const verify = c.verify;
  const parsed = new Map<string, KeyObject>();
  const fromPem = (pem: string): KeyObject => {
    let k = parsed.get(pem);
    if (k) parsedKeyHits.count++;
    else {
      k = create(pem);
      if (parsed.size >= max) parsed.delete(parsed.keys().next().value!);
      parsed.set(pem, k);
    }
    return k;
  };
  c.createPublicKey = ((key: Parameters<typeof create>[0]) => {
    const o = key as { key?: unknown; format?: unknown };
    if (typeof o === 'object' && !Buffer.isBuffer(o) && o.format === 'pem' && Buffer.isBuffer(o.key) && Object.keys(o).length === 2) return fromPem(o.key.toString('latin1'));
    return create(key);
  }) as typeof create;
  c.verify = ((algorithm: string | null | undefined, data: NodeJS.ArrayBufferView, key: Parameters<typeof verify>[2], signature: NodeJS.ArrayBufferView, callback?: (error: Error | null, result: boolean) => void) =>
    callback
      ? verify(algorithm, data, typeof key === 'string' ? fromPem(key) : key, signature, callback)
      : verify(algorithm, data, typeof key === 'string' ? fromPem(key) : key, signature)) as typeof verify;
}

/**
 * SPF of the envelope sender, DKIM of the message, DMARC of the From:
 * domain and the ARC chain, in one pass (mailauth's authenticate(); BIMI
 * is not asked for). Never throws for a DNS problem: that is a temperror
 * in the result.
 */
export async function checkInbound(raw: Buffer, o: InboundOptions): Promise<InboundAuth> {
  const sender = o.sender || `postmaster@${o.helo}`;
  const r = await mailauth.authenticate(raw, { sender, ip: o.ip, helo: o.helo, mta: o.hostname, resolver: askedAhead(raw, sender, o.resolver), disableBimi: true });
  // headers: Received-SPF, then our Authentication-Results (folded); only the latter is kept.
  const ar = /(?:^|\r\n)Authentication-Results: ((?:[^\r]|\r\n[ \t])*)/.exec(r.headers)?.[1] ?? `${o.hostname}; none`;
  const from = r.dkim.headerFrom.length === 1 ? r.dkim.headerFrom[0]! : undefined;
  const fromDomain = from?.includes('@') ? from.slice(from.lastIndexOf('@') + 1).toLowerCase() : undefined;
  const spf = r.spf ? r.spf.status.result : 'none';
  const dkim = r.dkim.results.map((x) => x.status.result);
  const dkimPass = r.dkim.results
    .filter((x) => x.status.result === 'pass')
    .map((x) => ({ domain: String((x as { signingDomain?: unknown }).signingDomain ?? '').toLowerCase(), selector: String((x as { selector?: unknown }).selector ?? '') }));
  const dmarc = r.dmarc ? { result: r.dmarc.status.result, policy: r.dmarc.policy || undefined } : { result: 'none', policy: undefined };
  let aligned: Alignment | undefined;
  if (dmarc.result === 'pass') aligned = 'dmarc';
  else if (fromDomain && dmarc.result !== 'fail') {
    // No DMARC record to say it: relaxed alignment of a passing DKIM d= or SPF domain with the From: domain.
    if (r.dkim.results.some((x) => x.status.result === 'pass' && x.status.aligned)) aligned = 'dkim';
    else if (r.spf && spf === 'pass' && tools.getAlignment(fromDomain, [r.spf.domain], { strict: false })) aligned = 'spf';
  }
  const temporary = spf === 'temperror' || dkim.includes('temperror') || dmarc.result === 'temperror';
  return { results: ar, fromDomain, spf, dkim, dkimPass, dmarc, aligned, temporary };
}

/** Field names an ARC-Message-Signature covers: DKIM's usual set without List-Unsubscribe, which a list sets per member after sealing. */
const ARC_SIGNED_FIELDS =
  'DKIM-Signature:From:Sender:Reply-To:Subject:Date:Message-ID:To:Cc:MIME-Version:Content-Type:Content-Transfer-Encoding:' +
  'Content-ID:Content-Description:In-Reply-To:References:List-Id:List-Help:List-Subscribe:List-Post:List-Owner:List-Archive';

/** Field names a DKIM-Signature covers: mailauth's default set (RFC 6376 §5.4.1's advice), List-Unsubscribe included (each list copy is signed on its own). */
const DKIM_SIGNED = new Set(
  (
    'From:Sender:Reply-To:Subject:Date:Message-ID:To:Cc:MIME-Version:Content-Type:Content-Transfer-Encoding:Content-ID:' +
    'Content-Description:Resent-Date:Resent-From:Resent-Sender:Resent-To:Resent-Cc:Resent-Message-ID:In-Reply-To:References:' +
    'List-Id:List-Help:List-Unsubscribe:List-Subscribe:List-Post:List-Owner:List-Archive:BIMI-Selector'
  )
    .toLowerCase()
    .split(':'),
);

export interface ArcSealerDeps {
  /** The suite's host name: the authserv-id it wrote at receipt, and the domain (`d=`) of the seal. */
  hostname: string;
  /** The sealing key (made at first need): its PEM text, and the parsed key when the caller keeps one (else parsed here, once per selector). */
  key: () => Promise<{ selector: string; privateKey: string; parsed?: KeyObject }>;
  now?: () => number;
  /** Signs on the calling thread (the checks' thread does), instead of in libuv's thread pool. */
  signHere?: boolean;
}

/** The header section of `raw`, one entry per field: lower-case name, value unfolded, the field as written (folded, without its last CRLF). */
function headerFields(raw: Buffer): Array<[string, string, string]> {
  const end = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, end === -1 ? raw.length : end).toString('latin1');
  return head
    .split(/\r\n(?![ \t])/)
    .map((f): [string, string, string] => {
      const colon = f.indexOf(':');
      return [f.slice(0, colon).trim().toLowerCase(), f.slice(colon + 1).replace(/\r\n(?=[ \t])/g, '').trim(), f];
    })
    .filter(([name]) => name !== '');
}

/** RFC 6376 §3.4.4 relaxed body canonicalization, hashed (SHA-256, base64): WSP runs to one SP, none at line ends, no trailing empty lines. */
function relaxedBodyHash(raw: Buffer): string {
  const end = raw.indexOf('\r\n\r\n');
  const body = end === -1 ? '' : raw.subarray(end + 4).toString('latin1');
  const lines = body.split('\r\n').map((l) => l.replace(/[ \t]+/g, ' ').replace(/ $/, ''));
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const canon = lines.length === 0 ? '' : `${lines.join('\r\n')}\r\n`;
  return createHash('sha256').update(canon, 'latin1').digest('base64');
}

/** `b=` folded in lines of 72 characters (whitespace in b= is ignored, RFC 6376 §3.5). */
const foldB = (b: string) => b.replace(/.{72}(?=.)/g, '$&\r\n ');

/** The `h=` value for `covered` (their names as written), folded before a colon once a line passes 64 characters (FWS is allowed there). */
function fieldNames(covered: Array<[string, string, string]>): string {
  let line = '';
  const out: string[] = [];
  for (const f of covered) {
    const name = f[2].slice(0, f[2].indexOf(':')).trim();
    if (line && line.length + name.length > 64) {
      out.push(line);
      line = '';
    }
    line += line || out.length ? `:${name}` : name;
  }
  return [...out, line].join('\r\n  ');
}

/**
 * Signs, as a DKIM-Signature (or an ARC-Message-Signature, the same form)
 * is signed (RFC 6376 §3.7): the covered fields relaxed, each with its CRLF,
 * then the signature field itself with an empty b= and no CRLF. RSA-SHA256
 * signs that text; Ed25519-SHA256 signs its SHA-256 hash (RFC 8463 §3).
 * The signature is made in libuv's thread pool, off the event loop.
 */
function signFields(covered: Array<[string, string, string]>, head: string, key: KeyObject, algorithm: 'rsa' | 'ed25519', here = false): Promise<string> {
  const data = Buffer.concat([...covered.map((f) => tools.formatRelaxedLine(f[2], '\r\n')), tools.formatRelaxedLine(head)]);
  return signAsync(algorithm === 'rsa' ? 'sha256' : null, algorithm === 'rsa' ? data : createHash('sha256').update(data).digest(), key, here);
}

/** crypto.sign with a callback (the work runs in libuv's thread pool), or without one when `here` (on this thread). */
function signAsync(algorithm: string | null, data: Buffer, key: KeyObject, here = false): Promise<string> {
  if (here) return Promise.resolve(sign(algorithm, data, key).toString('base64'));
  return new Promise((resolve, reject) => sign(algorithm, data, key, (err, sig) => (err ? reject(err) : resolve(sig.toString('base64')))));
}

/**
 * Makes the ARC set (RFC 8617 §4.1) that `raw` gets on top when it leaves:
 * ARC-Authentication-Results copied from our Authentication-Results field
 * (written at receipt), ARC-Message-Signature over the message as it
 * leaves, ARC-Seal with the chain validation status found at receipt
 * (`cv=none` for the first set). Returns nothing (an empty buffer) for a
 * message without our results, or whose chain had already failed before
 * it reached us (§5.1.2: a failed chain is not sealed further).
 *
 * The signatures are made here, with mailauth's canonicalization, rather
 * than by its sealMessage(): that one parses the PEM key for each of its
 * two signatures (about 1–3 ms each); the key is parsed once here.
 */
export function createArcSealer(d: ArcSealerDeps): (raw: Buffer) => Promise<Buffer> {
  const id = d.hostname.toLowerCase();
  const keys = new Map<string, KeyObject>();
  const signed = new Set(ARC_SIGNED_FIELDS.toLowerCase().split(':'));
  return async (raw) => {
    const fields = headerFields(raw);
    // Copied as written (folded): ARC-Authentication-Results keeps its lines short.
    const ours = fields.find(([name, value]) => name === 'authentication-results' && authservId(value) === id);
    if (!ours) return Buffer.alloc(0);
    const oursValue = ours[2].slice(ours[2].indexOf(':') + 1).trim();
    const instance = (f: [string, string, string]) => Number(/(?:^|;)\s*i\s*=\s*(\d+)/.exec(f[1])?.[1] ?? 0);
    const sets = new Map<number, Partial<Record<string, string>>>();
    for (const f of fields) {
      if (f[0] !== 'arc-seal' && f[0] !== 'arc-message-signature' && f[0] !== 'arc-authentication-results') continue;
      const i = instance(f);
      sets.set(i, { ...sets.get(i), [f[0]]: f[2] });
    }
    const last = sets.size === 0 ? 0 : Math.max(...sets.keys());
    const lastCv = /(?:^|;)\s*cv\s*=\s*([a-z]+)/i.exec(sets.get(last)?.['arc-seal'] ?? '')?.[1]?.toLowerCase();
    if (last > 0 && lastCv === 'fail') return Buffer.alloc(0);
    const found = /(?:^|;)\s*arc=([a-z]+)/i.exec(ours[1])?.[1]?.toLowerCase() ?? 'none';
    const cv = last === 0 ? 'none' : found === 'pass' ? 'pass' : 'fail';
    const i = last + 1;
    const k = await d.key();
    let key = k.parsed ?? keys.get(k.selector);
    if (!key) {
      key = createPrivateKey(k.privateKey);
      keys.set(k.selector, key);
    }
    const t = Math.floor((d.now ?? Date.now)() / 1000);

    // ARC-Message-Signature: like a DKIM-Signature (RFC 8617 §4.1.2), every instance of the signed fields, bottom up.
    const covered = fields.filter((f) => signed.has(f[0])).reverse();
    const amsHead = `ARC-Message-Signature: i=${i}; a=rsa-sha256; c=relaxed/relaxed; d=${id};\r\n s=${k.selector}; t=${t};\r\n h=${fieldNames(covered)};\r\n bh=${relaxedBodyHash(raw)};\r\n b=`;
    const ams = amsHead + foldB(await signFields(covered, amsHead, key, 'rsa', d.signHere));

    // ARC-Seal (§4.1.3, §5.1.1): the sets before ours in order (unless cv=fail), then ours, each AAR, AMS, AS.
    const aar = `ARC-Authentication-Results: i=${i}; ${oursValue}`;
    const chain: Buffer[] = [];
    if (cv !== 'fail') {
      for (let n = 1; n < i; n++) {
        const set = sets.get(n) ?? {};
        for (const name of ['arc-authentication-results', 'arc-message-signature', 'arc-seal']) chain.push(tools.formatRelaxedLine(set[name] ?? '', '\r\n'));
      }
    }
    const asHead = `ARC-Seal: i=${i}; a=rsa-sha256; t=${t}; cv=${cv}; d=${id};\r\n s=${k.selector}; b=`;
    const asData = Buffer.concat([...chain, tools.formatRelaxedLine(aar, '\r\n'), tools.formatRelaxedLine(ams, '\r\n'), tools.formatRelaxedLine(asHead)]);
    const seal = asHead + foldB(await signAsync('sha256', asData, key, d.signHere));
    return Buffer.from(`${seal}\r\n${ams}\r\n${aar}\r\n`, 'latin1');
  };
}

/** The authserv-id of an Authentication-Results value (RFC 8601 §2.2): the token before the first ";", lower case. */
export function authservId(value: string): string {
  return value.split(';', 1)[0]!.replace(/\([^)]*\)/g, '').trim().split(/\s+/)[0]!.toLowerCase();
}
