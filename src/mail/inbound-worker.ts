// The inbound checks' thread (see inbound-pool.ts): mailauth's SPF, DKIM,
// DMARC and ARC checks of one message at a time, asked by the mail service's
// event loop, answered with what checkInbound() found.
import { parentPort, workerData } from 'node:worker_threads';
import { suiteResolver, type DnsSettings } from '../core/dns.ts';
import { checkInbound } from './mailauth.ts';
import type { CheckRequest, CheckReply } from './inbound-pool.ts';

const resolver = suiteResolver((workerData as { dns: DnsSettings | undefined }).dns);
const lookup = (name: string, type: string) => resolver.resolve(name, type) as Promise<never>;

parentPort!.on('message', (q: CheckRequest) => {
  checkInbound(Buffer.from(q.raw.buffer, q.raw.byteOffset, q.raw.byteLength), { ...q.options, resolver: lookup }).then(
    (auth) => parentPort!.postMessage({ id: q.id, auth } satisfies CheckReply),
    (err: unknown) => parentPort!.postMessage({ id: q.id, error: err instanceof Error ? err.message : String(err) } satisfies CheckReply),
  );
});
