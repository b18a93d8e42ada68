import type { TLSSocket } from 'node:tls';

/**
 * Refuses client-initiated renegotiation on a server-side TLS socket. TLS 1.2
 * lets a client ask for any number of handshakes on one connection, each
 * costing the server far more than the client (Node only cuts after 3 in
 * 10 minutes); nothing the suite serves needs one. An attempt closes the
 * connection; `refused` is told once, to log who asked.
 */
export function refuseRenegotiation(socket: TLSSocket, refused: (remote: string | undefined) => void): void {
  socket.disableRenegotiation();
  let told = false;
  const onError = (e: NodeJS.ErrnoException) => {
    // Other errors are the protocol's own to report.
    if (!isRenegotiationError(e)) return;
    if (!told) refused(socket.remoteAddress);
    told = true;
    socket.destroy();
  };
  socket.on('error', onError);
  // A socket wrapped by hand (STARTTLS) rather than accepted by a tls.Server reports
  // TLS errors as '_tlsError' only, until Node hands it over ('error' never comes).
  socket.on('_tlsError', onError);
}

/** The errors Node raises on a refused renegotiation (disabled, or over its own limit). */
export function isRenegotiationError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ERR_TLS_RENEGOTIATION_DISABLED' || code === 'ERR_TLS_SESSION_ATTACK';
}
