import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LauncherClient } from '../../../src/cgi/launched.ts';
import { createLogger } from '../../../src/core/log.ts';

// The keeper (src/cgi/keeper-main.ts) with a launcher that starts in an instant (test/fixtures/launcher/flaky.mjs):
// how it is started again, and what the server makes of it, with the keeper's times made short.

const FLAKY = path.resolve(import.meta.dirname, '../../fixtures/launcher/flaky.mjs');
const isRoot = process.getuid?.() === 0;
const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0)) await c();
});

function launcher(restartMs = { first: 50, most: 30_000, calm: 300 }) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-keeper-restart-'));
  const l = new LauncherClient(dir, '/nowhere', createLogger({ level: 'silent' }), { entry: FLAKY, restartMs });
  cleanup.push(async () => {
    await l.stop(2_000);
    rmSync(dir, { recursive: true, force: true });
  });
  return { l, dir };
}
const relaunching = (l: LauncherClient) => once(l.events, 'relaunching') as Promise<[string, number]>;

describe.skipIf(!isRoot)('the keeper starting a launcher again', () => {
  it('backs off for a launcher that cannot start, even after one that had run a while (no 100 ms loop)', async () => {
    const { l, dir } = launcher();
    await l.ready;
    // Up longer than `calm`: its end counts as a first one.
    await new Promise((r) => setTimeout(r, 400));
    writeFileSync(path.join(dir, 'broken'), '');
    const first = relaunching(l);
    process.kill(l.launcherPid!, 'SIGKILL');
    expect((await first)[1]).toBe(1);
    // Each start again fails at once: never reset to a first end, whatever ran a while before.
    for (const want of [2, 3, 4]) {
      const [why, attempt] = await relaunching(l);
      expect(why).toMatch(/could not start again: .*broken is there/);
      expect(attempt).toBe(want);
    }
  });

  it('a refused reload is no longer said once a launcher started again has loaded the folder as it is', async () => {
    const { l, dir } = launcher();
    await l.ready;
    writeFileSync(path.join(dir, 'refuse-reload'), '');
    const answered = once(l.events, 'reloaded');
    l.reload();
    await answered;
    expect(l.reloadRefused).toBe('refused by the test');
    rmSync(path.join(dir, 'refuse-reload'));
    const up = once(l.events, 'ready');
    process.kill(l.launcherPid!, 'SIGKILL');
    await up;
    expect(l.restarting).toBeUndefined();
    expect(l.reloadRefused).toBeUndefined();
  });
});
