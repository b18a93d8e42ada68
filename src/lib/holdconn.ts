import net from 'node:net';

/**
 * Holds every connection accepted by any server of this process until
 * {@link ConnectionHold.release}: for a start as root, which must bind its
 * listeners (ports below 1024) before it drops to the service user, but
 * must not serve anyone until it has dropped. Whatever a client asks in
 * that window would otherwise be done as root: mail spooled, log lines
 * appended, answers read from disk, all in folders the service user owns
 * and can swap for links meanwhile.
 *
 * Every server of Node (net, http, https, tls, http2, and the libraries
 * built on them: smtp-server, ftp-srv, ssh2) learns of an accepted socket
 * from its own `connection` event, the one place a server's work on a
 * client begins (TLS starts its handshake there too). While the hold is
 * on, that event of every `net.Server` is kept back with its socket (the
 * kernel has accepted it; what the client sends waits in the socket's
 * buffer), and replayed in order at the release. A socket the client
 * closed meanwhile is dropped. {@link ConnectionHold.drop} ends the held
 * sockets instead (a start that failed).
 *
 * It wraps `net.Server.prototype.emit` for the hold's time only: the
 * servers' own prototypes (http.Server, tls.Server...) inherit it, and
 * none defines its own `emit` (test/unit/lib/holdconn.test.ts checks both
 * on this Node).
 */
export interface ConnectionHold {
  /** How many connections are held now. */
  readonly held: number;
  /** Hands every held connection to its server, in the order they came, and lets new ones through. */
  release(): void;
  /** Ends every held connection and lets new ones through. */
  drop(): void;
}

export function holdConnections(): ConnectionHold {
  const proto = net.Server.prototype as net.Server & { emit: net.Server['emit'] };
  const own = Object.prototype.hasOwnProperty.call(proto, 'emit');
  const emit = proto.emit as (this: net.Server, event: string | symbol, ...args: unknown[]) => boolean;
  const queue: { server: net.Server; socket: net.Socket }[] = [];
  let on = true;
  // A held socket has no listener of its server yet: a client resetting it meanwhile fails its read with an 'error'
  // that, unheard, would end the process. It is destroyed by then, so the release skips it; nothing else to do.
  const gone = (): void => {};
  const held = function (this: net.Server, event: string | symbol, ...args: unknown[]): boolean {
    if (on && event === 'connection' && args[0] instanceof net.Socket) {
      args[0].on('error', gone);
      queue.push({ server: this, socket: args[0] });
      return true;
    }
    return emit.call(this, event, ...args);
  };
  proto.emit = held as net.Server['emit'];
  const end = (): { server: net.Server; socket: net.Socket }[] => {
    if (!on) return [];
    on = false;
    if (own) proto.emit = emit as net.Server['emit'];
    else delete (proto as Partial<typeof proto>).emit;
    return queue.splice(0);
  };
  return {
    get held() {
      return queue.length;
    },
    release() {
      for (const { server, socket } of end()) {
        socket.removeListener('error', gone);
        if (!socket.destroyed) server.emit('connection', socket);
      }
    },
    drop() {
      for (const { socket } of end()) socket.destroy();
    },
  };
}
