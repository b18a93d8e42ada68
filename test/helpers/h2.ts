import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { createLogger } from '../../src/core/log.ts';
import { H2Sessions, h2ServerOptions } from '../../src/http/h2.ts';

/**
 * A node:http2 secure server with the suite's options and session guard
 * (H2Sessions), idle after `idleMs` and its connection ended `graceMs`
 * after the GOAWAY, on a loopback port; a throwaway certificate for a.test
 * is made in `dir`. `setup` adds the test's listeners before it listens.
 */
export async function guardedH2Server(
  dir: string,
  idleMs: number,
  graceMs: number,
  setup: (server: http2.Http2SecureServer) => void,
): Promise<{ server: http2.Http2SecureServer; port: number }> {
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=a.test'], { stdio: 'ignore' });
  const server = http2.createSecureServer(h2ServerOptions({ key: readFileSync(key), cert: readFileSync(cert) }));
  setup(server);
  new H2Sessions(createLogger({ level: 'silent' }), idleMs, graceMs).attach(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}
