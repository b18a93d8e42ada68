import { Counter, Gauge, Registry as PromRegistry } from 'prom-client';

/**
 * The suite's metrics, in one catalogue so names and labels stay consistent
 * (Prometheus text format at the admin listener's /metrics). Hot paths keep
 * plain numbers in {@link HttpTally}; they are read at scrape time.
 */
export class Metrics {
  readonly registry = new PromRegistry();
  readonly configReloads = new Counter({
    name: 'makewaves_config_reloads_total',
    help: 'Configuration reloads by result (ok, refused).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly httpTally = new HttpTally();

  constructor() {
    const tally = this.httpTally;
    new Counter({
      name: 'makewaves_http_requests_total',
      help: 'HTTP requests answered, by tenant ("_default" for unknown hosts) and status class.',
      labelNames: ['tenant', 'class'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [tenant, t] of tally.tenants) {
          for (let c = 1; c <= 5; c++) if (t.classes[c]) this.inc({ tenant, class: `${c}xx` }, t.classes[c]);
        }
      },
    });
    new Counter({
      name: 'makewaves_http_response_bytes_total',
      help: 'HTTP response body bytes sent, by tenant.',
      labelNames: ['tenant'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [tenant, t] of tally.tenants) if (t.bytes) this.inc({ tenant }, t.bytes);
      },
    });
    new Gauge({
      name: 'makewaves_process_resident_bytes',
      help: 'Resident memory of the suite process.',
      registers: [this.registry],
      collect() {
        this.set(process.memoryUsage.rss());
      },
    });
    new Gauge({
      name: 'makewaves_uptime_seconds',
      help: 'Seconds since the suite started.',
      registers: [this.registry],
      collect() {
        this.set(Math.round(process.uptime()));
      },
    });
  }

  /** Registers a gauge whose value is read from `read()` at scrape time (queue size, sessions). */
  gauge(name: string, help: string, read: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  /** A counter with labels, for services that count events (deliveries, handler runs). */
  counter<L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> {
    const existing = this.registry.getSingleMetric(name);
    if (existing) return existing as Counter<L>;
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** Per-tenant HTTP counts kept as plain numbers: one Map lookup per request. */
export class HttpTally {
  readonly tenants = new Map<string, { classes: number[]; bytes: number }>();

  add(tenant: string, status: number, bytes: number): void {
    let t = this.tenants.get(tenant);
    if (!t) {
      t = { classes: [0, 0, 0, 0, 0, 0], bytes: 0 };
      this.tenants.set(tenant, t);
    }
    const c = (status / 100) | 0;
    if (c >= 1 && c <= 5) t.classes[c]!++;
    t.bytes += bytes;
  }
}
