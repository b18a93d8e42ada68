import http from 'node:http';
import type { HealthProblem } from '../core/contracts.ts';
import type { Service } from '../core/lifecycle.ts';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Registry } from '../core/registry.ts';
import { closeHttpServer, formatAddress, listenOn, parseListen } from '../lib/listen.ts';

export interface AdminDeps {
  registry: Registry;
  metrics: Metrics;
  /** What is wrong right now: problems reported by services and probes run per request (listeners connected to). */
  health: { checkAll(): Promise<{ status: 'ok' | 'degraded' | 'down'; problems: HealthProblem[] }> };
  log: Logger;
  /** Names of the services running beside this one, for /healthz. */
  services: () => string[];
}

/**
 * True when a Host field names the loopback listener itself: `localhost`,
 * a 127.0.0.0/8 address or `[::1]`, with or without a port. admin.listen
 * may only be loopback, so no other name reaches it legitimately.
 */
export function loopbackHost(host: string): boolean {
  return /^(?:localhost|127(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}|\[::1\])(?::\d{1,5})?$/i.test(host);
}

/**
 * The operator's loopback listener: `/metrics` in Prometheus text format and
 * `/healthz`: 200 `{"status":"ok"}`, 200 `{"status":"degraded","problems":[...]}`
 * while something needs the operator, 503 `{"status":"down",...}` when a
 * listener is not serving; each with a short summary.
 */
export function createAdminService({ registry, metrics, health, log: rootLog, services }: AdminDeps): Service {
  const log = rootLog.child({ svc: 'admin' });
  let current = registry;
  let server: http.Server | undefined;
  const started = Date.now();

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = (req.url ?? '/').split('?')[0];
    const host = req.headers.host;
    if (host !== undefined && !loopbackHost(host)) {
      // A browser sends the name of the page that asked (DNS rebinding): the listener is loopback only, and so are the names it answers.
      log.info({ remote: req.socket.remoteAddress, host: host.slice(0, 100), why: 'not a loopback Host' }, 'admin request refused');
      res.writeHead(421, { 'Content-Type': 'text/plain' });
      res.end('misdirected request: ask for 127.0.0.1, [::1] or localhost\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' });
      res.end('method not allowed\n');
      return;
    }
    if (url === '/metrics') {
      const body = await metrics.text();
      res.writeHead(200, { 'Content-Type': metrics.contentType });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    if (url === '/healthz') {
      const { status, problems } = await health.checkAll();
      const body = JSON.stringify({
        status,
        ...(problems.length > 0 ? { problems } : {}),
        services: services(),
        tenants: current.tenants.size,
        uptimeSeconds: Math.round((Date.now() - started) / 1000),
        pid: process.pid,
      });
      res.writeHead(status === 'down' ? 503 : 200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : `${body}\n`);
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found: try /metrics or /healthz\n');
  }

  return {
    name: 'admin',
    async start() {
      const spec = current.config.main.admin?.listen;
      if (!spec) return [];
      const s = http.createServer((req, res) => {
        handle(req, res).catch((err: Error) => {
          log.error({ err: err.message }, 'admin request failed');
          if (!res.headersSent) res.writeHead(500);
          res.end();
        });
      });
      const bound = await listenOn(s, parseListen(spec)!, 'admin');
      server = s;
      return [`http://${formatAddress(bound)}`];
    },
    async stop(graceMs) {
      const s = server;
      if (!s) return;
      server = undefined;
      await closeHttpServer(s, graceMs);
    },
    reload(next) {
      return () => void (current = next);
    },
  };
}
