import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Health } from '../../../src/core/health.ts';
import { createLogger } from '../../../src/core/log.ts';
import { reloadAll, type Service } from '../../../src/core/lifecycle.ts';
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

/** A service that records the snapshots it was handed, or throws `fails`. */
function service(name: string, fails?: string): Service & { taken: unknown[] } {
  const taken: unknown[] = [];
  return {
    name,
    taken,
    start: async () => [],
    stop: async () => undefined,
    reload(next) {
      if (fails) throw new Error(fails);
      taken.push(next);
    },
  };
}

describe('reloadAll', () => {
  it('hands the snapshot to every service, names the ones that failed with their error, logs each, and health says so', () => {
    const { log, lines } = logger();
    const health = new Health();
    const next = { tag: 'next' } as unknown as Registry;
    const [http, cgi, ftp] = [service('http'), service('cgi', 'pool limits refused'), service('ftp')];
    expect(reloadAll([http, cgi, ftp], next, log, health)).toEqual([{ service: 'cgi', error: 'pool limits refused' }]);
    expect(health.check()).toEqual({
      status: 'degraded',
      problems: [expect.objectContaining({ key: 'reload', message: 'the new configuration is applied except in cgi (pool limits refused); restart to apply it everywhere' })],
    });
    // Never the refusal's claim: the others do serve the new configuration.
    expect(JSON.stringify(health.check())).not.toContain('previous');
    expect(http.taken).toEqual([next]);
    // A service after the one that failed still takes it: no service is left behind by another's fault.
    expect(ftp.taken).toEqual([next]);
    expect(lines).toEqual([expect.objectContaining({ svc: 'cgi', err: 'pool limits refused', msg: 'cgi failed to take the new configuration' })]);
  });

  it('returns nothing when every service took it, and clears what a failed reload reported', () => {
    const { log } = logger();
    const health = new Health();
    reloadAll([service('a', 'broken')], {} as Registry, log, health);
    expect(health.check().status).toBe('degraded');
    expect(reloadAll([service('a'), service('b')], {} as Registry, log, health)).toEqual([]);
    expect(health.check()).toEqual({ status: 'ok', problems: [] });
  });
});
