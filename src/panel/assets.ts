import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HttpOutcome } from '../core/contracts.ts';
import { TRAFFIC_JS } from './assets/traffic.ts';

/*
 * The few files the panel's pages load, served by the panel itself (no CDN):
 * uPlot from its npm package and the script that draws the traffic plots.
 * Read once, at the first request, and kept.
 */

const require = createRequire(import.meta.url);

interface Asset {
  /** The file's bytes (read at the first request). */
  body: () => Buffer;
  type: string;
}

const ASSETS: Record<string, Asset> = {
  'uplot.min.js': { body: () => readFileSync(path.join(path.dirname(require.resolve('uplot')), 'uPlot.iife.min.js')), type: 'text/javascript; charset=utf-8' },
  'uplot.min.css': { body: () => readFileSync(path.join(path.dirname(require.resolve('uplot')), 'uPlot.min.css')), type: 'text/css; charset=utf-8' },
  'traffic.js': { body: () => Buffer.from(TRAFFIC_JS), type: 'text/javascript; charset=utf-8' },
};

const loaded = new Map<string, { body: Buffer; etag: string }>();

/** Answers `/assets/<name>`; false when there is no such asset (the caller's 404). */
export function sendAsset(req: IncomingMessage, res: ServerResponse, name: string): HttpOutcome | undefined {
  if (!Object.hasOwn(ASSETS, name)) return undefined;
  let a = loaded.get(name);
  if (!a) {
    const body = ASSETS[name]!.body();
    a = { body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 16)}"` };
    loaded.set(name, a);
  }
  const headers = { 'Content-Type': ASSETS[name]!.type, 'Cache-Control': 'public, max-age=3600', ETag: a.etag, 'X-Content-Type-Options': 'nosniff' };
  if (req.headers['if-none-match'] === a.etag) {
    res.writeHead(304, headers);
    res.end();
    return { status: 304, bytes: 0 };
  }
  res.writeHead(200, { ...headers, 'Content-Length': a.body.length });
  const head = req.method === 'HEAD';
  res.end(head ? undefined : a.body);
  return { status: 200, bytes: head ? 0 : a.body.length };
}
