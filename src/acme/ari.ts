import type { X509Certificate } from 'node:crypto';

/**
 * ACME Renewal Information (RFC 9773): the certificate's identifier in the
 * CA's renewalInfo URL, and the renewal time chosen in the window the CA
 * suggests. acme-client has no ARI; this is the part it would need.
 */

const b64url = (b: Buffer) => b.toString('base64url');

/** One DER element at `at`: its tag, where its contents start and end. */
function element(der: Buffer, at: number): { tag: number; start: number; end: number } {
  const tag = der[at]!;
  let len = der[at + 1]!;
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n < 1 || n > 4) throw new Error('DER length out of range');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[start + i]!;
    start += n;
  }
  const end = start + len;
  if (end > der.length) throw new Error('DER element runs past its end');
  return { tag, start, end };
}

/** The children of the constructed element at `at`. */
function children(der: Buffer, at: number): number[] {
  const { start, end } = element(der, at);
  const out: number[] = [];
  for (let p = start; p < end; p = element(der, p).end) out.push(p);
  return out;
}

/** OID 2.5.29.35 (authorityKeyIdentifier), DER-encoded with its tag and length. */
const AKI_OID = Buffer.from([0x06, 0x03, 0x55, 0x1d, 0x23]);

/**
 * The keyIdentifier of the certificate's Authority Key Identifier
 * extension (RFC 5280 §4.2.1.1), read from its DER: Certificate →
 * tbsCertificate → [3] extensions → the extension whose OID is AKI →
 * OCTET STRING → SEQUENCE → [0] keyIdentifier.
 */
export function authorityKeyId(cert: X509Certificate): Buffer | undefined {
  const der = cert.raw;
  const tbs = children(der, 0)[0]!;
  const exts = children(der, tbs).find((p) => der[p] === 0xa3);
  if (exts === undefined) return undefined;
  for (const ext of children(der, children(der, exts)[0]!)) {
    const parts = children(der, ext);
    const oid = element(der, parts[0]!);
    if (!der.subarray(parts[0]!, oid.end).equals(AKI_OID)) continue;
    const octets = element(der, parts[parts.length - 1]!);
    const seq = octets.start;
    for (const field of children(der, seq)) {
      if (der[field] === 0x80) {
        const e = element(der, field);
        return der.subarray(e.start, e.end);
      }
    }
  }
  return undefined;
}

/** The serial number's DER integer bytes (a leading zero where the first bit is set, as DER writes it). */
export function serialBytes(cert: X509Certificate): Buffer {
  let hex = cert.serialNumber.replace(/[^0-9a-f]/gi, '');
  if (hex.length % 2) hex = `0${hex}`;
  const b = Buffer.from(hex, 'hex');
  return b[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b;
}

/** RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(serial); undefined without an AKI. */
export function certId(cert: X509Certificate): string | undefined {
  const aki = authorityKeyId(cert);
  return aki ? `${b64url(aki)}.${b64url(serialBytes(cert))}` : undefined;
}

export interface RenewalWindow {
  start: number;
  end: number;
  explanationURL?: string;
}

/** The suggestedWindow of a renewalInfo answer, or an error saying what is wrong with it. */
export function parseRenewalInfo(body: unknown): RenewalWindow {
  const w = (body as { suggestedWindow?: { start?: unknown; end?: unknown }; explanationURL?: unknown } | undefined)?.suggestedWindow;
  const start = typeof w?.start === 'string' ? Date.parse(w.start) : NaN;
  const end = typeof w?.end === 'string' ? Date.parse(w.end) : NaN;
  if (Number.isNaN(start) || Number.isNaN(end)) throw new Error('renewalInfo without a readable suggestedWindow');
  if (end <= start) throw new Error('renewalInfo whose suggestedWindow ends before it starts');
  const explanationURL = (body as { explanationURL?: unknown }).explanationURL;
  return { start, end, ...(typeof explanationURL === 'string' ? { explanationURL } : {}) };
}

/** A uniformly random point in the window (RFC 9773 §4.2), so renewals of many certificates spread out. */
export function pickInWindow(w: RenewalWindow, random = Math.random): number {
  return w.start + random() * (w.end - w.start);
}

/** How long until renewalInfo is asked again: the CA's Retry-After, at least a minute and at most a day; six hours when it gave none. */
export function nextAriCheckMs(retryAfterMs: number): number {
  if (retryAfterMs <= 0) return 6 * 3_600_000;
  return Math.min(Math.max(retryAfterMs, 60_000), 86_400_000);
}
