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
  'panel',
  'cgi.user',
] as const;

function at(main: unknown, dotted: string): unknown {
  let v = main;
  for (const k of dotted.split('.')) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
  return v;
}

/** The restart-only settings that differ between two loaded main configs, by name. */
export function restartOnlyChanges(before: MainConfig, after: MainConfig): string[] {
  return RESTART_ONLY.filter((k) => JSON.stringify(at(before, k)) !== JSON.stringify(at(after, k)));
}
