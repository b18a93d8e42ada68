// The inbound checks (SPF, DKIM, DMARC, ARC: mailauth's authenticate()) run
// in a worker thread, so the mail service's event loop keeps receiving,
// spooling and forwarding while a message's DKIM key is parsed and its
// signatures checked: about half the CPU a checked message costs here.
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { DnsSettings } from '../core/dns.ts';
import type { Logger } from '../core/log.ts';
import { packageRoot } from '../lib/paths.ts';
import type { Timeline } from '../lib/timeline.ts';
import type { InboundAuth, InboundOptions } from './mailauth.ts';

/** What the event loop asks the thread: one message and its envelope. */
export interface CheckRequest {
  id: number;
  raw: Uint8Array;
  options: Omit<InboundOptions, 'resolver'>;
  seal?: SealRequest | undefined;
}

/**
 * Asks the thread to make the ARC set of the message as it will be passed
 * on (checkedMessage() of inbound.ts: our results, `prefix`, the message),
 * with the suite's ARC key: one hand-over for the checks and the seal, and
 * the two signatures made there, not in libuv's thread pool. The seal
 * covers no field that content scoring adds (X-Spam…), so it holds after it.
 */
export interface SealRequest {
  selector: string;
  /**
   * The key's PEM text. The pool sends it to a thread only when it is not
   * the one that thread was sent last (its first seal, a rotation): the
   * thread keeps it parsed, so a message carries no key.
   */
  privateKey?: string | undefined;
  /** Our Received: field. */
  prefix: Uint8Array;
}

/** When the thread took the message, had its last DNS answer (absent: it asked none) and was done: epoch milliseconds (see lib/timeline.ts). */
export interface CheckTiming {
  start: number;
  dns?: number;
  end: number;
}

export type CheckReply = ({ id: number; auth: InboundAuth } | { id: number; error: string }) & { timing?: CheckTiming };

export interface InboundPool {
  /**
   * checkInbound() in a thread; `resolver` is not used (the threads ask the
   * `dns:` servers themselves). Rejects when the library fails, the thread
   * ends, or no answer came within the pool's timeout ({@link CheckTimeout}).
   */
  check(raw: Buffer, options: InboundOptions & { seal?: SealRequest | undefined }, timeline?: Timeline): Promise<InboundAuth>;
  /** Ends the threads; checks still running are rejected. */
  close(): Promise<void>;
}

/** A check that did not finish in time (a DNS server that never answers, a library stuck on a message). */
export class CheckTimeout extends Error {
  constructor(readonly seconds: number) {
    super(`the checks did not finish within ${seconds} s`);
  }
}

export interface InboundPoolOptions {
  dns: DnsSettings | undefined;
  log: Logger;
  /** Threads (default: one per core, at most 4). */
  threads?: number;
  /** Seconds a check may take; then it is answered as a temporary failure (the thread's late answer is dropped). */
  timeout: number;
}

/** One thread of the pool and how many checks it has under way. */
interface Slot {
  worker: Worker | undefined;
  busy: number;
  /** The ARC key this slot's thread was sent last (it keeps it; see {@link SealRequest}). */
  sealKey?: string | undefined;
}

/**
 * Worker threads (each started at its first check, again after it ended),
 * each with its own resolver for the top-level `dns:` setting and its own
 * cache of answers. A check goes to the thread with the fewest under way:
 * one thread was the bottleneck with every check and the ARC seal on
 * (half of a message's time was the wait for it). From the bundle a thread
 * is dist/inbound-worker.mjs; from source, src/mail/inbound-worker.ts
 * through tsx (tests, `npx makewaves`).
 */
export function createInboundPool(d: InboundPoolOptions): InboundPool {
  const fromSource = import.meta.url.endsWith('.ts');
  const entry = fromSource ? path.join(packageRoot(), 'src', 'mail', 'inbound-worker.ts') : path.join(packageRoot(), 'dist', 'inbound-worker.mjs');
  const pending = new Map<number, { resolve: (a: InboundAuth) => void; reject: (e: Error) => void; timeline: Timeline | undefined; slot: Slot; timer: NodeJS.Timeout }>();
  const slots: Slot[] = Array.from({ length: Math.max(1, d.threads ?? Math.min(4, availableParallelism())) }, () => ({ worker: undefined, busy: 0 }));
  let next = 0;

  /** Takes check `id` off the books (answered, failed or timed out); false when it already was. */
  const settle = (id: number) => {
    const p = pending.get(id);
    if (!p) return undefined;
    pending.delete(id);
    clearTimeout(p.timer);
    p.slot.busy--;
    // Only a thread with work keeps the process alive; an idle one is ended by close() on stop.
    if (p.slot.busy === 0) p.slot.worker?.unref();
    return p;
  };

  const start = (slot: Slot): Worker => {
    slot.sealKey = undefined;
    // From source the thread registers tsx itself: Node 20 does not apply an `--import tsx` of execArgv to a worker's entry file.
    const w = fromSource
      ? new Worker(`import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((t) => { t.register(); return import(${JSON.stringify(pathToFileURL(entry).href)}); });`, {
          eval: true,
          workerData: { dns: d.dns },
        })
      : new Worker(entry, { workerData: { dns: d.dns } });
    w.on('message', (r: CheckReply) => {
      const p = settle(r.id);
      if (!p) return;
      if (p.timeline && r.timing) {
        p.timeline.markAt('check-start', r.timing.start);
        if (r.timing.dns !== undefined) p.timeline.markAt('check-dns', r.timing.dns);
        p.timeline.markAt('check-end', r.timing.end);
      }
      if ('error' in r) p.reject(new Error(r.error));
      else p.resolve(r.auth);
    });
    const ended = (why: string) => {
      if (slot.worker !== w) return;
      slot.worker = undefined;
      const mine = [...pending].filter(([, p]) => p.slot === slot);
      if (mine.length > 0) d.log.error({ why, checks: mine.length }, 'inbound checks thread ended; its messages count as not authenticated');
      for (const [id] of mine) settle(id)!.reject(new Error(`inbound checks thread ended: ${why}`));
    };
    w.on('error', (err) => ended(err.message));
    w.on('exit', (code) => ended(`exit code ${code}`));
    return w;
  };

  return {
    check(raw, options, timeline) {
      const slot = slots.reduce((a, b) => (b.busy < a.busy ? b : a));
      const worker = (slot.worker ??= start(slot));
      const id = ++next;
      const { sender, ip, helo, hostname, seal } = options;
      // Copies of their own, moved to the thread rather than cloned: a small Buffer is a slice of Node's shared 8 KiB pool, which a clone copies whole.
      const bytes = new Uint8Array(raw);
      const transfer = [bytes.buffer];
      let sealing: SealRequest | undefined;
      if (seal) {
        const prefix = new Uint8Array(seal.prefix);
        transfer.push(prefix.buffer);
        const newKey = seal.privateKey !== slot.sealKey;
        if (newKey) slot.sealKey = seal.privateKey;
        sealing = { selector: seal.selector, prefix, ...(newKey ? { privateKey: seal.privateKey } : {}) };
      }
      return new Promise<InboundAuth>((resolve, reject) => {
        const timer = setTimeout(() => settle(id)?.reject(new CheckTimeout(d.timeout)), d.timeout * 1000);
        pending.set(id, { resolve, reject, timeline, slot, timer });
        slot.busy++;
        worker.ref();
        worker.postMessage({ id, raw: bytes, options: { sender, ip, helo, hostname }, seal: sealing } satisfies CheckRequest, transfer);
      });
    },
    async close() {
      const workers = slots.flatMap((s) => (s.worker ? [s.worker] : []));
      for (const s of slots) s.worker = undefined;
      for (const id of [...pending.keys()]) settle(id)!.reject(new Error('inbound checks thread stopped'));
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}
