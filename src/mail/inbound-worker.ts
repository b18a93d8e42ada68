// The inbound checks' thread (see inbound-pool.ts): mailauth's SPF, DKIM,
// DMARC and ARC checks of one message at a time, asked by the mail service's
// event loop, answered with what checkInbound() found.
import { parentPort, workerData } from 'node:worker_threads';
import { cachedLookup, suiteResolver, type DnsSettings } from '../core/dns.ts';
import { epochNow } from '../lib/timeline.ts';
import { checkInbound } from './mailauth.ts';
import type { CheckRequest, CheckReply } from './inbound-pool.ts';

const resolver = suiteResolver((workerData as { dns: DnsSettings | undefined }).dns);
// A sender's records are asked once a minute, not for each of its messages (the wait for the answer was a fifth of a message's time under load).
const cached = cachedLookup((name, type) => resolver.resolve(name, type), { maxAgeMs: 60_000, maxEntries: 10_000 });

parentPort!.on('message', (q: CheckRequest) => {
  const start = epochNow();
  let dns: number | undefined;
  // Each answer's time noted: the reply says when the last one came (the message's timeline, at debug level).
  const lookup = (name: string, type: string) =>
    cached(name, type).finally(() => {
      dns = epochNow();
    }) as Promise<never>;
  checkInbound(Buffer.from(q.raw.buffer, q.raw.byteOffset, q.raw.byteLength), { ...q.options, resolver: lookup }).then(
    (auth) => parentPort!.postMessage({ id: q.id, auth, timing: { start, dns, end: epochNow() } } satisfies CheckReply),
    (err: unknown) => parentPort!.postMessage({ id: q.id, error: err instanceof Error ? err.message : String(err), timing: { start, dns, end: epochNow() } } satisfies CheckReply),
  );
});
