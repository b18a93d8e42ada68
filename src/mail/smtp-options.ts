import { TLSSocket, type SecureContext } from 'node:tls';
import type { SMTPServerOptions } from 'smtp-server';
import type { CertStore } from '../core/certs.ts';
import type { MainConfig } from '../core/config/schema.ts';
import type { Logger } from '../core/log.ts';
import type { Registry } from '../core/registry.ts';
import { refuseRenegotiation } from '../lib/renegotiation.ts';

export interface SmtpOptionsDeps {
  smtp: NonNullable<MainConfig['smtp']>;
  hostname: string;
  /** The suite's certificate store: with a default certificate in it, STARTTLS is offered (by SNI). */
  certs?: CertStore;
  /** The registry in force (it changes on reload), for the certificate of a name. */
  registry: () => Registry;
  log: Logger;
}

/**
 * The SMTP listener's settings besides the session handlers: STARTTLS,
 * the limits, the extensions offered, and renegotiation refused after
 * STARTTLS. Without a default certificate STARTTLS is off, and said so.
 */
export function smtpServerOptions({ smtp, hostname, certs, registry, log }: SmtpOptionsDeps): SMTPServerOptions {
  // STARTTLS from the suite's one certificate store, chosen by SNI like HTTPS; offered only when a default certificate exists.
  const fallback = certs?.defaultPair();
  const tlsOptions = certs && fallback
    ? {
        ...fallback,
        minVersion: 'TLSv1.2' as const,
        SNICallback: (name: string, cb: (err: Error | null, ctx?: SecureContext) => void) => cb(null, certs.contextFor(name, registry())),
      }
    : undefined;
  if (!tlsOptions) {
    const why = certs
      ? `no default certificate in ${certs.dir} (default.crt and default.key, readable)`
      : 'no certificate store (http.tls is not configured)';
    log.warn({ offer: 'starttls', why }, `SMTP STARTTLS is off: ${why}`);
  }

  return {
    ...(tlsOptions ?? {}),
    name: hostname,
    // smtp-server writes `220 <name> ESMTP <banner>`: the banner is only our name.
    banner: 'makewaves',
    size: smtp.maxMessageBytes,
    rejectOversized: true,
    maxClients: smtp.maxConnections,
    maxRecipients: smtp.maxRecipients,
    socketTimeout: smtp.idleTimeout * 1000,
    closeTimeout: 5_000,
    disableReverseLookup: !smtp.reverseLookup,
    hideENHANCEDSTATUSCODES: false,
    hideDSN: true,
    hideSTARTTLS: !tlsOptions,
    disabledCommands: tlsOptions ? ['AUTH'] : ['AUTH', 'STARTTLS'],
    authOptional: true,
    logger: false,

    // STARTTLS done: the upgraded socket refuses renegotiation, as every TLS listener of the suite does.
    onSecure(socket, session, done) {
      if (socket instanceof TLSSocket) {
        refuseRenegotiation(socket, (remote) => log.info({ conn: session.id, remote: remote ?? session.remoteAddress, why: 'renegotiation' }, 'TLS renegotiation refused; connection closed'));
      }
      done();
    },
  };
}
