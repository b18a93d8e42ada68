import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/core/log.ts';
import { startSuite } from '../../../src/main.ts';
import { startTestSuite, writeConfig, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite | undefined;
const dirs: string[] = [];
afterAll(async () => {
  await t?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('a second suite on a data folder a running one uses', () => {
  it("is refused before its queue touches the running one's spool: a message being received there is left alone", async () => {
    t = await startTestSuite({ main: { smtp: { listen: ['127.0.0.1:0'] } }, tenants: { 'a.test': { domains: ['a.test'] } } });
    // What the running suite writes while a message is still coming in (spool/tmp), not yet acknowledged.
    const receiving = path.join(t.dataDir, 'spool', 'tmp', 'Rreceiving');
    writeFileSync(receiving, 'half a message');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-samedata-'));
    dirs.push(dir);
    const { configDir } = writeConfig(dir, {
      main: { data: t.dataDir, sites: t.sitesDir, smtp: { listen: ['127.0.0.1:0'] } },
      tenants: { 'a.test': { domains: ['a.test'] } },
    });
    await expect(startSuite({ configDir, log: createLogger({ level: 'silent' }), watch: false })).rejects.toThrow(/another makewaves server is using/);
    expect(existsSync(receiving)).toBe(true);
  });
});
