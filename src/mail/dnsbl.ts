import { isIP } from 'node:net';

/** One DNS blocklist (`spam.dnsbl` in makewaves.yaml). */
export interface Blocklist {
  zone: string;
  /** Where a listed sender reads why (a lookup page); absent: the TXT record's URL, else https://<zone>/. */
  url?: string | undefined;
}

/** What a blocklist lookup needs: A and TXT of one name (node:dns's Resolver has both). */
export interface BlocklistResolver {
  resolve4(name: string): Promise<string[]>;
  resolveTxt(name: string): Promise<string[][]>;
}

/** A listing: which list, what it answered, and the URL to tell the client. */
export interface Listing {
  zone: string;
  answer: string;
  url: string;
}

/**
 * The name to ask for `ip` in `zone` (RFC 5782 §2.1, §2.4): IPv4 octets
 * reversed, IPv6 as 32 reversed nibbles; undefined for anything else.
 */
export function queryName(ip: string, zone: string): string | undefined {
  const v4 = ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4 ? ip.slice(7) : ip;
  if (isIP(v4) === 4) return `${v4.split('.').reverse().join('.')}.${zone}`;
  if (isIP(ip) !== 6) return undefined;
  const [head, tail = ''] = ip.toLowerCase().split('::') as [string, string?];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  if (t.some((g) => g.includes('.')) || h.some((g) => g.includes('.'))) return undefined;
  const groups = ip.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  const nibbles = groups.map((g) => g.padStart(4, '0')).join('');
  return `${[...nibbles].reverse().join('.')}.${zone}`;
}

/**
 * Whether `ip` is listed in any of `lists` (asked in parallel). A list
 * answers 127.0.0.2–127.0.0.255 for a listed address (RFC 5782 §2.1);
 * 127.255.255.x are the list's own error codes (Spamhaus: "you asked
 * through a public resolver", "over the free limit") and not a listing.
 * No answer, NXDOMAIN, a timeout or SERVFAIL: not listed (a blocklist
 * that cannot be asked must not stop mail); `trouble` is called for the
 * last three, to be logged.
 */
export async function blocklisted(ip: string, lists: readonly Blocklist[], resolver: BlocklistResolver, trouble: (zone: string, code: string) => void): Promise<Listing | undefined> {
  const found = await Promise.all(
    lists.map(async (l): Promise<Listing | undefined> => {
      const name = queryName(ip, l.zone);
      if (!name) return undefined;
      let answers: string[];
      try {
        answers = await resolver.resolve4(name);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'error';
        if (code !== 'ENOTFOUND' && code !== 'ENODATA') trouble(l.zone, code);
        return undefined;
      }
      const answer = answers.find((a) => a.startsWith('127.') && !a.startsWith('127.255.255.') && a !== '127.0.0.1');
      if (!answer) return undefined;
      let url = l.url;
      if (!url) {
        // Most lists say where to look in a TXT record of the same name.
        const txt = await resolver.resolveTxt(name).then(
          (r) => r.map((parts) => parts.join('')).join(' '),
          () => '',
        );
        url = /https?:\/\/[^\s"<>]+/.exec(txt)?.[0] ?? `https://${l.zone}/`;
      }
      return { zone: l.zone, answer, url };
    }),
  );
  return found.find((f) => f !== undefined);
}
