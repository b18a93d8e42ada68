import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/core/config/load.ts';
import type { AcmeChallenges } from '../../../src/core/contracts.ts';
import { startAll, stopAll } from '../../../src/core/lifecycle.ts';
import { createLogger } from '../../../src/core/log.ts';
import { Registry } from '../../../src/core/registry.ts';
import { createHttpService } from '../../../src/http/index.ts';
import { openState, type State } from '../../../src/state/index.ts';
import { rawRequest } from '../../helpers/http.ts';
import { writeConfig } from '../../helpers/suite.ts';

// A fault of ours in the synchronous part of a request's handling (here: the
// ACME challenge lookup, the first thing asked of every request, throwing)
// must cost that request a 500, not the process: a throw out of a request
// listener ends every service of the suite at once.

let dir: string;
let state: State;
let http: ReturnType<typeof createHttpService>;
let base: string;
const lines: Array<Record<string, unknown>> = [];

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-fault-'));
  const { configDir } = writeConfig(dir, { tenants: { 'a.test': { domains: ['a.test'] } }, files: { 'a.test/index.html': 'A home' } });
  const log = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    }),
  });
  const registry = new Registry(loadConfig(configDir));
  state = openState(registry.config.main.dataDir);
  const faulty: AcmeChallenges = {
    answer(req) {
      if (req.url === '/boom') throw new TypeError("Cannot read properties of undefined (reading 'on')");
      return undefined;
    },
  };
  http = createHttpService({ registry, state, log, acme: faulty });
  await startAll([http], log);
  // startAll logs each listener's URL.
  base = lines.find((l) => l.svc === 'http' && typeof l.url === 'string')!.url as string;
});

afterAll(async () => {
  await stopAll([http], 500);
  state?.close();
  rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
});

describe('a fault in the synchronous request path', () => {
  it('answers that request 500 with a reference, logs it, and keeps serving', async () => {
    const r = await rawRequest(base, '/boom', { host: 'a.test' });
    expect(r.status).toBe(500);
    const failed = lines.find((l) => l.msg === 'request failed');
    expect(failed).toMatchObject({ url: '/boom', host: 'a.test', err: expect.stringContaining('TypeError') });
    expect(r.body.toString()).toContain(failed!.ref as string);
    // The process and the listener are still there: the next request is served.
    const ok = await rawRequest(base, '/', { host: 'a.test' });
    expect([ok.status, ok.body.toString()]).toEqual([200, 'A home']);
  });
});
