// The inbound checks (SPF, DKIM, DMARC, ARC: mailauth's authenticate()) run
// in a worker thread, so the mail service's event loop keeps receiving,
// spooling and forwarding while a message's DKIM key is parsed and its
// signatures checked: about half the CPU a checked message costs here.
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
  privateKey: string;
  /** Our Received: field. */
  prefix: Buffer;
}

/** When the thread took the message, had its last DNS answer (absent: it asked none) and was done: epoch milliseconds (see lib/timeline.ts). */
export interface CheckTiming {
  start: number;
  dns?: number;
  end: number;
}

export type CheckReply = ({ id: number; auth: InboundAuth } | { id: number; error: string }) & { timing?: CheckTiming };

export interface InboundPool {
  /** checkInbound() in the thread; `resolver` is not used (the thread asks the `dns:` servers itself). Rejects when the library fails or the thread ends. */
  check(raw: Buffer, options: InboundOptions & { seal?: SealRequest | undefined }, timeline?: Timeline): Promise<InboundAuth>;
  /** Ends the thread; checks still running are rejected. */
  close(): Promise<void>;
}

/**
 * One worker thread (started at the first check, again after it ended)
 * with its own resolver for the top-level `dns:` setting. From the bundle
 * it is dist/inbound-worker.mjs; from source, src/mail/inbound-worker.ts
 * through tsx (tests, `npx makewaves`).
 */
export function createInboundPool(d: { dns: DnsSettings | undefined; log: Logger }): InboundPool {
  const fromSource = import.meta.url.endsWith('.ts');
  const entry = fromSource ? path.join(packageRoot(), 'src', 'mail', 'inbound-worker.ts') : path.join(packageRoot(), 'dist', 'inbound-worker.mjs');
  const pending = new Map<number, { resolve: (a: InboundAuth) => void; reject: (e: Error) => void; timeline: Timeline | undefined }>();
  let worker: Worker | undefined;
  let next = 0;

  const start = (): Worker => {
    // From source the thread registers tsx itself: Node 20 does not apply an `--import tsx` of execArgv to a worker's entry file.
    const w = fromSource
      ? new Worker(`import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((t) => { t.register(); return import(${JSON.stringify(pathToFileURL(entry).href)}); });`, {
          eval: true,
          workerData: { dns: d.dns },
        })
      : new Worker(entry, { workerData: { dns: d.dns } });
    w.on('message', (r: CheckReply) => {
      const p = pending.get(r.id);
      if (!p) return;
      pending.delete(r.id);
      if (pending.size === 0) w.unref();
      if (p.timeline && r.timing) {
        p.timeline.markAt('check-start', r.timing.start);
        if (r.timing.dns !== undefined) p.timeline.markAt('check-dns', r.timing.dns);
        p.timeline.markAt('check-end', r.timing.end);
      }
      if ('error' in r) p.reject(new Error(r.error));
      else p.resolve(r.auth);
    });
    const ended = (why: string) => {
      if (worker !== w) return;
      worker = undefined;
      if (pending.size > 0) d.log.error({ why, checks: pending.size }, 'inbound checks thread ended; its messages count as not authenticated');
      for (const p of pending.values()) p.reject(new Error(`inbound checks thread ended: ${why}`));
      pending.clear();
    };
    w.on('error', (err) => ended(err.message));
    w.on('exit', (code) => ended(`exit code ${code}`));
    return w;
  };

  return {
    check(raw, options, timeline) {
      worker ??= start();
      const id = ++next;
      const { sender, ip, helo, hostname, seal } = options;
      return new Promise<InboundAuth>((resolve, reject) => {
        pending.set(id, { resolve, reject, timeline });
        // Only a thread with work keeps the process alive; an idle one is ended by close() on stop.
        worker!.ref();
        worker!.postMessage({ id, raw, options: { sender, ip, helo, hostname }, seal } satisfies CheckRequest);
      });
    },
    async close() {
      const w = worker;
      worker = undefined;
      for (const p of pending.values()) p.reject(new Error('inbound checks thread stopped'));
      pending.clear();
      if (w) await w.terminate();
    },
  };
}
