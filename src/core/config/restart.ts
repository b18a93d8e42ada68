import type { MainConfig } from './schema.ts';

/**
 * Settings of makewaves.yaml that are read once, at start (listeners,
 * their TLS, the services' own sections, where data lives, who the suite
 * runs as): a reload loads them but they take effect only on restart.
 * Everything else in makewaves.yaml, and every tenant file, applies at
 * the reload itself.
 */
export const RESTART_ONLY = [
  'hostname',
  'data',
  'sites',
  'user',
  'group',
  'dns',
  'http.listen',
  'http.tls',
  'http.cacheFileMax',
  'http.cacheTotal',
  'http.cacheRevalidate',
  'http.proxyTimeout',
  'http.headersTimeout',
  'http.requestTimeout',
  'smtp',
  'ftp',
  'sftp',
  'admin',
  'acme',
  'cgi.user',
] as const;

/**
 * Sections whose presence is read at start (the service is made then, or
 * not), while what they hold applies at the reload: turning the control
 * panel on or off needs a restart; its host, operators, upload limit and
 * idle timeout do not.
 */
export const RESTART_TO_TURN_ON_OR_OFF = ['panel'] as const;

function at(main: unknown, dotted: string): unknown {
  let v = main;
  for (const k of dotted.split('.')) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
  return v;
}

/** The restart-only settings that differ between two loaded main configs, by name. */
export function restartOnlyChanges(before: MainConfig, after: MainConfig): string[] {
  return [
    ...RESTART_ONLY.filter((k) => JSON.stringify(at(before, k)) !== JSON.stringify(at(after, k))),
    ...RESTART_TO_TURN_ON_OR_OFF.filter((k) => (at(before, k) === undefined) !== (at(after, k) === undefined)),
  ];
}
