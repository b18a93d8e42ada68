import http from 'node:http';
import net from 'node:net';

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/**
 * One HTTP request with the path sent byte for byte as given (fetch and
 * URL() would normalise `..` and escapes away before they reach the server).
 */
export function rawRequest(base: string, path: string, headers: Record<string, string> = {}, method = 'GET', body?: string | Buffer): Promise<RawResponse> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    // An IPv6 literal's brackets belong to the URL, not to the address connected to.
    const req = http.request({ host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: u.port, path, method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export interface RawExchange {
  /** Status of the first response, 0 when the server closed without one. */
  status: number;
  /** Header fields of the first response, names lower-cased, every line kept. */
  fields: Array<[string, string]>;
  /** The first value of a header field, by lower-case name. */
  header(name: string): string | undefined;
  /** Everything the server sent before it closed. */
  raw: string;
}

/**
 * Writes `request` to a fresh TCP connection byte for byte and collects what
 * comes back until the server closes (send `Connection: close`). For targets
 * and headers that no client library would send as given.
 */
export function rawExchange(base: string, request: string | Buffer): Promise<RawExchange> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect(Number(u.port), u.hostname, () => s.write(request));
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', reject);
    s.on('close', () => {
      const raw = Buffer.concat(chunks).toString('latin1');
      const headEnd = raw.indexOf('\r\n\r\n');
      const lines = (headEnd === -1 ? raw : raw.slice(0, headEnd)).split('\r\n');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
      const fields: Array<[string, string]> = [];
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        if (colon > 0) fields.push([line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()]);
      }
      resolve({ status: m ? Number(m[1]) : 0, fields, header: (name) => fields.find(([n]) => n === name)?.[1], raw });
    });
  });
}
