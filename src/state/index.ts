import { cgiUidMigrations } from './cgiuids.ts';
import { openDb, type Db } from './db.ts';
import { DkimKeys, dkimMigrations } from './dkim.ts';
import { FormLog, formMigrations } from './forms.ts';
import { FtpLoginLocks, ftpLoginMigrations } from './ftplogins.ts';
import { ListStore, listMigrations } from './lists.ts';
import { MailStats, mailStatsMigrations } from './mailstats.ts';
import { PanelStore, panelMigrations } from './panel.ts';
import { MailQueueStore, queueMigrations } from './queue.ts';
import { TrafficCounters, trafficMigrations } from './traffic.ts';

export type { FormSubmission } from './forms.ts';
export { describeOutcome } from './forms.ts';
export type { DkimKey, DkimAlgorithm } from './dkim.ts';
export { dkimRecord } from './dkim.ts';
export type { LoginRule, LoginLock, LockoutSettings, ThrottledLogin } from './ftplogins.ts';
export { loginRules, throttledLogin } from './ftplogins.ts';
export type { TrafficTotals } from './traffic.ts';
export type { MailEvent, MailDay, MailKind } from './mailstats.ts';
export type { QueuedMessage, QueuedRecipient, NewQueuedMessage, Utf8Need } from './queue.ts';
export type { ListMember, ListToken, HeldPost, InboxMail, MemberMode, ArchivedPost } from './lists.ts';
export type { PanelSession, AuditEntry } from './panel.ts';
export { keyTag } from './panel.ts';
export { FormLog, TrafficCounters, MailQueueStore, ListStore, FtpLoginLocks, DkimKeys, PanelStore, MailStats };
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
  /** The control panel's sessions and audit log. */
  readonly panel: PanelStore;
  /** What became of mail for each tenant's addresses, per day and the latest (the panel's Mail). */
  readonly mailStats: MailStats;
  close(): void;
}

export function openState(dataDir: string): State {
  const db = openDb(dataDir, [...trafficMigrations, ...formMigrations, ...queueMigrations, ...listMigrations, ...ftpLoginMigrations, ...dkimMigrations, ...panelMigrations, ...cgiUidMigrations, ...mailStatsMigrations]);
  const traffic = new TrafficCounters(db);
  const mailQueue = new MailQueueStore(db);
  const mailStats = new MailStats(db);
  return {
    db,
    traffic,
    forms: new FormLog(db),
    mailQueue,
    lists: new ListStore(db),
    ftpLogins: new FtpLoginLocks(db),
    dkim: new DkimKeys(db, dataDir),
    panel: new PanelStore(db),
    mailStats,
    close() {
      traffic.flush();
      mailStats.flush();
      db.close();
    },
  };
}
