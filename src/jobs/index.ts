import cron, { type ScheduledTask } from 'node-cron';
import type { Job, Service } from '../core/lifecycle.ts';
import type { Logger } from '../core/log.ts';

/**
 * Runs the periodic tasks the other services declare (log rotation, quota
 * rescans, queue retries, digests) on node-cron schedules, in UTC. A task
 * never overlaps itself; a failure is logged and the schedule goes on.
 */
export function createJobsService(jobs: () => Job[], rootLog: Logger): Service {
  const log = rootLog.child({ svc: 'jobs' });
  const tasks: ScheduledTask[] = [];
  const running = new Set<Promise<void>>();
  return {
    name: 'jobs',
    async start() {
      for (const job of jobs()) {
        const task = cron.schedule(
          job.schedule,
          async () => {
            const run = (async () => {
              const t0 = Date.now();
              try {
                await job.run();
                log.info({ job: job.name, ms: Date.now() - t0 }, 'job done');
              } catch (err) {
                log.error({ job: job.name, err: (err as Error).message }, 'job failed');
              }
            })();
            running.add(run);
            await run;
            running.delete(run);
          },
          { timezone: 'UTC', noOverlap: true, name: job.name },
        );
        tasks.push(task);
      }
      return [];
    },
    async stop(graceMs) {
      await Promise.all(tasks.splice(0).map((t) => t.destroy()));
      const deadline = new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref());
      await Promise.race([Promise.all(running), deadline]);
    },
    reload: () => () => undefined,
  };
}
