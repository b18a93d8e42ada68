import { promises as dnsPromises } from 'node:dns';

/** The top-level `dns:` setting (smtp.dns is its old name). */
export interface DnsSettings {
  servers: readonly string[];
  /** Seconds to wait for one answer. */
  timeout: number;
}

/**
 * The resolver for every lookup the suite makes (MX for delivery, the DNS
 * records `makewaves dns --check` reads): the configured servers (two tries,
 * `timeout` seconds each), or the system's (/etc/resolv.conf) without a setting.
 */
export function suiteResolver(dns: DnsSettings | undefined): dnsPromises.Resolver {
  if (!dns) return new dnsPromises.Resolver();
  const r = new dnsPromises.Resolver({ timeout: Math.round(dns.timeout * 1000), tries: 2 });
  r.setServers([...dns.servers]);
  return r;
}

/** A DNS lookup as mailauth asks it: a name and a record type, the records (or a node:dns error). */
export type Lookup = (name: string, type: string) => Promise<unknown>;

export interface LookupCacheOptions {
  /** Milliseconds an answer is kept (node:dns does not give the TTL of a TXT record). */
  maxAgeMs: number;
  /** Answers kept at most; the oldest goes first. */
  maxEntries: number;
  now?: () => number;
}

/** What a cached lookup keeps: the answer, or the "no such name / no such record" it got. */
type Cached = { at: number; value?: unknown; error?: unknown };

/**
 * `lookup` with a cache of its answers, so a sender's SPF, DKIM key and
 * DMARC records are asked once per `maxAgeMs` rather than for each of its
 * messages: an answer and a definite "none" (ENODATA, ENOTFOUND) are
 * kept; a failure (timeout, SERVFAIL, refused) is not, the next message
 * asks again. Lookups of the same name and type under way are shared.
 * Each caller gets its own copy of the records.
 */
export function cachedLookup(lookup: Lookup, o: LookupCacheOptions): Lookup {
  const now = o.now ?? Date.now;
  const kept = new Map<string, Cached>();
  const asking = new Map<string, Promise<unknown>>();
  const keep = (key: string, entry: Cached) => {
    kept.delete(key);
    kept.set(key, entry);
    if (kept.size > o.maxEntries) kept.delete(kept.keys().next().value!);
  };
  return (name, type) => {
    const key = `${type.toUpperCase()} ${name.toLowerCase()}`;
    const hit = kept.get(key);
    if (hit && now() - hit.at < o.maxAgeMs) return 'error' in hit ? Promise.reject(hit.error) : Promise.resolve(structuredClone(hit.value));
    let p = asking.get(key);
    if (!p) {
      p = lookup(name, type).then(
        (value) => {
          keep(key, { at: now(), value });
          return value;
        },
        (err: unknown) => {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENODATA' || code === 'ENOTFOUND') keep(key, { at: now(), error: err });
          throw err;
        },
      );
      p.then(
        () => asking.delete(key),
        () => asking.delete(key),
      );
      asking.set(key, p);
    }
    return p.then((value) => structuredClone(value));
  };
}
