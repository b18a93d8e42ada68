import type { LoadedConfig } from '../../src/core/config/load.ts';
import { mainSchema, tenantSchema } from '../../src/core/config/schema.ts';
import { Registry } from '../../src/core/registry.ts';

/** A Registry from tenant objects (validated by the real schema), without files; `extra` adds keys to makewaves.yaml. */
export function registryOf(tenants: Record<string, unknown>, extra: Record<string, unknown> = {}): Registry {
  const main = mainSchema.parse({ hostname: 'mx.test', http: { listen: '127.0.0.1:0' }, smtp: { listen: '127.0.0.1:0' }, ...extra });
  const config: LoadedConfig = {
    dir: '/nonexistent',
    main: { ...main, dataDir: '/nonexistent/data', sitesDir: '/nonexistent/sites' },
    tenants: Object.entries(tenants).map(([id, c]) => ({ id, file: `/nonexistent/${id}.yaml`, config: tenantSchema.parse(c) })),
  };
  return new Registry(config);
}
