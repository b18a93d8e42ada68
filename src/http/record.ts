import type { IncomingMessage } from 'node:http';
import type { Metrics } from '../core/metrics.ts';
import type { Tenant } from '../core/registry.ts';
import type { TenantLogFiles } from '../lib/tenantlogs.ts';
import type { State } from '../state/index.ts';
import { combinedLine, DEFAULT_SITE } from './accesslog.ts';
import type { Outcome } from './static.ts';

export interface RecorderDeps {
  accessLogs: TenantLogFiles;
  state: State;
  metrics?: Metrics;
}

/** Writes a request's line to the tenant's access log (the default site's without a tenant), counts its traffic and its metrics. */
export type Recorder = (tenant: Tenant | undefined, req: IncomingMessage, remote: string, o: Outcome) => void;

export function createRecorder({ accessLogs, state, metrics }: RecorderDeps): Recorder {
  return function record(tenant: Tenant | undefined, req: IncomingMessage, remote: string, o: Outcome): void {
    const site = tenant?.id ?? DEFAULT_SITE;
    accessLogs.write(
      site,
      combinedLine({
        remote,
        method: req.method ?? '-',
        url: req.url ?? '-',
        httpVersion: req.httpVersion,
        status: o.status,
        bytes: o.bytes,
        referer: req.headers.referer,
        userAgent: req.headers['user-agent'],
      }),
    );
    if (tenant) state.traffic.add(tenant.id, o.bytes);
    metrics?.httpTally.add(site, o.status, o.bytes);
  };
}
