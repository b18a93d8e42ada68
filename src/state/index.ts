import { openDb, type Db } from './db.ts';
import { TrafficCounters, trafficMigrations } from './traffic.ts';

export type { TrafficTotals } from './traffic.ts';
export { TrafficCounters };

/** Durable runtime data shared by the services (SQLite in `<data>/makewaves.db`). */
export interface State {
  readonly db: Db;
  readonly traffic: TrafficCounters;
  close(): void;
}

export function openState(dataDir: string): State {
  const db = openDb(dataDir, [...trafficMigrations]);
  const traffic = new TrafficCounters(db);
  return {
    db,
    traffic,
    close() {
      traffic.flush();
      db.close();
    },
  };
}
