import https from 'node:https';
import tls from 'node:tls';
import acme from 'acme-client';
import axios, { type AxiosAdapter, type AxiosResponse, type InternalAxiosRequestConfig } from 'axios';

/**
 * The one file that knows acme-client: its client, its key, CSR and
 * TLS-ALPN-01 certificate helpers, and its shared axios instance (trust for
 * a test CA's TLS, and a gate in front of every request it sends: see
 * {@link CaGate}).
 */

/** The challenge types this suite can answer, in the names of RFC 8555 and RFC 8737. */
export type ChallengeType = 'http-01' | 'tls-alpn-01';

/** One pending challenge: HTTP-01 carries the text to answer, TLS-ALPN-01 the certificate to present (PEM). */
export type Challenge =
  | { type: 'http-01'; domain: string; token: string; keyAuthorization: string }
  | { type: 'tls-alpn-01'; domain: string; token: string; cert: string; key: string };

export interface OrderClient {
  /** Runs one order for `domain` to the end: resolves with the certificate chain (PEM) and its private key (PEM). */
  order(domain: string, challenge: { create(c: Challenge): void; remove(c: Challenge): void }): Promise<{ chain: string; key: string }>;
  /** GET of a URL of the CA (ARI's renewalInfo): the JSON body and the Retry-After in ms (0 when none), through the same gate. */
  getJson(url: string): Promise<{ body: unknown; retryAfterMs: number }>;
  /** The CA's directory (cached by the library after the first look). */
  directory(): Promise<Record<string, unknown>>;
}

/** What the CA answered that is its own trouble (not the domain's): the service backs off from the whole CA. */
export class CaTrouble extends Error {
  constructor(
    message: string,
    /** rateLimited: an `urn:ietf:params:acme:error:rateLimited` reply (or 429); unavailable: 5xx, garbage, no answer; held: not sent (the CA is being waited for). */
    readonly kind: 'rateLimited' | 'unavailable' | 'held',
    /** The CA's Retry-After in ms; 0 when it gave none. */
    readonly retryAfterMs: number,
  ) {
    super(message);
    this.name = 'CaTrouble';
  }
}

/**
 * Every request acme-client sends goes through here first. While the CA is
 * held (a rate limit's Retry-After, a backoff after 5xx), nothing is sent:
 * the request fails at once with kind `held`. An answer that is the CA's
 * trouble becomes a {@link CaTrouble} and tells `onTrouble`, which sets the
 * next hold.
 */
export interface CaGate {
  /** No request leaves before this time (ms since the epoch). */
  heldUntil: number;
  onTrouble(t: CaTrouble): void;
}

/** Seconds or an HTTP date (RFC 9110 §10.2.3) → ms from now; 0 when absent or unreadable. */
export function retryAfterMs(value: unknown, now = Date.now()): number {
  if (typeof value !== 'string' || value.trim() === '') return 0;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? 0 : Math.max(0, at - now);
}

/** The JSON of an answer (axios gives parsed JSON, or the text when it was not JSON). */
function json(data: unknown): Record<string, unknown> | undefined {
  if (data && typeof data === 'object' && !Buffer.isBuffer(data)) return data as Record<string, unknown>;
  if (typeof data === 'string') {
    try {
      const v = JSON.parse(data) as unknown;
      return v && typeof v === 'object' ? (v as Record<string, unknown>) : undefined;
    } catch {
      return undefined; // not JSON: the caller decides whether that is garbage
    }
  }
  return undefined;
}

/** What an answer means for the CA as a whole: a CaTrouble, or undefined when it is an ordinary answer. */
export function troubleOf(res: Pick<AxiosResponse, 'status' | 'headers' | 'data'>, method: string, url: string): CaTrouble | undefined {
  const type = String(res.headers['content-type'] ?? '');
  const body = json(res.data);
  const wait = retryAfterMs(res.headers['retry-after']);
  const what = `${method.toUpperCase()} ${url}`;
  if (res.status === 429 || body?.type === 'urn:ietf:params:acme:error:rateLimited') {
    const detail = typeof body?.detail === 'string' ? body.detail : `HTTP ${res.status}`;
    return new CaTrouble(`rate limited by the CA (${detail}) at ${what}${wait ? `; Retry-After ${Math.ceil(wait / 1000)} s` : ''}`, 'rateLimited', wait);
  }
  if (res.status >= 500) return new CaTrouble(`the CA answered HTTP ${res.status} at ${what}`, 'unavailable', wait);
  // ACME speaks JSON (problem documents too) and PEM; a HEAD (newNonce) and 204s carry no body.
  if (method.toUpperCase() === 'HEAD' || res.status === 204) return undefined;
  if (/json/i.test(type) ? !body : !/pem|pkix/i.test(type)) {
    return new CaTrouble(`the CA answered HTTP ${res.status} with ${type || 'no content type'} that is not ACME at ${what}`, 'unavailable', wait);
  }
  return undefined;
}

let gates: Map<string, CaGate> | undefined;

/**
 * The library's axios instance is shared by every client in the process:
 * set once. Its own retries are off (they would sleep through a Retry-After
 * of hours inside an order); the adapter consults the gate of the CA's
 * origin before each request and classifies each answer.
 */
function configure(caPem: string | undefined, debug: (msg: string) => void): Map<string, CaGate> {
  const settings = acme.axios.defaults as unknown as { acmeSettings: { retryMaxAttempts: number } };
  settings.acmeSettings.retryMaxAttempts = 0;
  acme.axios.defaults.timeout = 30_000;
  if (caPem) acme.axios.defaults.httpsAgent = new https.Agent({ ca: [...tls.rootCertificates, caPem] });
  if (gates) return gates;
  const all = new Map<string, CaGate>();
  const send = axios.getAdapter('http');
  const gated: AxiosAdapter = async (config: InternalAxiosRequestConfig) => {
    const url = new URL(config.url ?? '', config.baseURL);
    const method = config.method ?? 'get';
    const gate = all.get(url.origin);
    if (gate && gate.heldUntil > Date.now()) {
      throw new CaTrouble(`not sent: the CA is waited for until ${new Date(gate.heldUntil).toISOString()}`, 'held', gate.heldUntil - Date.now());
    }
    let res: AxiosResponse;
    try {
      res = await send(config);
    } catch (err) {
      // The library makes every answer a rejection carrying it (its interceptor sorts them out); no answer at all is the CA's trouble.
      const answer = (err as { response?: AxiosResponse }).response;
      const t = answer
        ? troubleOf(answer, method, url.href)
        : new CaTrouble(`no answer from the CA at ${method.toUpperCase()} ${url.href} (${(err as Error).message})`, 'unavailable', 0);
      if (!t) throw err;
      gate?.onTrouble(t);
      throw t;
    }
    const t = troubleOf(res, method, url.href);
    if (t) {
      gate?.onTrouble(t);
      throw t;
    }
    return res;
  };
  acme.axios.defaults.adapter = gated;
  acme.setLogger(debug);
  gates = all;
  return all;
}

/** A new account key: ECDSA P-256, PEM. */
export async function newAccountKey(): Promise<string> {
  return (await acme.crypto.createPrivateEcdsaKey('P-256')).toString();
}

export function createOrderClient(opts: {
  directory: string;
  email: string;
  accountKey: string;
  caPem?: string;
  /** In order of preference; the CA's offer decides among them. */
  challenges: ChallengeType[];
  gate: CaGate;
  debug: (msg: string) => void;
}): OrderClient {
  configure(opts.caPem, opts.debug).set(new URL(opts.directory).origin, opts.gate);
  // Authorizations are polled from 1 s up to 10 s apart, 10 times (Pebble and Let's Encrypt validate in seconds).
  const client = new acme.Client({ directoryUrl: opts.directory, accountKey: opts.accountKey, backoffMin: 1_000, backoffMax: 10_000, backoffAttempts: 10 });
  const http = (client as unknown as { http: { getDirectory(): Promise<Record<string, unknown>> } }).http;
  /** The challenge handed to the service for one authorization (the same object to create and remove). */
  const made = new Map<string, Challenge>();
  async function challengeFor(domain: string, type: string, token: string, keyAuthorization: string): Promise<Challenge> {
    if (type === 'tls-alpn-01') {
      const key = await acme.crypto.createPrivateEcdsaKey('P-256');
      const [, cert] = await acme.crypto.createAlpnCertificate({ identifier: { type: 'dns', value: domain } } as never, keyAuthorization, key);
      return { type, domain, token, cert: cert.toString(), key: key.toString() };
    }
    if (type === 'http-01') return { type, domain, token, keyAuthorization };
    throw new Error(`the CA offered no challenge this suite answers for ${domain} (got ${type}; configured: ${opts.challenges.join(', ')})`);
  }
  return {
    async order(domain, challenge) {
      const [key, csr] = await acme.crypto.createCsr({ commonName: domain, altNames: [domain] }, await acme.crypto.createPrivateEcdsaKey('P-256'));
      const chain = await client.auto({
        csr,
        email: opts.email,
        termsOfServiceAgreed: true,
        challengePriority: opts.challenges,
        // The library's own pre-check fetches the token through public DNS; the CA's validation is what counts.
        skipChallengeVerification: true,
        challengeCreateFn: async (authz, c, keyAuthorization) => {
          const made1 = await challengeFor(authz.identifier.value, c.type, c.token, keyAuthorization);
          made.set(`${authz.identifier.value} ${c.token}`, made1);
          challenge.create(made1);
        },
        challengeRemoveFn: async (authz, c) => {
          const k = `${authz.identifier.value} ${c.token}`;
          const made1 = made.get(k);
          made.delete(k);
          if (made1) challenge.remove(made1);
        },
      });
      return { chain, key: key.toString() };
    },
    async getJson(url) {
      const res = await acme.axios.get(url, { validateStatus: null, responseType: 'text', transformResponse: (d: unknown) => d });
      if (res.status !== 200) throw new Error(`GET ${url}: HTTP ${res.status}`);
      const body = json(res.data);
      if (!body) throw new Error(`GET ${url}: not JSON`);
      return { body, retryAfterMs: retryAfterMs(res.headers['retry-after']) };
    },
    async directory() {
      return http.getDirectory();
    },
  };
}
