// The one file that knows mailauth (https://github.com/postalsys/mailauth), the
// DKIM, SPF, DMARC and ARC library by the author of nodemailer and smtp-server:
// its dkimSign() takes several signatures at once (`signatureData`), which its
// typings do not say; its relaxed alignment test (lib/tools.js) is not exported.
import { createRequire } from 'node:module';
import mailauth from 'mailauth';
import type { DNSResolver } from 'mailauth';
import type { Logger } from '../core/log.ts';
import type { Registry } from '../core/registry.ts';
import type { DkimKey, DkimKeys } from '../state/index.ts';

interface SignatureData {
  signingDomain: string;
  selector: string;
  privateKey: string;
  algorithm: 'rsa-sha256' | 'ed25519-sha256';
  canonicalization: 'relaxed/relaxed';
}

type SignFn = (input: Buffer, options: { signTime: Date; signatureData: SignatureData[] }) => Promise<{ signatures: string; errors: unknown[] }>;
const dkimSign = mailauth.dkimSign as unknown as SignFn;

/** Where a message the suite made came from, to choose the domain that signs it. */
export interface Origin {
  /** The envelope sender ("" for a DSN). */
  from: string;
  /** The tenant it is sent for, when there is one. */
  tenant?: string | undefined;
}

/** The domain of the first address in the message's From: header (lower case), or undefined. */
export function fromDomain(raw: Buffer): string | undefined {
  const end = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, end === -1 ? Math.min(raw.length, 64 * 1024) : end + 2).toString('latin1');
  const m = /(?:^|\r\n)from:((?:[^\r]|\r\n[ \t])*)/i.exec(head);
  if (!m) return undefined;
  const value = m[1]!.replace(/\r\n[ \t]/g, ' ');
  // The address is in <…> when there is a display name; otherwise the value is the address.
  const addr = /<([^<>]*)>/.exec(value)?.[1] ?? value;
  const at = addr.lastIndexOf('@');
  if (at === -1) return undefined;
  const domain = addr.slice(at + 1).trim().toLowerCase().replace(/[>\s].*$/, '');
  return domain || undefined;
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
    const signatureData = keys.map(
      (k): SignatureData => ({
        signingDomain: domain,
        selector: k.selector,
        privateKey: d.keys.privateKey(k),
        algorithm: k.algorithm === 'rsa' ? 'rsa-sha256' : 'ed25519-sha256',
        canonicalization: 'relaxed/relaxed',
      }),
    );
    const result = await dkimSign(raw, { signTime: new Date((d.now ?? Date.now)()), signatureData });
    if (result.errors.length > 0) throw new Error(`DKIM signing for ${domain} failed: ${String(result.errors[0])}`);
    return Buffer.concat([Buffer.from(result.signatures, 'latin1'), raw]);
  };
}

const tools = createRequire(import.meta.url)('mailauth/lib/tools.js') as {
  getAlignment(fromDomain: string, domains: string[], opts: { strict: boolean }): unknown;
};

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
  /** DMARC's result (`pass`, `fail`, `none`, `temperror`…) and the policy that applies to the From: domain (p=, or sp= for a subdomain). */
  dmarc: { result: string; policy: string | undefined };
  /** Set when the From: domain is authenticated in alignment. */
  aligned: Alignment | undefined;
  /** True when some check ended in temperror (a DNS timeout or SERVFAIL). */
  temporary: boolean;
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
 * SPF of the envelope sender, DKIM of the message, DMARC of the From:
 * domain and the ARC chain, in one pass (mailauth's authenticate(); BIMI
 * is not asked for). Never throws for a DNS problem: that is a temperror
 * in the result.
 */
export async function checkInbound(raw: Buffer, o: InboundOptions): Promise<InboundAuth> {
  const sender = o.sender || `postmaster@${o.helo}`;
  const r = await mailauth.authenticate(raw, { sender, ip: o.ip, helo: o.helo, mta: o.hostname, resolver: o.resolver, disableBimi: true });
  // headers: Received-SPF, then our Authentication-Results (folded); only the latter is kept.
  const ar = /(?:^|\r\n)Authentication-Results: ((?:[^\r]|\r\n[ \t])*)/.exec(r.headers)?.[1] ?? `${o.hostname}; none`;
  const from = r.dkim.headerFrom.length === 1 ? r.dkim.headerFrom[0]! : undefined;
  const fromDomain = from?.includes('@') ? from.slice(from.lastIndexOf('@') + 1).toLowerCase() : undefined;
  const spf = r.spf ? r.spf.status.result : 'none';
  const dkim = r.dkim.results.map((x) => x.status.result);
  const dmarc = r.dmarc ? { result: r.dmarc.status.result, policy: r.dmarc.policy || undefined } : { result: 'none', policy: undefined };
  let aligned: Alignment | undefined;
  if (dmarc.result === 'pass') aligned = 'dmarc';
  else if (fromDomain && dmarc.result !== 'fail') {
    // No DMARC record to say it: relaxed alignment of a passing DKIM d= or SPF domain with the From: domain.
    if (r.dkim.results.some((x) => x.status.result === 'pass' && x.status.aligned)) aligned = 'dkim';
    else if (r.spf && spf === 'pass' && tools.getAlignment(fromDomain, [r.spf.domain], { strict: false })) aligned = 'spf';
  }
  const temporary = spf === 'temperror' || dkim.includes('temperror') || dmarc.result === 'temperror';
  return { results: ar, fromDomain, spf, dkim, dmarc, aligned, temporary };
}

/** Field names an ARC-Message-Signature covers: DKIM's usual set without List-Unsubscribe, which a list sets per member after sealing. */
const ARC_SIGNED_FIELDS =
  'DKIM-Signature:From:Sender:Reply-To:Subject:Date:Message-ID:To:Cc:MIME-Version:Content-Type:Content-Transfer-Encoding:' +
  'Content-ID:Content-Description:In-Reply-To:References:List-Id:List-Help:List-Subscribe:List-Post:List-Owner:List-Archive';

export interface ArcSealerDeps {
  /** The suite's host name: the authserv-id it wrote at receipt, and the domain (`d=`) of the seal. */
  hostname: string;
  /** The sealing key (made at first need). */
  key: () => Promise<{ selector: string; privateKey: string }>;
  now?: () => number;
}

type SealFn = (
  input: Buffer,
  seal: { signingDomain: string; selector: string; privateKey: string; algorithm: 'rsa-sha256'; cv: string; authResults: string; signTime: Date; headerList: string },
) => Promise<Buffer>;
const sealMessage = mailauth.sealMessage as unknown as SealFn;

/** The header section of `raw` as `[lower-case name, value unfolded, value as written]`. */
function headerFields(raw: Buffer): Array<[string, string, string]> {
  const end = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, end === -1 ? raw.length : end).toString('latin1');
  return head
    .split(/\r\n(?![ \t])/)
    .map((f): [string, string, string] => {
      const colon = f.indexOf(':');
      const value = f.slice(colon + 1).trim();
      return [f.slice(0, colon).trim().toLowerCase(), value.replace(/\r\n(?=[ \t])/g, ''), value];
    })
    .filter(([name]) => name !== '');
}

/**
 * Makes the ARC set (RFC 8617 §4.1) that `raw` gets on top when it leaves:
 * ARC-Authentication-Results copied from our Authentication-Results field
 * (written at receipt), ARC-Message-Signature over the message as it
 * leaves, ARC-Seal with the chain validation status found at receipt
 * (`cv=none` for the first set). Returns nothing (an empty buffer) for a
 * message without our results, or whose chain had already failed before
 * it reached us (§5.1.2: a failed chain is not sealed further).
 */
export function createArcSealer(d: ArcSealerDeps): (raw: Buffer) => Promise<Buffer> {
  const id = d.hostname.toLowerCase();
  return async (raw) => {
    const fields = headerFields(raw);
    // Copied as written (folded): ARC-Authentication-Results keeps its lines short.
    const ours = fields.find(([name, value]) => name === 'authentication-results' && authservId(value) === id)?.[2];
    if (!ours) return Buffer.alloc(0);
    const seals = fields
      .filter(([name]) => name === 'arc-seal')
      .map(([, v]) => ({ i: Number(/(?:^|;)\s*i\s*=\s*(\d+)/.exec(v)?.[1] ?? 0), cv: /(?:^|;)\s*cv\s*=\s*([a-z]+)/i.exec(v)?.[1]?.toLowerCase() }))
      .sort((a, b) => b.i - a.i);
    if (seals.length > 0 && seals[0]!.cv === 'fail') return Buffer.alloc(0);
    const found = /(?:^|;)\s*arc=([a-z]+)/i.exec(ours)?.[1]?.toLowerCase() ?? 'none';
    const cv = seals.length === 0 ? 'none' : found === 'pass' ? 'pass' : 'fail';
    const key = await d.key();
    return sealMessage(raw, {
      signingDomain: id,
      selector: key.selector,
      privateKey: key.privateKey,
      algorithm: 'rsa-sha256',
      cv,
      authResults: ours,
      signTime: new Date((d.now ?? Date.now)()),
      headerList: ARC_SIGNED_FIELDS,
    });
  };
}

/** The authserv-id of an Authentication-Results value (RFC 8601 §2.2): the token before the first ";", lower case. */
export function authservId(value: string): string {
  return value.split(';', 1)[0]!.replace(/\([^)]*\)/g, '').trim().split(/\s+/)[0]!.toLowerCase();
}
