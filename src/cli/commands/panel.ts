import { loadConfig } from '../../core/config/load.ts';
import { openState } from '../../state/index.ts';

/**
 * `makewaves panel audit [--tenant ID] [--limit N]`: the control panel's
 * audit log, oldest first: when (UTC), from where, who, what, on which
 * tenant. Read from the state database, so it shows a running server's
 * entries as they are written.
 */
export function panelAudit(configDir: string, opts: { tenant?: string; limit?: number }, out: NodeJS.WritableStream = process.stdout): number {
  const limit = opts.limit ?? 100;
  if (!Number.isInteger(limit) || limit < 1) throw new Error(`--limit must be a whole number above 0, not "${opts.limit}"`);
  const config = loadConfig(configDir);
  const state = openState(config.main.dataDir);
  try {
    const entries = state.panel.auditLog({ tenant: opts.tenant, limit });
    for (const e of entries) {
      // One line each, control characters made visible: the detail can hold what a customer typed.
      const clean = (s: string) => s.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
      out.write(`${new Date(e.at).toISOString()}  ${clean(e.remote)}  ${clean(e.login)}  ${clean(e.action)}  ${clean(e.tenant)}${e.detail ? `  ${clean(e.detail)}` : ''}\n`);
    }
    out.write(`${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}${opts.tenant ? ` for tenant ${opts.tenant}` : ''}\n`);
    return 0;
  } finally {
    state.close();
  }
}
