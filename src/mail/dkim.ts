// The one file that knows mailauth (https://github.com/postalsys/mailauth), the
// DKIM library by the author of nodemailer and smtp-server: its dkimSign() takes
// several signatures at once (`signatureData`), which its typings do not say.
import mailauth from 'mailauth';
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
