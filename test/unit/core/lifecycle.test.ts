import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Health } from '../../../src/core/health.ts';
import { createLogger } from '../../../src/core/log.ts';
import { reloadAll, startAll, type Service } from '../../../src/core/lifecycle.ts';
import type { Registry } from '../../../src/core/registry.ts';

function logger() {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: createLogger({ level: 'debug', destination }), lines };
}

/** A service that records the snapshots it switched to; it refuses to prepare with `refuses`, or throws while switching with `breaks`. */
function service(name: string, o: { refuses?: string; breaks?: string } = {}): Service & { taken: unknown[] } {
  const taken: unknown[] = [];
  return {
    name,
    taken,
    start: async () => [],
    stop: async () => undefined,
    reload(next) {
      if (o.refuses) throw new Error(o.refuses);
      return () => {
        if (o.breaks) throw new Error(o.breaks);
        taken.push(next);
      };
    },
  };
}

describe('reloadAll', () => {
  it('all or nothing: one service refusing leaves every service on the previous snapshot, logs it, and health says so', () => {
    const { log, lines } = logger();
    const health = new Health();
    const next = { tag: 'next' } as unknown as Registry;
    const [http, cgi, ftp] = [service('http'), service('cgi', { refuses: 'pool limits refused' }), service('ftp')];
    expect(reloadAll([http, cgi, ftp], next, log, health)).toEqual({ applied: false, failed: [{ service: 'cgi', error: 'pool limits refused' }] });
    // Neither the service before the refusing one nor the one after it switched.
    expect(http.taken).toEqual([]);
    expect(ftp.taken).toEqual([]);
    expect(health.check()).toEqual({
      status: 'degraded',
      problems: [expect.objectContaining({ key: 'reload', message: 'the new configuration is refused by cgi (pool limits refused); the previous one keeps serving everywhere' })],
    });
    expect(lines).toEqual([expect.objectContaining({ svc: 'cgi', err: 'pool limits refused', msg: 'cgi refused the new configuration' })]);
  });

  it('a switch that throws after all prepared is named; the others still switch (it cannot be undone in them)', () => {
    const { log, lines } = logger();
    const health = new Health();
    const next = { tag: 'next' } as unknown as Registry;
    const [http, cgi, ftp] = [service('http'), service('cgi', { breaks: 'pool gone' }), service('ftp')];
    expect(reloadAll([http, cgi, ftp], next, log, health)).toEqual({ applied: true, failed: [{ service: 'cgi', error: 'pool gone' }] });
    expect(http.taken).toEqual([next]);
    expect(ftp.taken).toEqual([next]);
    expect(health.check().problems).toEqual([
      expect.objectContaining({ key: 'reload', message: 'the new configuration is applied except in cgi (pool gone); restart to apply it everywhere' }),
    ]);
    expect(lines).toEqual([expect.objectContaining({ svc: 'cgi', err: 'pool gone', msg: 'cgi failed to switch to the new configuration' })]);
  });

  it('returns nothing failed when every service took it, and clears what a failed reload reported', () => {
    const { log } = logger();
    const health = new Health();
    reloadAll([service('a', { refuses: 'broken' })], {} as Registry, log, health);
    expect(health.check().status).toBe('degraded');
    const [a, b] = [service('a'), service('b')];
    expect(reloadAll([a, b], {} as Registry, log, health)).toEqual({ applied: true, failed: [] });
    expect([a.taken.length, b.taken.length]).toEqual([1, 1]);
    expect(health.check()).toEqual({ status: 'ok', problems: [] });
  });
});

describe('startAll and a service ready after the others start', () => {
  /** A service whose start is recorded in `events`, and whose ready() settles when the test says. */
  function late(name: string, events: string[]) {
    let settle: (err?: Error) => void = () => undefined;
    const ready = new Promise<void>((resolve, reject) => (settle = (err) => (err ? reject(err) : resolve())));
    const svc: Service = {
      name,
      start: async () => {
        events.push(`start ${name}`);
        return [];
      },
      stop: async () => void events.push(`stop ${name}`),
      reload: () => () => undefined,
      ready: async () => {
        await ready;
        events.push(`ready ${name}`);
      },
    };
    return { svc, settle };
  }

  it('starts the services after it before its ready() settles, and resolves only once it has', async () => {
    const events: string[] = [];
    const cgi = late('cgi', events);
    const http = late('http', events);
    http.settle();
    const all = startAll([cgi.svc, http.svc], logger().log, () => events.push('bound')).then(() => events.push('started'));
    await new Promise((r) => setImmediate(r));
    // The drop from root (bound) comes before any wait for readiness: requests meanwhile are not served as root.
    expect(events).toEqual(['start cgi', 'start http', 'bound']);
    cgi.settle();
    await all;
    expect(events).toEqual(['start cgi', 'start http', 'bound', 'ready cgi', 'ready http', 'started']);
  });

  it('fails the start when bound() throws (a failed drop from root), stopping every service', async () => {
    const events: string[] = [];
    const { log, lines } = logger();
    const http = late('http', events);
    http.settle();
    await expect(startAll([http.svc], log, () => {
      throw new Error('setgid: EPERM');
    })).rejects.toThrow('setgid: EPERM');
    expect(events).toEqual(['start http', 'stop http']);
    expect(lines).toContainEqual(expect.objectContaining({ svc: 'start', err: 'setgid: EPERM' }));
  });

  it('fails the start when ready() rejects: every service started is stopped and the error named in the log', async () => {
    const events: string[] = [];
    const { log, lines } = logger();
    const cgi = late('cgi', events);
    const http = late('http', events);
    http.settle();
    cgi.settle(new Error('the launcher could not start: config refused'));
    await expect(startAll([cgi.svc, http.svc], log)).rejects.toThrow('the launcher could not start: config refused');
    expect(events).toEqual(['start cgi', 'start http', 'stop http', 'stop cgi']);
    expect(lines).toContainEqual(expect.objectContaining({ svc: 'cgi', err: 'the launcher could not start: config refused', msg: 'cgi failed to start; stopping the others' }));
  });

  it("has health say what a service's ready() awaits from the end of its start until it settles, and nothing for one that awaits nothing", async () => {
    const events: string[] = [];
    const health = new Health();
    const cgi = late('cgi', events);
    const http = late('http', events);
    http.settle();
    const all = startAll([{ ...cgi.svc, awaiting: () => 'the handler launcher is loading the configuration' }, { ...http.svc, awaiting: () => undefined }], logger().log, undefined, health);
    await new Promise((r) => setImmediate(r));
    expect(health.check()).toEqual({
      status: 'degraded',
      problems: [{ key: 'starting:cgi', severity: 'degraded', message: 'cgi is still starting: the handler launcher is loading the configuration' }],
    });
    cgi.settle();
    await all;
    expect(health.check()).toEqual({ status: 'ok', problems: [] });
  });

  it('says a service with ready() that does not say what it awaits is not finished with its start', async () => {
    const health = new Health();
    const lists = late('lists', []);
    const all = startAll([lists.svc], logger().log, undefined, health);
    await new Promise((r) => setImmediate(r));
    expect(health.check().problems).toEqual([{ key: 'starting:lists', severity: 'degraded', message: 'lists is still starting: its start is not finished' }]);
    lists.settle();
    await all;
    expect(health.check().problems).toEqual([]);
  });

  it('clears what it said is starting when the start fails', async () => {
    const health = new Health();
    const cgi = late('cgi', []);
    cgi.settle(new Error('the handler launcher did not say it was ready within 60 s of its start'));
    await expect(startAll([{ ...cgi.svc, awaiting: () => 'the handler launcher is loading the configuration' }], logger().log, undefined, health)).rejects.toThrow(/within 60 s/);
    expect(health.check()).toEqual({ status: 'ok', problems: [] });
  });
});
