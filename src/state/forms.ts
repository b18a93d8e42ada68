import type { Db, Migration } from './db.ts';

export const formMigrations: Migration[] = [
  {
    id: 'forms-1',
    // Every message a form handler got queued, for `makewaves forms <tenant>`.
    sql: `CREATE TABLE form_submissions (
            id         INTEGER PRIMARY KEY,
            tenant     TEXT NOT NULL,
            at         TEXT NOT NULL,
            remote     TEXT NOT NULL,
            handler    TEXT NOT NULL,
            recipients TEXT NOT NULL,
            subject    TEXT NOT NULL,
            text       TEXT NOT NULL,
            queue_id   TEXT NOT NULL
          );
          CREATE INDEX form_submissions_tenant ON form_submissions (tenant, id)`,
  },
];

/** One stored submission. */
export interface FormSubmission {
  id: number;
  tenant: string;
  /** ISO 8601, UTC. */
  at: string;
  remote: string;
  handler: string;
  recipients: string[];
  subject: string;
  text: string;
  queueId: string;
}

/** The form log: what handlers mailed, per tenant, newest last. */
export class FormLog {
  private readonly insert;
  private readonly recent;

  constructor(db: Db) {
    this.insert = db.prepare(
      `INSERT INTO form_submissions (tenant, at, remote, handler, recipients, subject, text, queue_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.recent = db.prepare(`SELECT * FROM (SELECT * FROM form_submissions WHERE tenant = ? ORDER BY id DESC LIMIT ?) ORDER BY id`);
  }

  add(s: Omit<FormSubmission, 'id' | 'at'>, at = new Date()): void {
    this.insert.run(s.tenant, at.toISOString(), s.remote, s.handler, JSON.stringify(s.recipients), s.subject, s.text, s.queueId);
  }

  /** The last `limit` submissions of `tenant`, oldest first. */
  list(tenant: string, limit = 50): FormSubmission[] {
    const rows = this.recent.all(tenant, limit) as Array<Record<string, string | number>>;
    return rows.map((r) => ({
      id: Number(r.id),
      tenant: String(r.tenant),
      at: String(r.at),
      remote: String(r.remote),
      handler: String(r.handler),
      recipients: JSON.parse(String(r.recipients)) as string[],
      subject: String(r.subject),
      text: String(r.text),
      queueId: String(r.queue_id),
    }));
  }
}
