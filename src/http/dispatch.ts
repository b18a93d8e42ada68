import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { errorRef, replyCode } from '../core/errors.ts';
import type { HandlerGateway, ListPages, PanelPages } from '../core/contracts.ts';
import type { Logger } from '../core/log.ts';
import type { TenantProxy } from './proxy.ts';
import type { Recorder } from './record.ts';
import { sendPage, sendSuspended } from './replies.ts';
import { fileKey, FORWARDED_METHODS, STATIC_METHODS, type Route } from './route.ts';
import type { Outcome, StaticFiles } from './static.ts';

export interface DispatchDeps {
  log: Logger;
  files: StaticFiles;
  proxy: TenantProxy;
  record: Recorder;
  /**
   * Responses of the async path under way, so stop() can tell their keep-alive connections to
   * close once they are answered (the cached-file path answers synchronously: nothing to track).
   */
  inFlight: Set<ServerResponse>;
  gateway?: HandlerGateway;
  lists?: ListPages;
  panel?: PanelPages;
}

/**
 * The async path of a routed request: each kind of route to what answers it
 * (error and suspended pages, the proxy, handlers, list pages, the panel,
 * static files), a fault to a 500 with a reference, then the access log.
 */
export function createDispatch({ log, files, proxy, record, inFlight, gateway, lists, panel }: DispatchDeps) {
  return async function handle(req: IncomingMessage, res: ServerResponse, route: Route, remote: string): Promise<void> {
    let outcome: Outcome;
    inFlight.add(res);
    try {
      switch (route.kind) {
        case 'error':
          if (route.why && route.why !== 'unknown host') log.info({ remote, url: req.url, host: req.headers.host, why: route.why }, 'request refused');
          if (route.status === 404 && route.tenant) {
            outcome = await files.notFound({ req, res, tenant: route.tenant, segments: [], trailingSlash: false, query: '', base: '', fileKey: fileKey(route.tenant.id, [], false), remote });
          } else {
            outcome = sendPage(req, res, route.status, route.location ? { Location: route.location } : route.allow ? { Allow: route.allow } : {});
          }
          break;
        case 'suspended':
          outcome = sendSuspended(req, res);
          break;
        case 'server-options':
          // RFC 9110 §9.3.7: what the server as a whole may accept somewhere.
          res.writeHead(200, { Allow: FORWARDED_METHODS, 'Content-Length': 0 });
          res.end();
          outcome = { status: 200, bytes: 0 };
          break;
        case 'proxy':
          outcome = await proxy.web(req, res, { route: route.route, path: route.path, remote, host: route.authority, proto: (req.socket as TLSSocket).encrypted ? 'https' : 'http' });
          break;
        case 'cgi':
          if (!gateway) {
            outcome = await files.notFound({ req, res, tenant: route.tenant, segments: [], trailingSlash: false, query: '', base: '', fileKey: fileKey(route.tenant.id, [], false), remote });
            break;
          }
          outcome = await gateway.handle({ req, res, remote, serverPort: req.socket.localPort ?? 0, ...route });
          break;
        case 'list':
          if (!lists) {
            outcome = await files.notFound({ req, res, tenant: route.tenant, segments: [], trailingSlash: false, query: '', base: '', fileKey: fileKey(route.tenant.id, [], false), remote });
            break;
          }
          outcome = await lists.handle({ req, res, remote, tenant: route.tenant, list: route.list, segments: route.segments, query: route.query });
          break;
        case 'panel':
          outcome = panel ? await panel.handle({ req, res, remote, secure: (req.socket as TLSSocket).encrypted === true }) : sendPage(req, res, 404);
          break;
        case 'static':
          if (req.method !== 'GET' && req.method !== 'HEAD') {
            if (req.method === 'OPTIONS') {
              res.writeHead(204, { Allow: STATIC_METHODS });
              res.end();
              outcome = { status: 204, bytes: 0 };
            } else {
              outcome = sendPage(req, res, 405, { Allow: STATIC_METHODS });
            }
            break;
          }
          outcome = await files.serve({ req, res, remote, ...route });
          break;
      }
    } catch (err) {
      const ref = errorRef();
      log.error({ remote, url: req.url, ref, err: (err as Error).stack }, 'request failed');
      if (!res.headersSent) outcome = sendPage(req, res, replyCode('INTERNAL', 'http'), {}, ref);
      else {
        res.destroy();
        outcome = { status: res.statusCode, bytes: 0 };
      }
    }
    inFlight.delete(res);
    record(route.tenant, req, remote, outcome);
  };
}
