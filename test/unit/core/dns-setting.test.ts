import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../../src/core/config/load.ts';
import { runCli } from '../../helpers/cli.ts';
import { writeConfig } from '../../helpers/suite.ts';
import { tempDirs } from '../../helpers/tmp.ts';

const tmp = tempDirs('makewaves-dns-');

function configWith(main: Record<string, unknown>): string {
  const dir = tmp();
  return writeConfig(dir, { main, tenants: { 'a.test': { domains: ['a.test'] } } }).configDir;
}

const servers = { servers: ['127.0.0.1:5353'], timeout: 2 };

describe('dns: one resolver setting for every lookup', () => {
  it('top-level dns is the setting', () => {
    expect(loadConfig(configWith({ dns: servers, smtp: { listen: ['127.0.0.1:0'] } })).main.dns).toEqual(servers);
  });

  it('smtp.dns, its old name, still works and `makewaves check` says it is deprecated', async () => {
    const dir = configWith({ smtp: { listen: ['127.0.0.1:0'], dns: servers } });
    expect(loadConfig(dir).main.dns).toEqual(servers);
    const r = await runCli('check', '--config', dir);
    expect(r.code).toBe(0);
    expect(r.out).toContain('smtp.dns is deprecated: move it to a top-level dns: (same keys), the resolver for every lookup');
  });

  it('both at once is refused, naming the file and the key', () => {
    const dir = configWith({ dns: servers, smtp: { listen: ['127.0.0.1:0'], dns: servers } });
    expect(() => loadConfig(dir)).toThrow(ConfigError);
    try {
      loadConfig(dir);
    } catch (err) {
      expect((err as ConfigError).problems).toEqual([expect.stringMatching(/makewaves\.yaml: smtp\.dns: is the old name of dns: \(set in the same file\); keep only dns:$/)]);
    }
  });

  it('absent: the system resolver (no setting)', () => {
    expect(loadConfig(configWith({ smtp: { listen: ['127.0.0.1:0'] } })).main.dns).toBeUndefined();
  });
});
