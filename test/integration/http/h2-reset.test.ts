import { spawn, spawnSync } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import type http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardedH2Server } from '../../helpers/h2.ts';
import { tempDirs } from '../../helpers/tmp.ts';

// Clients that reset the connection right after the TLS handshake, offering h2. Node 20's http2 now and then never
// notices one (no event on the socket, the TLS socket or the session, and the session's destroy() frees nothing): each
// such connection kept a descriptor, and a slot of its client's connection cap, until a restart. Python's ssl module
// hits that window (a Node TLS client, measured here, did not once in 256). Before the idle session's connection was
// ended, 256 such resets left one or more open for good in each of three runs (64 did in one run of three): this test
// waited for their close in vain.

const python = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'import ssl'], { stdio: 'ignore' }).status === 0);
const RESETS = 256;
const CLIENT = `
import socket, ssl, struct, sys
port = int(sys.argv[1])
for i in range(${RESETS}):
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(['h2'])
    s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port)), server_hostname='a.test')
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    s.close()
`;

const tmp = tempDirs('makewaves-h2reset-');
let server: http2.Http2SecureServer;
let port: number;
/** Connections accepted and not yet closed (counted on the TCP socket, as the connection cap counts them). */
let open = 0;
const changed = new EventEmitter();

beforeAll(async () => {
  // Idle after 300 ms, ended 200 ms after its GOAWAY: the same path as the suite's 120 s and 5 s.
  ({ server, port } = await guardedH2Server(tmp(), 300, 200, (srv) => {
    srv.on('connection', (socket) => {
      open++;
      socket.once('close', () => {
        open--;
        changed.emit('change');
      });
    });
    srv.on('request', (_req, res) => res.end('ok'));
  }));
});
afterAll(() => {
  server?.close();
});

describe('HTTP/2 connections reset right after the handshake', () => {
  it.skipIf(!python)('are all closed: none keeps its descriptor or its slot (needs python3)', async () => {
    const client = spawn(python!, ['-c', CLIENT, String(port)], { stdio: 'ignore' });
    const [code] = (await once(client, 'exit')) as [number];
    expect(code).toBe(0);
    while (open > 0) await once(changed, 'change');
    expect(open).toBe(0);
  }, 30_000);
});
