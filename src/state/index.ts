import { openDb, type Db } from './db.ts';
import { MailQueueStore, queueMigrations } from './queue.ts';
import { TrafficCounters, trafficMigrations } from './traffic.ts';

export type { TrafficTotals } from './traffic.ts';
export type { QueuedMessage, QueuedRecipient, NewQueuedMessage } from './queue.ts';
export { TrafficCounters, MailQueueStore };

/** Durable runtime data shared by the services (SQLite in `<data>/makewaves.db`). */
export interface State {
  readonly db: Db;
  readonly traffic: TrafficCounters;
  readonly mailQueue: MailQueueStore;
  close(): void;
}

export function openState(dataDir: string): State {
  const db = openDb(dataDir, [...trafficMigrations, ...queueMigrations]);
  const traffic = new TrafficCounters(db);
  const mailQueue = new MailQueueStore(db);
  return {
    db,
    traffic,
    mailQueue,
    close() {
      traffic.flush();
      db.close();
    },
  };
}
