import https from 'node:https';
import tls from 'node:tls';
import acme from 'acme-client';

/**
 * The one file that knows acme-client: its client, its key and CSR helpers,
 * and the settings of its shared axios instance (trust for a test CA's TLS,
 * how often it retries a request before our own backoff takes over).
 */

/** One pending HTTP-01 challenge: the token the CA asks for and the text it must get back. */
export interface Http01 {
  domain: string;
  token: string;
  keyAuthorization: string;
}

export interface OrderClient {
  /** Runs one order for `domain` to the end: resolves with the certificate chain (PEM) and its private key (PEM). */
  order(domain: string, challenge: { create(c: Http01): void; remove(c: Http01): void }): Promise<{ chain: string; key: string }>;
}

let configured = false;

/**
 * The library's axios instance is shared by every client in the process: set
 * once. A request is retried twice (Retry-After honoured) and then fails, so
 * a CA that is down costs seconds, and the service's own backoff decides
 * when to try again.
 */
function configure(caPem: string | undefined, debug: (msg: string) => void): void {
  const settings = acme.axios.defaults as unknown as { acmeSettings: { retryMaxAttempts: number; retryDefaultDelay: number } };
  settings.acmeSettings.retryMaxAttempts = 2;
  settings.acmeSettings.retryDefaultDelay = 2;
  acme.axios.defaults.timeout = 30_000;
  if (caPem) acme.axios.defaults.httpsAgent = new https.Agent({ ca: [...tls.rootCertificates, caPem] });
  if (!configured) acme.setLogger(debug);
  configured = true;
}

/** A new account key: ECDSA P-256, PEM. */
export async function newAccountKey(): Promise<string> {
  return (await acme.crypto.createPrivateEcdsaKey('P-256')).toString();
}

export function createOrderClient(opts: { directory: string; email: string; accountKey: string; caPem?: string; debug: (msg: string) => void }): OrderClient {
  configure(opts.caPem, opts.debug);
  // Authorizations are polled from 1 s up to 10 s apart, 10 times (Pebble and Let's Encrypt validate in seconds).
  const client = new acme.Client({ directoryUrl: opts.directory, accountKey: opts.accountKey, backoffMin: 1_000, backoffMax: 10_000, backoffAttempts: 10 });
  return {
    async order(domain, challenge) {
      const [key, csr] = await acme.crypto.createCsr({ commonName: domain, altNames: [domain] }, await acme.crypto.createPrivateEcdsaKey('P-256'));
      const chain = await client.auto({
        csr,
        email: opts.email,
        termsOfServiceAgreed: true,
        challengePriority: ['http-01'],
        // The library's own pre-check fetches the token through public DNS; the CA's validation is what counts.
        skipChallengeVerification: true,
        challengeCreateFn: async (authz, c, keyAuthorization) => challenge.create({ domain: authz.identifier.value, token: c.token, keyAuthorization }),
        challengeRemoveFn: async (authz, c, keyAuthorization) => challenge.remove({ domain: authz.identifier.value, token: c.token, keyAuthorization }),
      });
      return { chain, key: key.toString() };
    },
  };
}
