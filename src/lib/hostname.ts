// RFC 1123 §2.1 host names: labels of letters, digits and hyphens, 1–63
// octets, not starting or ending with a hyphen; 253 octets in all.
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/** True when `name` (already lower-cased, no trailing dot) is a valid DNS host name. */
export function isValidHostname(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  return name.split('.').every((label) => LABEL.test(label));
}

/**
 * Normalises an HTTP Host header value for lookup: lower case, port and one
 * trailing dot removed. IPv6 literals (`[::1]:8080`) come back bracketed
 * without the port, which matches no tenant.
 */
export function normalizeHost(host: string): string {
  let h = host;
  if (h.charCodeAt(0) === 91 /* [ */) {
    const end = h.indexOf(']');
    return end === -1 ? h.toLowerCase() : h.slice(0, end + 1).toLowerCase();
  }
  const colon = h.indexOf(':');
  if (colon !== -1) h = h.slice(0, colon);
  if (h.charCodeAt(h.length - 1) === 46 /* . */) h = h.slice(0, -1);
  return h.toLowerCase();
}

/** True for a loopback client address as a socket reports it: 127.0.0.0/8, ::1, or IPv4 loopback mapped into IPv6. */
export function isLoopbackAddress(address: string): boolean {
  return /^(?:::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/i.test(address) || address === '::1';
}
