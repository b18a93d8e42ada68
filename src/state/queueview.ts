import type { State } from './index.ts';

/** One queued message, as `makewaves queue` lists it and the operator's panel shows it. */
export interface QueueRow {
  id: string;
  ageMs: number;
  size: number;
  returnPath: string;
  attempts: number;
  /** Milliseconds to the next attempt (negative: due). */
  nextInMs: number;
  /** Recipients still waiting. */
  to: string[];
  lastReply: string | null;
}

/** The outbound queue at a glance: what `makewaves queue` prints and the operator's panel shows. */
export interface QueueOverview {
  rows: QueueRow[];
  /** Recipients still waiting, over every message. */
  pending: number;
  /** Age of the oldest message, in milliseconds (undefined when the queue is empty). */
  oldestMs: number | undefined;
  /**
   * Recipients tried at least once and waiting again, per recipient domain
   * (most first): how many, and the last reply of one of them.
   */
  deferred: Array<{ domain: string; recipients: number; lastReply: string }>;
}

/** Reads the queue from state (the running server's or a copy's: it needs no server). */
export function queueOverview(state: State, now = Date.now()): QueueOverview {
  const rows: QueueRow[] = [];
  const deferred = new Map<string, { recipients: number; lastReply: string }>();
  let pending = 0;
  for (const m of state.mailQueue.list()) {
    const to = state.mailQueue.recipients(m.id).filter((r) => r.status === 'pending').map((r) => r.rcpt);
    pending += to.length;
    rows.push({ id: m.id, ageMs: now - m.createdAt, size: m.size, returnPath: m.returnPath, attempts: m.attempts, nextInMs: m.nextAttempt - now, to, lastReply: m.lastReply });
    if (m.attempts === 0) continue;
    for (const rcpt of to) {
      const domain = rcpt.slice(rcpt.lastIndexOf('@') + 1).toLowerCase();
      const d = deferred.get(domain) ?? { recipients: 0, lastReply: m.lastReply ?? '' };
      d.recipients++;
      deferred.set(domain, d);
    }
  }
  const oldest = state.mailQueue.oldest();
  return {
    rows,
    pending,
    oldestMs: oldest === undefined ? undefined : now - oldest,
    deferred: [...deferred].map(([domain, d]) => ({ domain, ...d })).sort((a, b) => b.recipients - a.recipients || a.domain.localeCompare(b.domain)),
  };
}

/** A duration as the queue listing shows it: 45s, 12m, 5h, 3d. */
export function queueAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}
