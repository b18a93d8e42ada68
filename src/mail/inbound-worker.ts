// The inbound checks' thread (see inbound-pool.ts): mailauth's SPF, DKIM,
// DMARC and ARC checks of one message at a time, asked by the mail service's
// event loop, answered with what checkInbound() found.
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { cachedLookup, suiteResolver, type DnsSettings } from '../core/dns.ts';
import { keepTickShape } from '../lib/memory.ts';
import { epochNow } from '../lib/timeline.ts';
import { checkedMessage, stripOurResults } from './inbound.ts';
import { checkInbound, createArcSealer, keepParsedPublicKeys, type InboundAuth } from './mailauth.ts';
import type { CheckRequest, CheckReply, SealRequest } from './inbound-pool.ts';

// A thread is an isolate of its own: its tick objects' class too is held (lib/memory.ts says why).
keepTickShape();

keepParsedPublicKeys();
const resolver = suiteResolver((workerData as { dns: DnsSettings | undefined }).dns);
// A sender's records are asked once a minute, not for each of its messages (the wait for the answer was a fifth of a message's time under load).
const cached = cachedLookup((name, type) => resolver.resolve(name, type), { maxAgeMs: 60_000, maxEntries: 10_000 });

parentPort!.on('message', (q: CheckRequest) => {
  const start = epochNow();
  // A new key comes with the first message to be sealed with it (messages arrive in the order sent); one still being checked is sealed with it too.
  if (q.seal?.privateKey !== undefined && q.seal.privateKey !== sealKey?.privateKey) {
    try {
      sealKey = { selector: q.seal.selector, privateKey: q.seal.privateKey, parsed: createPrivateKey(q.seal.privateKey) };
    } catch {
      // Not a key this thread can use: its messages get no set here, and the event loop seals them itself (and logs why if that fails too).
      sealKey = undefined;
    }
  }
  let dns: number | undefined;
  // Each answer's time noted: the reply says when the last one came (the message's timeline, at debug level).
  const lookup = (name: string, type: string) =>
    cached(name, type).finally(() => {
      dns = epochNow();
    }) as Promise<never>;
  const raw = Buffer.from(q.raw.buffer, q.raw.byteOffset, q.raw.byteLength);
  checkInbound(raw, { ...q.options, resolver: lookup }).then(
    (auth) => (q.seal ? sealed(raw, auth, q.options.hostname, q.seal) : auth),
  ).then(
    (auth) => parentPort!.postMessage({ id: q.id, auth, timing: { start, dns, end: epochNow() } } satisfies CheckReply),
    (err: unknown) => parentPort!.postMessage({ id: q.id, error: err instanceof Error ? err.message : String(err), timing: { start, dns, end: epochNow() } } satisfies CheckReply),
  );
});

/** Per host name, the sealer; its key is the one last sent (see SealRequest), parsed once. */
const sealers = new Map<string, (raw: Buffer) => Promise<Buffer>>();
let sealKey: { selector: string; privateKey: string; parsed: KeyObject } | undefined;

/** `auth` with the ARC set of the message as the event loop will pass it on; without one when sealing fails (the event loop then seals it itself). */
async function sealed(received: Buffer, auth: InboundAuth, hostname: string, seal: SealRequest): Promise<InboundAuth> {
  let sealer = sealers.get(hostname);
  if (!sealer) {
    sealer = createArcSealer({ hostname, key: () => Promise.resolve(sealKey!), signHere: true });
    sealers.set(hostname, sealer);
  }
  try {
    if (!sealKey) throw new Error(`no usable ARC key ${seal.selector} in this thread`);
    const prefix = Buffer.from(seal.prefix.buffer, seal.prefix.byteOffset, seal.prefix.byteLength);
    const set = await sealer(checkedMessage(auth.results, prefix, stripOurResults(received, hostname).raw));
    return { ...auth, arcSet: set.toString('latin1') };
  } catch {
    // The event loop seals the message itself when no set comes back (and logs why if that fails too).
    return auth;
  }
}
