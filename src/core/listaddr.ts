/**
 * The addresses of a mailing list, derived from its name. Pure: shared by
 * the config cross-check, the registry (RCPT routing) and the lists service.
 */

/** What mail to one of a list's addresses is for. */
export type ListRole = 'post' | 'request' | 'owner' | 'subscribe' | 'unsubscribe' | 'confirm' | 'bounces';

/** Local-part suffix of each role: `news`, `news-request`, ... */
export const LIST_SUFFIXES: ReadonlyArray<readonly [string, ListRole]> = [
  ['', 'post'],
  ['-request', 'request'],
  ['-owner', 'owner'],
  ['-subscribe', 'subscribe'],
  ['-unsubscribe', 'unsubscribe'],
  ['-confirm', 'confirm'],
  ['-bounces', 'bounces'],
];

/** Roles whose address carries a parameter after "+": `news-confirm+TOKEN`, `news-bounces+alice=example.net`. */
export const PARAM_ROLES: ReadonlySet<ListRole> = new Set(['confirm', 'bounces']);

/**
 * VERP (Bernstein's variable envelope return path): the member's address in
 * the local part of the bounce address, "@" written as "=" so that the
 * last "=" splits it back (`alice=example.net`).
 */
export function verpEncode(member: string): string {
  const at = member.lastIndexOf('@');
  return `${member.slice(0, at)}=${member.slice(at + 1)}`;
}

/** Reverses {@link verpEncode}; undefined when the parameter is not an encoded address. */
export function verpDecode(param: string): string | undefined {
  const eq = param.lastIndexOf('=');
  if (eq <= 0 || eq === param.length - 1) return undefined;
  const domain = param.slice(eq + 1);
  if (!/^[a-z0-9.-]+\.[a-z0-9-]+$/.test(domain)) return undefined;
  return `${param.slice(0, eq)}@${domain}`;
}

const MAILBOX = /^[^\s@<>()",;:\\[\]]{1,64}@[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?)+$/;

/** True for a plain, lower-case `local@domain` a list may mail. */
export function isMailbox(s: string): boolean {
  return s.length <= 254 && MAILBOX.test(s);
}


/** A member's address, lower-cased; throws the one line the CLI and the panel print for anything else. */
export function memberAddress(a: string): string {
  const lower = a.trim().toLowerCase();
  if (!isMailbox(lower)) throw new Error(`"${a}" is not an e-mail address`);
  return lower;
}
