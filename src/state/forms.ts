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
  {
    id: 'forms-2',
    // What became of each submission's mail, written by the mail queue after each attempt.
    sql: `ALTER TABLE form_submissions ADD COLUMN status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'delivered', 'bounced'));
          ALTER TABLE form_submissions ADD COLUMN reply TEXT;
          CREATE INDEX form_submissions_queue ON form_submissions (queue_id)`,
  },
];

/** What became of a submission's mail: still `queued` (reply: the last temporary failure), `delivered`, or `bounced` (reply: why). */
export type FormOutcome = 'queued' | 'delivered' | 'bounced';

/** What became of a submission's mail, in a few words (the CLI's `forms` and the panel show it). */
export function describeOutcome(r: Pick<FormSubmission, 'status' | 'reply'>): string {
  if (r.status === 'bounced') return `bounced: ${r.reply ?? 'no reply recorded'}`;
  if (r.status === 'delivered') return 'delivered';
  return r.reply ? `queued (last try: ${r.reply})` : 'queued';
}

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
  status: FormOutcome;
  /** The next hop's reply behind a bounce, or the last temporary failure while queued. */
  reply: string | null;
}

/** The form log: what handlers mailed, per tenant, newest last. */
export class FormLog {
  private readonly insert;
  private readonly recent;
  private readonly outcome;

  constructor(db: Db) {
    this.insert = db.prepare(
      `INSERT INTO form_submissions (tenant, at, remote, handler, recipients, subject, text, queue_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    // A bounce stays a bounce: recipients of the same mail delivered later do not hide it.
    this.outcome = db.prepare(
      `UPDATE form_submissions SET status = CASE WHEN status = 'bounced' THEN status ELSE @status END,
                                   reply = CASE WHEN status = 'bounced' THEN reply ELSE @reply END
       WHERE queue_id = @queueId`,
    );
    this.recent = db.prepare(`SELECT * FROM (SELECT * FROM form_submissions WHERE tenant = ? ORDER BY id DESC LIMIT ?) ORDER BY id`);
  }

  add(s: Omit<FormSubmission, 'id' | 'at' | 'status' | 'reply'>, at = new Date()): void {
    this.insert.run(s.tenant, at.toISOString(), s.remote, s.handler, JSON.stringify(s.recipients), s.subject, s.text, s.queueId);
  }

  /** Records what became of the mail queued as `queueId`. False when no submission sent it (not form mail). */
  recordOutcome(queueId: string, status: FormOutcome, reply: string | null): boolean {
    return this.outcome.run({ queueId, status, reply }).changes > 0;
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
      status: String(r.status) as FormOutcome,
      reply: r.reply === null ? null : String(r.reply),
    }));
  }
}
