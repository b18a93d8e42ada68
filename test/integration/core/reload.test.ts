import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest } from '../../helpers/http.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite;
const body = async (host: string) => {
  const r = await rawRequest(t.http, '/', { host });
  return r.status === 200 ? r.body.toString() : r.status;
};

beforeAll(async () => {
  t = await startTestSuite({
    tenants: { 'a.test': { domains: ['a.test'] } },
    files: { 'a.test/index.html': 'site A', 'c.test/index.html': 'site C' },
  });
});
afterAll(async () => t?.stop());

describe('config reload on file change', () => {
  it('picks up a good change without a restart', async () => {
    expect(await body('alias-a.test')).toBe(404);
    t.writeTenant('a.test', { domains: ['a.test', 'alias-a.test'] });
    await waitFor(async () => (await body('alias-a.test')) === 'site A', 5_000, 'the new domain to be served');
    t.writeTenant('c.test', { domains: ['c.test'] });
    await waitFor(async () => (await body('c.test')) === 'site C', 5_000, 'the new tenant to be served');
  });

  it('refuses a broken change, says why, and keeps serving the old snapshot', async () => {
    const before = t.logs().length;
    t.writeTenant('a.test', 'domains: [a.test, "bad..name"]\nquota: lots\n');
    const refused = await waitFor(() => t.logs().slice(before).find((l) => l.msg?.toString().startsWith('configuration change refused')), 5_000, 'the refusal');
    expect(refused.problems).toEqual(
      expect.arrayContaining([expect.stringMatching(/a\.test\.yaml: domains\[1\]: "bad\.\.name" is not a valid host name/), expect.stringMatching(/quota: "lots" is not a size/)]),
    );
    expect(await body('a.test')).toBe('site A');
    expect(await body('alias-a.test')).toBe('site A');
    // A domain clash between two files is refused too.
    writeFileSync(path.join(t.configDir, 'tenants', 'a.test.yaml'), 'domains: [a.test]\n');
    t.writeTenant('d.test', { domains: ['c.test'] });
    await waitFor(() => t.logs().some((l) => (l.problems as string[] | undefined)?.some((p) => p.includes('already claimed by tenant "c.test"'))), 5_000, 'the clash');
    expect(await body('c.test')).toBe('site C');
  });

  it('reload() reports success and refusal', async () => {
    t.writeTenant('d.test', { domains: ['d.test'] });
    expect(t.suite.reload()).toBe(true);
    t.writeTenant('d.test', 'domains: 7\n');
    expect(t.suite.reload()).toBe(false);
  });
});
