import { isIPv4, isIPv6 } from 'node:net';

/**
 * The budget a client address counts against, for every per-client limit
 * (connection caps, rate limits, login lockouts):
 *
 * - an IPv4 address as it is;
 * - an IPv4-mapped IPv6 address (`::ffff:192.0.2.7`, as a dual-stack
 *   listener reports an IPv4 client) as the IPv4 address it maps;
 * - any other IPv6 address as its /64 in canonical form (RFC 5952:
 *   `2001:db8:1:2::/64`), the zone id (`%eth0`) dropped. A /64 is the
 *   usual end-site assignment (RFC 6177 and the RIRs' policies): one host
 *   can pick any of its 2^64 addresses, so counting it by address would
 *   give it 2^64 budgets;
 * - anything else (no address, `-`, junk) as the input itself.
 */
export function clientKey(ip: string): string {
  if (isIPv4(ip)) return ip;
  if (!isIPv6(ip)) return ip;
  const zone = ip.indexOf('%');
  const groups = ipv6Groups(zone === -1 ? ip : ip.slice(0, zone));
  if (!groups) return ip;
  // RFC 4291 §2.5.5.2: ::ffff:0:0/96 holds IPv4 addresses.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `${groups[6]! >> 8}.${groups[6]! & 0xff}.${groups[7]! >> 8}.${groups[7]! & 0xff}`;
  }
  return `${formatIpv6([groups[0]!, groups[1]!, groups[2]!, groups[3]!, 0, 0, 0, 0])}/64`;
}

/**
 * The fields a log line names a client by: its real address, and the key
 * its limits count against when that differs (an IPv6 /64, a mapped IPv4).
 */
export function clientFields(ip: string): { remote: string; clientKey?: string } {
  const key = clientKey(ip);
  return key === ip ? { remote: ip } : { remote: ip, clientKey: key };
}

/**
 * The eight 16-bit groups of an IPv6 address already checked by isIPv6 (no
 * zone), or undefined. Parsed here, not with ipaddr.js (a dependency of
 * mailauth): ipaddr.js (2.4 and 2.5) reads the IPv4-compatible `::192.0.2.7` as the
 * mapped `::ffff:192.0.2.7`, which would give any such client the budget
 * of an IPv4 address of its choosing.
 */
function ipv6Groups(ip: string): number[] | undefined {
  let text = ip;
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) !== -1) {
    // An embedded IPv4 address in the last 32 bits (RFC 4291 §2.2, form 3).
    const v4 = text.slice(lastColon + 1);
    if (!isIPv4(v4)) return undefined;
    const [a, b, c, d] = v4.split('.').map(Number) as [number, number, number, number];
    tail.push((a << 8) | b, (c << 8) | d);
    text = text.slice(0, lastColon + 1);
    // `::1.2.3.4` leaves `::`, `1::1.2.3.4` leaves `1::`, `1:2:3:4:5:6:1.2.3.4` leaves `1:...:6:`.
    if (text.endsWith(':') && !text.endsWith('::')) text = text.slice(0, -1);
  }
  const want = 8 - tail.length;
  const gap = text.indexOf('::');
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  let groups: number[];
  if (gap === -1) {
    groups = parse(text);
  } else {
    const head = parse(text.slice(0, gap));
    const rest = parse(text.slice(gap + 2));
    const zeros = want - head.length - rest.length;
    if (zeros < 1) return undefined;
    groups = [...head, ...new Array<number>(zeros).fill(0), ...rest];
  }
  if (groups.length !== want || groups.some((g) => !(g >= 0 && g <= 0xffff))) return undefined;
  return [...groups, ...tail];
}

/** RFC 5952 §4: lower-case hex, no leading zeros, the longest run of two or more zero groups (the first of equals) as `::`. */
function formatIpv6(groups: readonly number[]): string {
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestAt === -1) return hex.join(':');
  return `${hex.slice(0, bestAt).join(':')}::${hex.slice(bestAt + bestLen).join(':')}`;
}

/** What {@link PeerCounter.acquire} answers. */
export type Admission = { ok: true; key: string; open: number; release: () => void } | { ok: false; key: string; open: number };

/**
 * Open connections per client key ({@link clientKey}), for the
 * per-client connection caps of every service: `acquire` counts one
 * connection when the client's key has fewer than `limit` open, and hands
 * back its `release`, which counts it off once however often it is called
 * (a socket's 'close' and a session's end may both call it). A key whose
 * count falls to zero is forgotten, so the map holds only clients with a
 * connection open.
 */
export class PeerCounter {
  private readonly open = new Map<string, number>();

  /** Counts one connection from `ip` unless its key has `limit` open already (`limit` 0: no cap, still counted). */
  acquire(ip: string, limit: number): Admission {
    const key = clientKey(ip);
    const n = this.open.get(key) ?? 0;
    if (limit > 0 && n >= limit) return { ok: false, key, open: n };
    this.open.set(key, n + 1);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      const left = (this.open.get(key) ?? 1) - 1;
      if (left > 0) this.open.set(key, left);
      else this.open.delete(key);
    };
    return { ok: true, key, open: n + 1, release };
  }

  /** Connections open from the key of `ip`. */
  count(ip: string): number {
    return this.open.get(clientKey(ip)) ?? 0;
  }

  /** Client keys with a connection open. */
  get size(): number {
    return this.open.size;
  }
}
