import type { ChildProcess } from 'node:child_process';
import type { Logger } from '../core/log.ts';
import { ForkBox, frame, type RunRequest } from './forkbox.ts';
import { LaunchedProcess, routeBoxFrames } from './launched.ts';
import type { SpawnSpec } from './sandbox.ts';

/**
 * Persistent script boxes started by the suite itself (not root: no
 * launcher, every tenant's box built by the suite's own user, or by
 * cgi.user when root without the launcher): the same boxes and box-init as
 * the launcher's, both sockets held here. One box per tenant and what it
 * is made of (`key`); each run a LaunchedProcess fed by the box's frames.
 */
export class LocalForkBoxes {
  private readonly boxes = new Map<string, ForkBox>();
  private readonly runs = new Map<number, LaunchedProcess>();
  private seq = 0;

  constructor(
    private idleMs: number,
    private readonly log: Logger,
  ) {}

  setIdle(ms: number): void {
    this.idleMs = ms;
  }

  /** One run in the tenant's box (started now with `boxSpec` when it has none open). */
  start(key: string, boxSpec: () => SpawnSpec, tenant: string, req: RunRequest): ChildProcess {
    let box = this.boxes.get(key);
    if (!box?.open) {
      const spec = boxSpec();
      const made: ForkBox = new ForkBox(spec.command, spec.args, spec.cwd, this.idleMs, {
        ended: (id, _status, why) => {
          // Its exit status comes on the data socket; a run that never began is failed here.
          if (why === undefined) return;
          const run = this.runs.get(id);
          this.runs.delete(id);
          run?.fail(why);
        },
      }, this.log);
      made.proc.on('exit', () => this.boxes.get(key) === made && this.boxes.delete(key));
      routeBoxFrames(made.data, tenant, process.getuid?.() ?? 0, this.runs);
      this.boxes.set(key, made);
      box = made;
    }
    const id = ++this.seq;
    const into = box;
    const run: LaunchedProcess = new LaunchedProcess(() => {
      if (run.box) run.box.socket.write(frame(id, 'K'));
      else into.kill(id);
    });
    run.tenant = tenant;
    run.runId = id;
    this.runs.set(id, run);
    try {
      box.run(id, req);
    } catch (err) {
      this.runs.delete(id);
      queueMicrotask(() => run.fail((err as Error).message));
    }
    return run.asChild();
  }

  /** Every box takes no new run and ends once its runs are over (a reload, a stop). */
  retireAll(): void {
    for (const b of this.boxes.values()) b.retire();
    this.boxes.clear();
  }
}
