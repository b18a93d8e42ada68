import net, { type Server as NetServer, type AddressInfo } from 'node:net';

/** A listener that could not bind; `code` is the suite's LISTEN_FAILED (src/core/errors.ts). */
export class ListenError extends Error {
  readonly code = 'LISTEN_FAILED' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ListenError';
  }
}

export interface ListenAddress {
  host: string;
  port: number;
}

/** Parses `host:port`, `[v6]:port` or `:port` (all interfaces). Returns undefined if malformed. */
export function parseListen(spec: string): ListenAddress | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(spec.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  const host = m[1] ?? (m[2] || '0.0.0.0');
  return { host, port };
}

/** Formats an address as a URL authority: `127.0.0.1:8080`, `[::1]:8080`. */
export function formatAddress(a: ListenAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/**
 * Binds `server` to one address. Resolves with the address actually bound
 * (port 0 becomes the real port); rejects with a message naming host:port,
 * e.g. "127.0.0.1:8080 is already in use".
 */
export function listenOn(server: NetServer, addr: ListenAddress, what: string): Promise<ListenAddress> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.removeListener('listening', onListening);
      const where = formatAddress(addr);
      const why =
        err.code === 'EADDRINUSE'
          ? `${where} is already in use`
          : err.code === 'EACCES'
            ? `${where} needs more privileges (ports below 1024 need root)`
            : err.code === 'EADDRNOTAVAIL'
              ? `${where} is not an address of this machine`
              : `${where}: ${err.message}`;
      reject(new ListenError(`${what} cannot listen: ${why}`, { cause: err }));
    };
    const onListening = () => {
      server.removeListener('error', onError);
      const bound = server.address() as AddressInfo;
      resolve({ host: bound.address, port: bound.port });
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen({ host: addr.host, port: addr.port, exclusive: true });
  });
}

/**
 * Stops an HTTP server: no new connections, idle keep-alives closed at
 * once, requests in flight get `graceMs` to finish before their connections
 * are closed. Never rejects.
 */
export function closeHttpServer(server: import('node:http').Server, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const hard = setTimeout(() => server.closeAllConnections(), graceMs);
    hard.unref();
    server.close(() => {
      clearTimeout(hard);
      resolve();
    });
    server.closeIdleConnections();
  });
}

/**
 * A loopback port with nothing listening on it (bound once, then released),
 * for tests and benchmarks that must give a child process a fixed port.
 */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
