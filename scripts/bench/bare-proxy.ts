// Baseline: a bare reverse proxy, node:http in front and one undici Pool to
// the backend (keep-alive, no pipelining), bodies streamed both ways and
// hop-by-hop fields dropped: the best a Node proxy does with no hosting logic.
//
//   node scripts/bench/bare-proxy.ts <backend origin> <port>
import http from 'node:http';
import { Pool, type Dispatcher } from 'undici';

const [origin, port] = process.argv.slice(2) as [string, string];
const pool = new Pool(origin, { connections: 128, pipelining: 1, keepAliveTimeout: 4_000 });
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'transfer-encoding']);

http
  .createServer((req, res) => {
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP.has(k)) headers[k] = v;
    headers['x-forwarded-for'] = req.socket.remoteAddress ?? '';
    const body = req.headers['content-length'] || req.headers['transfer-encoding'] ? req : null;
    pool
      .stream({ path: req.url ?? '/', method: req.method as Dispatcher.HttpMethod, headers, body }, ({ statusCode, headers: up }) => {
        for (const k of HOP) delete up[k];
        res.writeHead(statusCode, up as http.OutgoingHttpHeaders);
        return res;
      })
      .catch(() => {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
  })
  .listen(Number(port), '127.0.0.1');
// Exits on SIGTERM through process.exit, so a --cpu-prof profile is written.
process.on('SIGTERM', () => process.exit(0));
