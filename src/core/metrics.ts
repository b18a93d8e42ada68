import { Counter, Gauge, Histogram, Registry as PromRegistry, collectDefaultMetrics } from 'prom-client';

/**
 * The suite's metrics, in one catalogue so names and labels stay consistent
 * (Prometheus text format at the admin listener's /metrics). Hot paths keep
 * plain numbers in {@link HttpTally}; they are read at scrape time.
 */
export class Metrics {
  readonly registry = new PromRegistry();
  readonly configReloads = new Counter({
    name: 'makewaves_config_reloads_total',
    help: 'Configuration reloads by result (ok; refused: the previous one keeps serving; failed: a service could not take it).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly httpTally = new HttpTally();
  /** Label sets stay bounded: tenant ids (known tenants only), fixed reasons and results; never an address. */
  readonly httpDuration = new PlainHistogram(
    'makewaves_http_request_duration_seconds',
    'Time from a request\'s headers to its answer being handed to the socket, or to the client going away (every answer, any tenant).',
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    this.registry,
  );
  readonly httpRefused = new Counter({
    name: 'makewaves_http_refused_total',
    help: 'HTTP connections refused before routing, by reason: too-many-connections (over http.maxConnectionsPerIp: answered 503, or closed unanswered past the ones waiting).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly smtpSessions = new Counter({
    name: 'makewaves_smtp_sessions_total',
    help: 'Inbound SMTP connections, including those refused at once.',
    registers: [this.registry],
  });
  readonly smtpAccepted = new Counter({
    name: 'makewaves_smtp_messages_accepted_total',
    help: 'Inbound messages answered 250, by tenant ("_none": SRS bounces); a message for two tenants counts for each.',
    labelNames: ['tenant'] as const,
    registers: [this.registry],
  });
  readonly smtpRefused = new Counter({
    name: 'makewaves_smtp_refused_total',
    help: 'Inbound refusals by reason: at RCPT relay-denied, unknown-user, suspended, loop, syntax, srs-invalid, srs-not-bounce, lists-unavailable; utf8-without-smtputf8; too-many-connections; after DATA size, line-length, next-hop-refused.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly ftpLogins = new Counter({
    name: 'makewaves_ftp_logins_total',
    help: 'FTP logins by tenant ("_unknown" when the account does not exist) and result (ok, failed, locked, suspended, error).',
    labelNames: ['tenant', 'result'] as const,
    registers: [this.registry],
  });
  readonly mailDeliveryDuration = new Histogram({
    name: 'makewaves_mail_delivery_duration_seconds',
    help: 'Time of one outbound delivery attempt (one message to one relay or MX, all its recipients).',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });

  constructor() {
    // Process and Node.js runtime metrics (CPU, memory, event loop lag, GC, handles), under their usual names.
    collectDefaultMetrics({ register: this.registry });
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

  /** A gauge with labels whose samples are read from `read()` at scrape time (label values from config only: tenant ids, domains). */
  labelledGauge<L extends string>(name: string, help: string, labelNames: readonly L[], read: () => Array<[Record<L, string>, number]>): void {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [labels, value] of read()) this.set(labels, value);
      },
    });
  }

  /** A counter with labels, for services that count events (deliveries, handler runs). */
  counter<L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> {
    const existing = this.registry.getSingleMetric(name);
    if (existing) return existing as Counter<L>;
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  /**
   * Times one HTTP answer for the duration histogram, from `startMs`
   * (performance.now() when its headers arrived) to the response finishing
   * or its connection closing first. An answer given synchronously is
   * observed at once with {@link PlainHistogram.observeSince} instead.
   */
  timeRequest(res: NodeJS.EventEmitter, startMs = performance.now()): void {
    (res as Timed)[STARTED] = startMs;
    (res as Timed)[HISTOGRAM] = this.httpDuration;
    res.on('finish', stopTimer);
    res.on('close', stopTimer);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

const STARTED = Symbol('http request start');
const HISTOGRAM = Symbol('http duration histogram');
type Timed = NodeJS.EventEmitter & { [STARTED]?: number; [HISTOGRAM]?: PlainHistogram };
/** One listener function for every timed response (no closure per request); the first of 'finish' and 'close' counts. */
function stopTimer(this: Timed): void {
  const start = this[STARTED];
  if (start === undefined) return;
  this[STARTED] = undefined;
  this.removeListener('finish', stopTimer);
  this.removeListener('close', stopTimer);
  this[HISTOGRAM]?.observeSince(start);
}

/**
 * A histogram without labels kept as plain numbers: an observation is a loop
 * over the bounds and three additions, with no label hashing nor closure
 * (prom-client's own does both per call). Registered with prom-client as a
 * collector, so the scrape shows it as any other histogram.
 */
export class PlainHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
    registry: PromRegistry,
  ) {
    this.counts = bounds.map(() => 0);
    registry.registerMetric(this as unknown as Parameters<PromRegistry['registerMetric']>[0]);
  }

  observe(value: number): void {
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (value <= b[i]!) {
        this.counts[i]!++;
        break;
      }
    }
    this.sum += value;
    this.count++;
  }

  /** Observes the seconds since `startMs` (a performance.now() reading). */
  observeSince(startMs: number): void {
    this.observe((performance.now() - startMs) / 1000);
  }

  /** What prom-client's registry reads at scrape time: cumulative buckets, sum and count. */
  get(): { name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string | number>; value: number; metricName: string }[] } {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    let acc = 0;
    for (let i = 0; i < this.bounds.length; i++) {
      acc += this.counts[i]!;
      values.push({ labels: { le: this.bounds[i]! }, value: acc, metricName: `${this.name}_bucket` });
    }
    values.push({ labels: { le: '+Inf' }, value: this.count, metricName: `${this.name}_bucket` });
    values.push({ labels: {}, value: this.sum, metricName: `${this.name}_sum` });
    values.push({ labels: {}, value: this.count, metricName: `${this.name}_count` });
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
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

/** What a login refusal says, in FTP's own words (the reply text is the contract clients see). */
function ftpLoginResult(err: unknown): 'failed' | 'locked' | 'suspended' | 'error' {
  const { code, message } = err as { code?: unknown; message?: unknown };
  if (code !== 530) return 'error'; // our side failed (451): not the client's doing
  const text = String(message);
  if (/too many failed logins/i.test(text)) return 'locked';
  if (/suspended/i.test(text)) return 'suspended';
  return 'failed';
}

/**
 * Counts one FTP login attempt in makewaves_ftp_logins_total once it is
 * settled, and passes its result on unchanged. `tenantOf` names the tenant of
 * the account tried (a tenant id from config, so the label set stays
 * bounded); undefined, an account that does not exist, counts as "_unknown".
 */
export function observeFtpLogin<T>(metrics: Metrics | undefined, attempt: Promise<T>, tenantOf: () => string | undefined): Promise<T> {
  if (!metrics) return attempt;
  const count = (result: string) => metrics.ftpLogins.inc({ tenant: tenantOf() ?? '_unknown', result });
  return attempt.then(
    (value) => {
      count('ok');
      return value;
    },
    (err: unknown) => {
      count(ftpLoginResult(err));
      throw err;
    },
  );
}
