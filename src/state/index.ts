import { openDb, type Db } from './db.ts';
import { DkimKeys, dkimMigrations } from './dkim.ts';
import { FormLog, formMigrations } from './forms.ts';
import { FtpLoginLocks, ftpLoginMigrations } from './ftplogins.ts';
import { ListStore, listMigrations } from './lists.ts';
import { MailQueueStore, queueMigrations } from './queue.ts';
import { TrafficCounters, trafficMigrations } from './traffic.ts';

export type { FormSubmission } from './forms.ts';
export type { DkimKey, DkimAlgorithm } from './dkim.ts';
export { dkimRecord } from './dkim.ts';
export type { LoginRule, LoginLock } from './ftplogins.ts';
export type { TrafficTotals } from './traffic.ts';
export type { QueuedMessage, QueuedRecipient, NewQueuedMessage, Utf8Need } from './queue.ts';
export type { ListMember, ListToken, HeldPost, InboxMail, MemberMode, ArchivedPost } from './lists.ts';
export { FormLog, TrafficCounters, MailQueueStore, ListStore, FtpLoginLocks, DkimKeys };
export { hashToken } from './lists.ts';

/** Durable runtime data shared by the services (SQLite in `<data>/makewaves.db`). */
export interface State {
  readonly db: Db;
  readonly traffic: TrafficCounters;
  readonly forms: FormLog;
  readonly mailQueue: MailQueueStore;
  readonly lists: ListStore;
  readonly ftpLogins: FtpLoginLocks;
  /** DKIM keys per domain (files under <data>/dkim/, selectors here). */
  readonly dkim: DkimKeys;
  close(): void;
}

export function openState(dataDir: string): State {
  const db = openDb(dataDir, [...trafficMigrations, ...formMigrations, ...queueMigrations, ...listMigrations, ...ftpLoginMigrations, ...dkimMigrations]);
  const traffic = new TrafficCounters(db);
  const mailQueue = new MailQueueStore(db);
  return {
    db,
    traffic,
    forms: new FormLog(db),
    mailQueue,
    lists: new ListStore(db),
    ftpLogins: new FtpLoginLocks(db),
    dkim: new DkimKeys(db, dataDir),
    close() {
      traffic.flush();
      db.close();
    },
  };
}
