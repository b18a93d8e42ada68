import { openDb, type Db } from './db.ts';
import { FormLog, formMigrations } from './forms.ts';
import { TrafficCounters, trafficMigrations } from './traffic.ts';

export type { FormSubmission } from './forms.ts';
export type { TrafficTotals } from './traffic.ts';
export { FormLog, TrafficCounters };

/** Durable runtime data shared by the services (SQLite in `<data>/makewaves.db`). */
export interface State {
  readonly db: Db;
  readonly traffic: TrafficCounters;
  readonly forms: FormLog;
  close(): void;
}

export function openState(dataDir: string): State {
  const db = openDb(dataDir, [...trafficMigrations, ...formMigrations]);
  const traffic = new TrafficCounters(db);
  return {
    db,
    traffic,
    forms: new FormLog(db),
    close() {
      traffic.flush();
      db.close();
    },
  };
}
