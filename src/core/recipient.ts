/**
 * Parsing of envelope recipient addresses for routing. Pure: no config, no I/O.
 *
 * The point is to be exactly right about which domain an address really
 * names, so that no spelling of a foreign address can pass as a local one:
 * an MTA further down the line may still honour the old routing syntaxes
 * (RFC 1123 §5.2.16 percent hack, UUCP bang paths, RFC 821 source routes)
 * and would relay for us what we never meant to relay.
 */

export type ParsedRecipient =
  | { ok: true; local: string; domain: string }
  | { ok: false; why: 'syntax' | 'hidden-route'; detail: string };

// Characters that route in some MTA when they appear in a local part:
// "%" (percent hack), "!" (bang path), "@" and ":" (source route or a
// second address), "," (a list of routes).
const ROUTING_CHARS = /[%!@:,]/;

/**
 * Splits an envelope address into a lower-cased local part and domain.
 *
 * - A leading RFC 5321 §4.1.2 source route (`@a.test,@b.test:x@c.test`) is
 *   dropped as §C asks; the address is `x@c.test`.
 * - A quoted local part is unquoted (`"x"@a.test` is `x@a.test`, RFC 5321
 *   §4.1.2 quoted-string with `\` escapes).
 * - A local part that still contains a routing character (`x%other.test`,
 *   `other.test!x`, `"x@other.test"`) is refused as `hidden-route`: it names
 *   another destination, and we never relay.
 * - The domain loses one trailing dot; a domain literal (`[192.0.2.1]`) is
 *   returned as is and will match no hosted domain.
 */
export function parseRecipient(input: string): ParsedRecipient {
  let addr = input.trim();
  if (addr.startsWith('<') && addr.endsWith('>')) addr = addr.slice(1, -1);
  // RFC 5321 §4.1.2 A-d-l: "@" domain *( "," "@" domain ) ":" before the mailbox.
  const route = /^@[^:]*:/.exec(addr);
  if (route) addr = addr.slice(route[0].length);
  if (addr.length === 0 || addr.length > 254) return { ok: false, why: 'syntax', detail: 'empty or over-long address' };

  let local: string;
  let rest: string;
  if (addr.startsWith('"')) {
    // Quoted local part: read to the closing quote, honouring backslash escapes.
    let i = 1;
    let out = '';
    for (; i < addr.length; i++) {
      const c = addr[i]!;
      if (c === '\\') {
        i++;
        if (i >= addr.length) return { ok: false, why: 'syntax', detail: 'unfinished escape in quoted local part' };
        out += addr[i];
      } else if (c === '"') {
        break;
      } else {
        out += c;
      }
    }
    if (i >= addr.length) return { ok: false, why: 'syntax', detail: 'unterminated quoted local part' };
    local = out;
    rest = addr.slice(i + 1);
    if (!rest.startsWith('@')) return { ok: false, why: 'syntax', detail: 'no domain after quoted local part' };
    rest = rest.slice(1);
  } else {
    const at = addr.lastIndexOf('@');
    if (at === -1) return { ok: false, why: 'syntax', detail: 'no domain' };
    local = addr.slice(0, at);
    rest = addr.slice(at + 1);
    if (local.includes('"') || local.includes('\\')) return { ok: false, why: 'hidden-route', detail: 'quote or backslash inside the local part' };
  }
  local = local.toLowerCase();
  let domain = rest.toLowerCase();
  if (domain.endsWith('.')) domain = domain.slice(0, -1);
  if (local.length === 0) return { ok: false, why: 'syntax', detail: 'empty local part' };
  if (domain.length === 0) return { ok: false, why: 'syntax', detail: 'empty domain' };
  if (ROUTING_CHARS.test(local)) return { ok: false, why: 'hidden-route', detail: `local part "${local}" routes elsewhere` };
  if (/[\s\x00-\x1f\x7f]/.test(local) || /[\s\x00-\x1f\x7f@]/.test(domain)) return { ok: false, why: 'syntax', detail: 'control or space character' };
  return { ok: true, local, domain };
}

/**
 * The role a lower-cased local part names, if any: the local parts every
 * mail domain must take whatever its tenant set up, `postmaster` (RFC 5321
 * §4.5.1) and `abuse` (RFC 2142 §4).
 */
export function roleOf(local: string): 'postmaster' | 'abuse' | undefined {
  return local === 'postmaster' || local === 'abuse' ? local : undefined;
}

/**
 * True for `postmaster` with no domain, any case, bracketed or not (RFC
 * 5321 §4.1.1.3: "<Postmaster>" must be accepted; it names this server's
 * own postmaster). `abuse` has no such bare form.
 */
export function isBarePostmaster(input: string): boolean {
  let addr = input.trim();
  if (addr.startsWith('<') && addr.endsWith('>')) addr = addr.slice(1, -1);
  return addr.toLowerCase() === 'postmaster';
}
