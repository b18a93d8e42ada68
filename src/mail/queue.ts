import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { MailSubmitter, OutboundMessage } from '../core/contracts.ts';
import type { Logger } from '../core/log.ts';
import type { Timeline } from '../lib/timeline.ts';
import type { MailQueueStore, QueuedMessage } from '../state/index.ts';
import { CrlfNormalizer } from './crlf.ts';
import type { Deliverer, RecipientOutcome } from './deliver.ts';
import { buildDsn, statusOf, type FailedRecipient } from './dsn.ts';
import type { Spool, SpoolEnvelope } from '../state/spool.ts';

const PROCESS_TAG = randomBytes(3).toString('hex');
let idCounter = 0;

/**
 * A new, unique queue id, letters and digits only: milliseconds in base 36,
 * a counter, and a tag random per process (two processes on the same data
 * folder, one after the other, cannot collide within the same millisecond
 * and counter value unless their tags match too).
 */
export function newQueueId(now = Date.now()): string {
  idCounter = (idCounter + 1) % 1296;
  return `${now.toString(36)}${idCounter.toString(36).padStart(2, '0')}${PROCESS_TAG}`.toUpperCase();
}

export interface QueueSettings {
  /** Seconds before the first retry; doubles per attempt up to maxBackoff (Postfix: 300 → 4000). */
  minBackoff: number;
  maxBackoff: number;
  /** Seconds after which a message still not delivered is bounced. */
  lifetime: number;
  /** Messages in delivery at once. */
  concurrency: number;
}

export interface QueueDeps {
  store: MailQueueStore;
  spool: Spool;
  deliverer: Deliverer;
  log: Logger;
  /** Our host name: DSN sender and Reporting-MTA. */
  hostname: string;
  settings: QueueSettings;
  /** The clock; tests move it to make retries and expiry due without waiting. */
  now?: () => number;
  /** Told the outcome of every delivery attempt to one recipient (for metrics). */
  onOutcome?: (status: 'sent' | 'temp' | 'perm', reply: string) => void;
  /**
   * Told what became of a message after each attempt that changed it: still
   * `queued` (reply: the temporary failures), `delivered`, or `bounced`
   * (reply: the permanent ones). True means its sender reads that outcome
   * where it was recorded (the form log), so no bounce is mailed.
   */
  onMessageOutcome?: (o: { id: string; status: 'queued' | 'delivered' | 'bounced'; reply: string | null }) => boolean;
  /**
   * Told the final outcome for each recipient: `sent`, `failed` (bounced,
   * or given up), or `refused` (by the next hop while the sender waited, so
   * refused in its session). Temporary failures are not final: not told.
   */
  onRecipient?: (o: { tenant: string | null; rcpt: string; origRcpt: string; sender: string; outcome: 'sent' | 'failed' | 'refused'; reply: string }) => void;
  /** Bounces sent to one domain per hour; more are logged and not sent (0: none at all). Default: no limit. */
  bouncesPerDomainPerHour?: number;
  /**
   * Signs a message the suite originates (DKIM) before it is queued: every
   * such message, a DSN included, passes here ({@link MailQueue.originate}).
   */
  sign?: (raw: Buffer, origin: { from: string; tenant?: string | undefined }) => Promise<Buffer>;
}

/** A message to queue. `body` is streamed to disk; `abort` may stop that (see {@link Spool.write}). */
export interface Incoming {
  id?: string;
  sender: string;
  returnPath: string;
  tenant?: string | undefined;
  recipients: Array<{ rcpt: string; origRcpt: string }>;
  /** Written before the body (our Received: header). */
  prefix?: Buffer;
  body: AsyncIterable<Buffer> | Buffer;
  abort?: () => boolean;
  /** BODY=8BITMIME was given (RFC 6152): passed on. */
  eightBit?: boolean;
  /** SMTPUTF8 was given (RFC 6531): passed on; `needsUtf8` (asked once the body is in) says whether the message needs it. */
  smtputf8?: boolean;
  needsUtf8?: () => boolean;
  /**
   * Milliseconds the caller waits for the first delivery attempt (an SMTP
   * sender still in its session). When every recipient is refused
   * permanently within that time, the message leaves the queue without a
   * bounce and {@link enqueue} resolves with `refused` (the caller refuses
   * it in the session). Otherwise the attempt counts as the queue's first.
   */
  waitMs?: number;
  /** Told when the message is in the spool (`spooled`), in state (`stored`), and answered by the next hop (`relayed`). */
  timeline?: Timeline;
}

/** What {@link MailQueue.enqueue} resolves with. */
export interface Enqueued {
  id: string;
  size: number;
  /** Set when the next hop refused every recipient while the caller waited: its reply; the message is no longer queued. */
  refused?: string;
  /** True when every recipient was delivered while the caller waited. */
  delivered?: boolean;
}

/** A caller waiting for a first attempt; `waiting` turns false at its deadline. */
interface Waiter {
  waiting: boolean;
  timeline?: Timeline | undefined;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

/** How an attempt ended, for a caller waiting on it. */
interface AttemptEnd {
  refused?: string;
  delivered?: boolean;
}
/** Memory for messages kept from accept to delivery (each at most 64 KiB, see Spool). */
const CACHE_BYTES = 32 * 1024 * 1024;

/**
 * The durable outbound queue: messages are on disk (spool) and in state
 * before {@link enqueue} resolves; a worker hands them to the deliverer,
 * retries temporary failures with backoff, and bounces permanent ones
 * (RFC 3464 DSN) to the return path, never to a null one. A message leaves
 * the queue only when each recipient was delivered or bounced.
 */
export class MailQueue implements MailSubmitter {
  private readonly active = new Map<string, Promise<void>>();
  /** Small messages as accepted: their first delivery need not read the spool back. */
  private readonly cache = new Map<string, Buffer>();
  private cachedBytes = 0;
  /** Spool file → ids of the queued messages in it; the file goes when the set is empty. */
  private readonly fileRefs = new Map<string, Set<string>>();
  private batch: Array<() => void> = [];
  private batchCommit: Promise<void> | undefined;
  /** Accepted since the last pump could start them: due now. */
  private readonly fresh = new Set<string>();
  /** State may hold due messages not in `fresh` (after start, a flush, or a timer). */
  private scan = false;
  private readonly deleting = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  private abandoned = false;
  private readonly now: () => number;
  private readonly log: Logger;
  /** Bounces per recipient domain in the current hour. */
  private bounceWindow = { start: 0, counts: new Map<string, number>() };

  constructor(private readonly d: QueueDeps) {
    this.now = d.now ?? Date.now;
    this.log = d.log;
    d.spool.onStored = (file, id) => this.ref(file, id);
    d.spool.onSealed = async (file) => {
      if (this.fileRefs.has(file)) return;
      await this.d.spool
        .remove(file)
        .then(() => this.d.store.forgetFile(file))
        .catch((err: Error) => this.log.error({ file, err: err.message }, 'could not remove a spool segment'));
    };
  }

  /**
   * Writes the message to the spool (fsync'd file and folder) and records
   * it in state. Resolves with the queue id and size once both are done
   * (and, with `waitMs`, once the first attempt ended or that time passed);
   * rejects if either fails, leaving nothing behind.
   */
  async enqueue(m: Incoming): Promise<Enqueued> {
    const createdAt = this.now();
    const id = m.id ?? newQueueId(createdAt);
    const env: SpoolEnvelope = {
      v: 1,
      id,
      createdAt,
      sender: m.sender,
      returnPath: m.returnPath,
      tenant: m.tenant,
      recipients: m.recipients,
      ...(m.eightBit ? { eightBit: true } : {}),
      ...(m.smtputf8 ? { smtputf8: 2 as const } : {}),
    };
    // A message in memory whose sender waits for the next hop is offered to it now, while it is being stored:
    // the reply waits for both (250 only once it is on disk), and no longer for the one after the other.
    const early = m.waitMs && m.waitMs > 0 && !this.stopped && Buffer.isBuffer(m.body) ? this.deliverEarly(id, m, m.body) : undefined;
    let stored = false;
    try {
      const written = await this.store(id, createdAt, m, env);
      stored = true;
      if (early) return this.firstAttempt(id, written.size, m.waitMs!, m.timeline, early);
      if (m.waitMs && m.waitMs > 0 && !this.stopped) return this.firstAttempt(id, written.size, m.waitMs, m.timeline);
      this.fresh.add(id);
      this.pump();
      return { id, size: written.size };
    } finally {
      if (early && !stored) {
        void early.then((results) => {
          const sent = results.filter((r) => r.status === 'sent').map((r) => r.rcpt);
          // The sender is told to try again (452), so the next hop will see it twice: the one duplicate SMTP allows after a failure.
          if (sent.length > 0) this.log.warn({ qid: id, rcpts: sent }, 'the next hop took a message that could not be queued here; its sender was told to retry, so it may arrive twice');
        });
      }
    }
  }

  /** Spool and state for {@link enqueue}: resolves once both hold the message. */
  private async store(id: string, createdAt: number, m: Incoming, env: SpoolEnvelope): Promise<{ size: number }> {
    // The spool claims the file for this id (onStored) before it resolves.
    const { file, size, offset, data } = await this.d.spool.write(env, m.prefix ?? Buffer.alloc(0), m.body, m.abort, m.timeline);
    m.timeline?.mark('spooled');
    try {
      const smtputf8 = utf8Level(m);
      const row = { id, file, createdAt, sender: m.sender, returnPath: m.returnPath, tenant: m.tenant, size, offset, recipients: m.recipients, eightBit: m.eightBit, smtputf8 } as const;
      await this.batched(() => this.d.store.add(row));
      m.timeline?.mark('stored');
    } catch (err) {
      // Not acknowledged: the message must not come back from the spool on the next start.
      await this.release(id, file).catch(() => undefined);
      throw err;
    }
    if (data && this.cachedBytes + data.length <= CACHE_BYTES) {
      this.cache.set(id, data);
      this.cachedBytes += data.length;
    }
    return { size };
  }

  /**
   * The first delivery attempt of a message not yet stored: from memory,
   * to every recipient. Its outcome is recorded by {@link attempt} once the
   * message is in the spool and in state (never before: a refusal must
   * find it there to take it out).
   */
  private deliverEarly(id: string, m: Incoming, body: Buffer): Promise<RecipientOutcome[]> {
    const data = m.prefix && m.prefix.length > 0 ? Buffer.concat([m.prefix, body]) : body;
    const smtputf8 = utf8Level(m);
    m.timeline?.mark('relaying');
    return this.d.deliverer.deliver({
      id,
      sender: m.sender,
      recipients: m.recipients.map((r) => r.rcpt),
      params: { eightBit: m.eightBit ?? false, smtputf8 },
      open: () => Readable.from([data]),
    });
  }

  /**
   * The first attempt of a durably queued message while its sender waits
   * (outside the concurrency limit: the sender's session is the limit).
   * At the deadline the caller gets its answer and the attempt goes on as
   * any queue attempt would.
   */
  private async firstAttempt(id: string, size: number, waitMs: number, timeline: Timeline | undefined, early?: Promise<RecipientOutcome[]>): Promise<Enqueued> {
    const waiter: Waiter = { waiting: true, timeline };
    const run = this.launch(id, waiter, early);
    let t: NodeJS.Timeout | undefined;
    const deadline = new Promise<'deadline'>((resolve) => (t = setTimeout(() => resolve('deadline'), waitMs)));
    const outcome = await Promise.race([run, deadline]);
    clearTimeout(t);
    waiter.waiting = false;
    timeline?.mark('relayed');
    if (outcome === 'deadline') {
      this.log.info({ qid: id, waitMs }, 'the next hop did not answer while the sender waited; the message is queued');
      return { id, size };
    }
    if (outcome?.refused !== undefined) return { id, size, refused: outcome.refused };
    return { id, size, delivered: outcome?.delivered };
  }

  /**
   * Runs `write` in a transaction shared with the other writes of this turn
   * of the event loop (a spool group resolves many messages at once): one
   * commit instead of one each. Resolves once committed.
   */
  private batched(write: () => void): Promise<void> {
    this.batch.push(write);
    this.batchCommit ??= new Promise<void>((resolve, reject) => {
      setImmediate(() => {
        const writes = this.batch;
        this.batch = [];
        this.batchCommit = undefined;
        try {
          this.d.store.transaction(() => {
            for (const w of writes) w();
          });
          resolve();
        } catch (err) {
          reject(err as Error);
        }
      });
    });
    return this.batchCommit;
  }

  private ref(file: string, id: string): void {
    const set = this.fileRefs.get(file);
    if (set) set.add(id);
    else this.fileRefs.set(file, new Set([id]));
  }

  /** Takes a message out of state, and its spool file off the disk once no other message needs it. */
  private async release(id: string, file: string): Promise<void> {
    this.uncache(id);
    const set = this.fileRefs.get(file);
    set?.delete(id);
    const last = !set || set.size === 0;
    if (last) this.fileRefs.delete(file);
    // The segment still taking messages stays; it is removed when sealed (see constructor).
    const keep = !last || this.d.spool.isOpen(file);
    await this.batched(() => this.d.store.remove(id, file, keep));
    if (keep) return;
    await this.d.spool.remove(file);
    this.d.store.forgetFile(file);
  }

  /** {@link MailSubmitter}: queues a message from inside the suite (form handlers, lists, DSNs). */
  async submit(msg: OutboundMessage): Promise<string> {
    const n = new CrlfNormalizer();
    const pushed = n.push(msg.raw);
    const tail = n.end();
    // A clean message (a list copy is) comes back as it is: no copy of it is made.
    const body = tail.length === 0 ? pushed : Buffer.concat([pushed, tail]);
    const { id, size } = await this.originate(msg.from, msg.to, body, msg.tenant);
    this.log.info({ qid: id, tenant: msg.tenant, from: msg.from, to: msg.to, size }, 'message submitted');
    return id;
  }

  /**
   * Where every message the suite makes itself (form mail, list mail, DSNs)
   * enters the queue: the one place it is signed. A message that cannot be
   * signed is queued unsigned (and the reason logged): it is still mail
   * someone is waiting for.
   */
  private async originate(from: string, to: readonly string[], body: Buffer, tenant?: string): Promise<Enqueued> {
    let signed = body;
    if (this.d.sign) {
      try {
        signed = await this.d.sign(body, { from, tenant });
      } catch (err) {
        this.log.error({ tenant, from, err: (err as Error).message }, 'message queued without a DKIM signature: signing failed');
      }
    }
    return this.enqueue({ sender: from, returnPath: from, tenant, recipients: to.map((t) => ({ rcpt: t, origRcpt: t })), body: signed });
  }

  /** Reconciles state with the spool (a file without a row is re-recorded; a row without a file is dropped) and starts the worker. */
  async start(): Promise<void> {
    const cleared = this.d.spool.init();
    if (cleared > 0) this.log.info({ files: cleared }, 'removed unfinished spool files (never acknowledged)');
    const rows = this.d.store.files();
    const done = this.d.store.doneIds();
    for (const [id, file] of rows) this.ref(file, id);
    for (const file of this.d.spool.files()) {
      // A file a row points at is known; a large message's file (M…) holds
      // only that message. Group files (G…) are small and read whole, as a
      // row of theirs may have been lost with the last commits.
      if (this.fileRefs.has(file) && !file.startsWith('G')) continue;
      const records = await this.d.spool.records(file);
      if (records.length === 0 && !this.fileRefs.has(file)) {
        this.log.error({ file: this.d.spool.path(file) }, 'spool file without a readable message; left in place');
        continue;
      }
      for (const r of records) {
        if (rows.has(r.env.id) || done.has(r.env.id)) continue;
        const { len: _len, v: _v, ...env } = r.env;
        this.d.store.add({ ...env, file, size: r.size, offset: r.offset });
        this.ref(file, env.id);
        this.log.warn({ qid: env.id }, 'queue entry rebuilt from its spool file');
      }
      if (!this.fileRefs.has(file)) {
        await this.d.spool.remove(file);
        this.d.store.forgetFile(file);
      }
    }
    const present = new Set(this.d.spool.files());
    for (const [id, file] of this.d.store.files()) {
      if (present.has(file)) continue;
      this.log.error({ qid: id, file }, 'queue entry whose spool file is missing; dropped');
      this.fileRefs.delete(file);
      this.d.store.remove(id);
    }
    this.stopped = false;
    // A start is a flush: whatever stopped the last run (a crash, a relay
    // that was down) may be fixed now, so every message gets one attempt.
    const queued = this.d.store.flushAll();
    this.scan = true;
    if (queued > 0) this.log.info({ queued }, 'resuming the mail queue');
    this.pump();
    this.arm();
  }

  /** Makes every queued message due now (`postqueue -f`); returns how many are queued. */
  flush(): number {
    const n = this.d.store.flushAll();
    this.scan = true;
    this.pump();
    return n;
  }

  /** Removes a message from the queue (after its current attempt, if one runs). False if there is no such message. */
  async delete(id: string): Promise<boolean> {
    if (!this.d.store.get(id)) return false;
    if (this.active.has(id)) {
      this.deleting.add(id);
      await this.active.get(id);
      return true;
    }
    await this.release(id, this.d.store.get(id)!.file);
    this.log.info({ qid: id }, 'message deleted from the queue by the operator');
    return true;
  }

  /** Stops taking work; lets attempts under way finish for up to graceMs. */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.active.size > 0) {
      let t: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => (t = setTimeout(resolve, graceMs)));
      await Promise.race([Promise.all(this.active.values()), deadline]);
      clearTimeout(t);
      // State closes after this; attempts still running must not write to it.
      if (this.active.size > 0) this.abandoned = true;
    }
    await this.d.spool.seal();
    this.d.deliverer.close();
  }

  /**
   * Starts attempts while there are free slots: first messages accepted
   * since (due at once, known without a query), then, when the clock or a
   * flush says some may be due, those found in state.
   */
  private pump(): void {
    if (this.stopped) return;
    for (const id of this.fresh) {
      if (this.active.size >= this.d.settings.concurrency) return;
      this.launch(id);
    }
    if (!this.scan) return;
    const free = this.d.settings.concurrency - this.active.size;
    if (free <= 0) return;
    const limit = free + this.active.size;
    const due = this.d.store.due(this.now(), limit);
    if (due.length < limit) this.scan = false;
    for (const id of due) {
      if (this.active.size >= this.d.settings.concurrency) break;
      if (!this.active.has(id)) this.launch(id);
    }
  }

  private launch(id: string, waiter?: Waiter, early?: Promise<RecipientOutcome[]>): Promise<AttemptEnd | undefined> {
    this.fresh.delete(id);
    const run = this.attempt(id, waiter, early)
      .catch((err: Error) => {
        this.log.error({ qid: id, err: err.message }, 'delivery attempt failed inside the queue');
        return undefined;
      })
      .finally(() => {
        this.active.delete(id);
        this.pump();
      });
    this.active.set(id, run.then(() => undefined));
    return run;
  }

  /** Sets the timer for the next message that is not due yet. */
  private arm(): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const now = this.now();
    const next = this.d.store.nextDue();
    if (next === undefined) return;
    const wait = Math.min(Math.max(next - now, 0), MAX_TIMER_MS);
    this.timer = setTimeout(() => {
      this.scan = true;
      this.pump();
      this.arm();
    }, wait);
    this.timer.unref();
  }

  private uncache(id: string): void {
    const held = this.cache.get(id);
    if (!held) return;
    this.cache.delete(id);
    this.cachedBytes -= held.length;
  }

  private backoffMs(attempts: number): number {
    const { minBackoff, maxBackoff } = this.d.settings;
    return Math.min(maxBackoff, minBackoff * 2 ** Math.min(attempts, 30)) * 1000;
  }

  /** One delivery attempt; `early`: its deliveries, started before the message was stored (every recipient of a new message is pending). */
  private async attempt(id: string, waiter?: Waiter, early?: Promise<RecipientOutcome[]>): Promise<AttemptEnd | undefined> {
    const msg = this.d.store.get(id);
    if (!msg) return undefined;
    const pending = this.d.store.recipients(id).filter((r) => r.status === 'pending');
    const orig = new Map(pending.map((r) => [r.rcpt, r.origRcpt]));
    let results: RecipientOutcome[] = [];
    if (early) results = await early;
    else if (pending.length > 0) {
      waiter?.timeline?.mark('relaying');
      results = await this.d.deliverer.deliver({
        id,
        sender: msg.sender,
        recipients: pending.map((r) => r.rcpt),
        params: { eightBit: msg.eightBit, smtputf8: msg.smtputf8 },
        open: () => {
          const held = this.cache.get(id);
          return held ? Readable.from([held]) : this.d.spool.read(msg.file, msg.offset, msg.size);
        },
      });
    }
    this.uncache(id);
    if (this.abandoned) {
      this.log.warn({ qid: id }, 'attempt finished after the queue stopped; its result is not recorded and it will be tried again');
      return undefined;
    }
    for (const r of results) {
      this.log.info({ qid: id, tenant: msg.tenant, rcpt: r.rcpt, via: r.via, status: r.status, reply: r.reply, attempt: msg.attempts + 1 }, 'delivery attempt');
      this.d.onOutcome?.(r.status, r.reply);
    }
    // The sender is still in its session: a refusal of every recipient is
    // its refusal, told there, so no bounce is ever sent for it (a forged
    // sender would get it: backscatter).
    if (waiter?.waiting && results.length > 0 && results.every((r) => r.status === 'perm')) {
      await this.release(id, msg.file);
      for (const r of results) this.tellRecipient(msg, r.rcpt, orig.get(r.rcpt) ?? r.rcpt, 'refused', r.reply);
      this.log.info({ qid: id, tenant: msg.tenant, rcpts: results.map((r) => r.rcpt) }, 'refused by the next hop while the sender waited: no bounce');
      return { refused: results[0]!.reply };
    }
    const now = this.now();
    const expired = now - msg.createdAt >= this.d.settings.lifetime * 1000;
    const failed: FailedRecipient[] = [];
    const settle: Array<{ rcpt: string; status: 'sent' | 'failed' | 'pending'; reply: string }> = [];
    let lastTemp = '';
    const temps: string[] = [];
    for (const r of results) {
      if (r.status === 'sent') {
        settle.push({ rcpt: r.rcpt, status: 'sent', reply: r.reply });
      } else if (r.status === 'perm' || expired) {
        const reply =
          r.status === 'perm' ? r.reply : `4.4.7 gave up after ${Math.round(this.d.settings.lifetime / 3600)} h in the queue; last reply: ${r.reply}`;
        settle.push({ rcpt: r.rcpt, status: 'failed', reply });
        // RFC 3463 X.4.7: delivery time expired.
        const status = r.status === 'perm' ? statusOf(reply, true) : '4.4.7';
        failed.push({ rcpt: r.rcpt, origRcpt: orig.get(r.rcpt) ?? r.rcpt, status, diagnostic: reply, remoteMta: r.via });
      } else {
        settle.push({ rcpt: r.rcpt, status: 'pending', reply: r.reply });
        lastTemp = r.reply;
        temps.push(`${r.rcpt}: ${r.reply}`);
      }
    }
    // All delivered: one transaction takes the message out. Otherwise the
    // outcomes are recorded first, so a bounce is never followed by a
    // second delivery of what was already sent.
    if (failed.length > 0 || lastTemp) this.d.store.settle(id, settle);
    for (const x of settle) if (x.status !== 'pending') this.tellRecipient(msg, x.rcpt, orig.get(x.rcpt) ?? x.rcpt, x.status, x.reply);
    const told = this.tellOutcome(id, failed, temps);
    if (failed.length > 0 && !told) await this.bounce(msg, failed);
    const deleting = this.deleting.delete(id);
    if (lastTemp && !deleting) {
      this.d.store.defer(id, now + this.backoffMs(msg.attempts), lastTemp);
      this.arm();
      return {};
    }
    await this.release(id, msg.file);
    this.log.info({ qid: id, deleted: deleting || undefined }, deleting ? 'message deleted from the queue by the operator' : 'message left the queue');
    return { delivered: failed.length === 0 && !deleting };
  }

  /** Reports one recipient's final outcome to {@link QueueDeps.onRecipient}; a failure to record it never touches the delivery. */
  private tellRecipient(msg: QueuedMessage, rcpt: string, origRcpt: string, outcome: 'sent' | 'failed' | 'refused', reply: string): void {
    try {
      this.d.onRecipient?.({ tenant: msg.tenant, rcpt, origRcpt, sender: msg.returnPath, outcome, reply });
    } catch (err) {
      this.log.error({ qid: msg.id, rcpt, err: (err as Error).message }, 'could not record the outcome of a recipient');
    }
  }

  /** Reports an attempt's outcome to {@link QueueDeps.onMessageOutcome}; true when the sender learns of a bounce there. */
  private tellOutcome(id: string, failed: FailedRecipient[], temps: string[]): boolean {
    const tell = this.d.onMessageOutcome;
    if (!tell) return false;
    try {
      if (failed.length > 0) return tell({ id, status: 'bounced', reply: failed.map((f) => `${f.rcpt}: ${f.diagnostic}`).join('; ') });
      tell(temps.length > 0 ? { id, status: 'queued', reply: temps.join('; ') } : { id, status: 'delivered', reply: null });
    } catch (err) {
      // The delivery stands; only the record of it is missing (and a bounce is then mailed as usual).
      this.log.error({ qid: id, err: (err as Error).message }, 'could not record the outcome of a message');
    }
    return false;
  }

  /** True when one more bounce to `domain` fits this hour's allowance (and counts it). */
  private bounceAllowed(domain: string): boolean {
    const limit = this.d.bouncesPerDomainPerHour;
    if (limit === undefined) return true;
    const now = this.now();
    if (now - this.bounceWindow.start >= 3_600_000) this.bounceWindow = { start: now, counts: new Map() };
    const n = this.bounceWindow.counts.get(domain) ?? 0;
    if (n >= limit) return false;
    this.bounceWindow.counts.set(domain, n + 1);
    return true;
  }

  /** Queues a DSN for `failed` to `returnPath`; a null return path gets none (RFC 5321 §4.5.5). */
  private async bounce(msg: QueuedMessage, failed: FailedRecipient[]): Promise<void> {
    const { id: qid, returnPath, createdAt } = msg;
    if (returnPath === '') {
      this.log.info({ qid, rcpts: failed.map((f) => f.rcpt) }, 'undeliverable message with a null sender: no bounce');
      return;
    }
    const domain = returnPath.slice(returnPath.lastIndexOf('@') + 1).toLowerCase();
    if (!this.bounceAllowed(domain)) {
      this.log.warn({ qid, to: returnPath, domain, limit: this.d.bouncesPerDomainPerHour, rcpts: failed.map((f) => f.rcpt) }, 'bounce not sent: too many bounces to this domain in the last hour');
      return;
    }
    const headers = await this.readHeaders(msg);
    const dsn = buildDsn({
      hostname: this.d.hostname,
      queueId: qid,
      to: returnPath,
      arrival: new Date(createdAt),
      now: new Date(this.now()),
      failed,
      originalHeaders: headers,
    });
    const { id } = await this.originate('', [returnPath], dsn);
    this.log.info({ qid, dsn: id, to: returnPath, rcpts: failed.map((f) => f.rcpt) }, 'bounce queued');
  }

  /** The header section of a spooled message (at most 64 KiB). */
  private async readHeaders(msg: QueuedMessage): Promise<Buffer> {
    const limit = 64 * 1024;
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of this.d.spool.read(msg.file, msg.offset, msg.size) as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      total += chunk.length;
      const all = Buffer.concat(chunks);
      const end = all.indexOf('\r\n\r\n');
      if (end !== -1) return all.subarray(0, end + 2);
      if (total >= limit) return all.subarray(0, limit);
    }
    return Buffer.concat(chunks);
  }
}

/** SMTPUTF8 to pass on: 0 not asked; 1 asked, though the message does not need it; 2 needed. */
function utf8Level(m: Incoming): 0 | 1 | 2 {
  return m.smtputf8 ? (m.needsUtf8?.() === false ? 1 : 2) : 0;
}
