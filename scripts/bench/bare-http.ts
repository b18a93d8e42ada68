// Baseline: a bare node:http server answering from files held in memory,
// the best a single Node process can do without any hosting logic.
import { readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const [dir, port] = process.argv.slice(2) as [string, string];
const files = new Map<string, Buffer>();
for (const name of readdirSync(dir)) files.set(`/${name}`, readFileSync(path.join(dir, name)));
http
  .createServer((req, res) => {
    const body = files.get(req.url ?? '');
    if (!body) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': body.length });
    res.end(body);
  })
  .listen(Number(port), '127.0.0.1');
// Exits on SIGTERM through process.exit, so a --cpu-prof profile is written.
process.on('SIGTERM', () => process.exit(0));
