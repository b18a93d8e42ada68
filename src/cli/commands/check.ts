import { ConfigError, loadConfig } from '../../core/config/load.ts';

/** `makewaves check`: runs the real loader; prints each problem and exits 1, or a summary and 0. */
export function check(configDir: string): number {
  try {
    const config = loadConfig(configDir);
    const domains = config.tenants.reduce((n, t) => n + t.config.domains.length, 0);
    process.stdout.write(`${config.dir}: OK (${config.tenants.length} tenants, ${domains} domains)\n`);
    return 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const p of err.problems) process.stderr.write(`${p}\n`);
      process.stderr.write(`${err.problems.length} problem${err.problems.length === 1 ? '' : 's'} found\n`);
      return 1;
    }
    throw err;
  }
}
