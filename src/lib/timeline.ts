/**
 * Milliseconds from a start to each named stage (0.01 ms steps), for a log
 * line that shows where one request's time went. Marking costs one clock
 * read; nothing is kept past the object.
 */
export class Timeline {
  readonly marks: Record<string, number> = {};

  /** `start`: a `performance.now()` of this thread, by default now. */
  constructor(readonly start = performance.now()) {}

  /** Records `stage` as reached now (a stage marked twice keeps the last). */
  mark(stage: string): void {
    this.marks[stage] = Math.round((performance.now() - this.start) * 100) / 100;
  }

  /** Records `stage` at an absolute time (`performance.timeOrigin + performance.now()` of any thread). */
  markAt(stage: string, epochMs: number): void {
    this.marks[stage] = Math.round((epochMs - performance.timeOrigin - this.start) * 100) / 100;
  }
}

/** The current time as milliseconds since 1970 with sub-millisecond precision, comparable between threads. */
export function epochNow(): number {
  return performance.timeOrigin + performance.now();
}
