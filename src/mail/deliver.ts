import { promises as dnsPromises } from 'node:dns';
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import type { Logger } from '../core/log.ts';
import { SmtpPool, SmtpSession, type MailParams, type SentInfo, type SmtpError } from './smtp-client.ts';

/** One delivery attempt of one queued message to some of its recipients. */
export interface DeliveryRequest {
  id: string;
  /** Envelope sender ("" = null sender). */
  sender: string;
  recipients: readonly string[];
  /** MAIL FROM parameters to pass on; absent: none. */
  params?: MailParams;
  /** Opens the message (headers and body, CRLF) from the spool; called once per connection tried. */
  open(): Readable;
}

/** What became of one recipient in one attempt. */
export interface RecipientOutcome {
  rcpt: string;
  /** `sent`: the next hop said 250; `perm`: 5xx or a permanent DNS fact; `temp`: anything else (retry later). */
  status: 'sent' | 'perm' | 'temp';
  /** The reply, or our description of what went wrong. */
  reply: string;
  /** The host that answered or was tried last. */
  via: string;
}

/** Hands queued messages to the next hop. */
export interface Deliverer {
  /** Never rejects: every recipient gets an outcome. */
  deliver(req: DeliveryRequest): Promise<RecipientOutcome[]>;
  close(): void;
}

/** Maps nodemailer's result or error to one outcome per recipient. */
function outcomes(recipients: readonly string[], via: string, result: { info?: SentInfo; err?: SmtpError }): RecipientOutcome[] {
  const rejected = new Map<string, SmtpError>();
  for (const e of result.info?.rejectedErrors ?? result.err?.rejectedErrors ?? []) {
    if (e.recipient) rejected.set(e.recipient, e as SmtpError);
  }
  return recipients.map((rcpt): RecipientOutcome => {
    const r = rejected.get(rcpt);
    if (r) return { rcpt, status: (r.responseCode ?? 0) >= 500 ? 'perm' : 'temp', reply: r.response ?? r.message, via };
    if (result.info) return { rcpt, status: 'sent', reply: result.info.response, via };
    const err = result.err!;
    if (err.responseCode) return { rcpt, status: err.responseCode >= 500 ? 'perm' : 'temp', reply: err.response ?? err.message, via };
    return { rcpt, status: 'temp', reply: `4.4.1 ${err.message}`, via };
  });
}

/** True when the failure says nothing about the message: the next address or MX may do better (RFC 5321 §5.1). */
function isConnectionLevel(err: SmtpError): boolean {
  if (!err.responseCode) return true;
  return err.responseCode === 421 || (err.code === 'EPROTOCOL' && err.responseCode < 500);
}

export interface RelayOptions {
  /** `smtp://host:port` or `smtps://user:pass@host:port`. */
  url: string;
  /** Our name in EHLO. */
  hostname: string;
  maxConnections: number;
  /** Where a fault of ours in the SMTP client is logged. */
  log?: Logger;
}

/**
 * Delivers everything through one smarthost over a pool of reused
 * connections (nodemailer's SMTP client, see smtp-client.ts). STARTTLS is used when
 * the relay offers it (opportunistic: an unverified certificate is still
 * better than plain text, as with Postfix's `smtp_tls_security_level = may`);
 * `smtps://` is TLS from the start and verifies the certificate.
 */
export class RelayDeliverer implements Deliverer {
  private readonly pool: SmtpPool;
  private readonly via: string;

  constructor(o: RelayOptions) {
    const url = new URL(o.url);
    const secure = url.protocol === 'smtps:';
    this.via = url.host;
    const host = url.hostname.replace(/^\[|\]$/g, '');
    this.pool = new SmtpPool(
      {
        host,
        port: Number(url.port) || (secure ? 465 : 25),
        secure,
        name: o.hostname,
        tls: secure ? { servername: isIP(host) ? undefined : host } : { rejectUnauthorized: false },
        auth: url.username ? { user: decodeURIComponent(url.username), pass: decodeURIComponent(url.password) } : undefined,
        connectTimeout: 30_000,
        log: o.log,
      },
      o.maxConnections,
    );
  }

  async deliver(req: DeliveryRequest): Promise<RecipientOutcome[]> {
    try {
      const info = await this.pool.send(req.sender, req.recipients, () => req.open(), req.params);
      return outcomes(req.recipients, this.via, { info });
    } catch (err) {
      return outcomes(req.recipients, this.via, { err: err as SmtpError });
    }
  }

  close(): void {
    this.pool.close();
  }
}

/** The DNS lookups direct delivery needs; node:dns by default, anything pointing at loopback in tests. */
export interface MxResolver {
  resolveMx(domain: string): Promise<Array<{ exchange: string; priority: number }>>;
  resolve4(host: string): Promise<string[]>;
  resolve6(host: string): Promise<string[]>;
  /** NS records; asked for the root zone to tell a real NXDOMAIN from a resolver cut off from the DNS. Absent: every NXDOMAIN is believed. */
  resolveNs?(name: string): Promise<string[]>;
}

/** What a failed DNS lookup means, in words for `makewaves queue` and the logs. */
export function dnsTrouble(code: string | undefined): string {
  switch (code) {
    case 'ESERVFAIL':
      return 'the DNS server answered SERVFAIL';
    case 'ETIMEOUT':
      return 'no answer from the DNS server (timeout)';
    case 'ECONNREFUSED':
      return 'the DNS server could not be reached (connection refused)';
    case 'EREFUSED':
      return 'the DNS server refused the query';
    default:
      return `DNS lookup failed (${code ?? 'error'})`;
  }
}

export interface MxOptions {
  hostname: string;
  /** Port of the remote MX hosts (25). */
  port: number;
  resolver?: MxResolver;
  /** Milliseconds to wait for a TCP connection and for the greeting. */
  connectTimeout?: number;
  /** Where a fault of ours in the SMTP client is logged. */
  log?: Logger;
}

type Hosts = { ok: true; hosts: string[] } | { ok: false; permanent: boolean; reply: string };

/**
 * Delivers to each recipient domain's MX hosts (nodemailer has no direct-MX
 * mode): MX records by priority (equal ones shuffled, RFC 5321 §5.1), or the
 * domain's own A/AAAA when it has none; each host's addresses in turn until
 * one answers. STARTTLS when offered, certificate not verified
 * (opportunistic, RFC 3207 §4.1 leaves that policy to the client).
 */
export class MxDeliverer implements Deliverer {
  private readonly resolver: MxResolver;
  /** The root-zone question under way, shared by the NXDOMAINs that arrive meanwhile. */
  private root: Promise<boolean> | undefined;

  constructor(private readonly o: MxOptions) {
    this.resolver = o.resolver ?? dnsPromises;
  }

  async deliver(req: DeliveryRequest): Promise<RecipientOutcome[]> {
    const byDomain = new Map<string, string[]>();
    for (const r of req.recipients) {
      const d = r.slice(r.lastIndexOf('@') + 1).toLowerCase();
      const list = byDomain.get(d);
      if (list) list.push(r);
      else byDomain.set(d, [r]);
    }
    const parts = await Promise.all([...byDomain].map(([domain, rcpts]) => this.deliverDomain(req, domain, rcpts)));
    return parts.flat();
  }

  /** MX hosts of `domain` in the order to try them. */
  async mxHosts(domain: string): Promise<Hosts> {
    let records: Array<{ exchange: string; priority: number }>;
    try {
      records = await this.resolver.resolveMx(domain);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // RFC 5321 §5.1: no MX records → the domain itself is the implicit MX.
      if (code === 'ENODATA') return { ok: true, hosts: [domain] };
      if (code === 'ENOTFOUND') {
        // NXDOMAIN is permanent only from a resolver that sees the DNS: one
        // without network access (or a captive one) may deny every name.
        if (await this.seesRoot()) return { ok: false, permanent: true, reply: `550 5.1.2 ${domain}: no such domain` };
        return { ok: false, permanent: false, reply: `451 4.4.3 ${domain}: the DNS server says no such domain but does not find the root zone either (no network?); will retry` };
      }
      return { ok: false, permanent: false, reply: `451 4.4.3 ${domain}: MX lookup failed: ${dnsTrouble(code)}` };
    }
    if (records.length === 0) return { ok: true, hosts: [domain] };
    // RFC 7505: a single MX of "." says the domain accepts no mail.
    if (records.length === 1 && (records[0]!.exchange === '' || records[0]!.exchange === '.')) {
      return { ok: false, permanent: true, reply: `556 5.1.10 ${domain} accepts no mail (null MX)` };
    }
    const shuffled = records.map((r) => ({ ...r, k: Math.random() }));
    shuffled.sort((a, b) => a.priority - b.priority || a.k - b.k);
    return { ok: true, hosts: shuffled.map((r) => r.exchange.replace(/\.$/, '')) };
  }

  /**
   * True when the resolver answers NS for the root zone. Asked at each
   * NXDOMAIN (they are rare; one question more each), never remembered:
   * the network may have gone since.
   */
  private seesRoot(): Promise<boolean> {
    const ask = this.resolver.resolveNs?.bind(this.resolver);
    if (!ask) return Promise.resolve(true);
    this.root ??= ask('.')
      .then((ns) => ns.length > 0, () => false)
      .finally(() => (this.root = undefined));
    return this.root;
  }

  /** The host's addresses, and why there are none when a lookup failed for a reason other than "none". */
  private async addresses(host: string): Promise<{ ips: string[]; trouble?: string }> {
    if (isIP(host)) return { ips: [host] };
    const [v4, v6] = await Promise.allSettled([this.resolver.resolve4(host), this.resolver.resolve6(host)]);
    const ips = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
    const codes = [v4, v6].flatMap((r) => (r.status === 'rejected' ? [(r.reason as NodeJS.ErrnoException).code] : []));
    const odd = codes.find((c) => c !== 'ENODATA' && c !== 'ENOTFOUND');
    return { ips, trouble: odd ? dnsTrouble(odd) : undefined };
  }

  private async deliverDomain(req: DeliveryRequest, domain: string, rcpts: string[]): Promise<RecipientOutcome[]> {
    const mx = await this.mxHosts(domain);
    if (!mx.ok) return rcpts.map((rcpt) => ({ rcpt, status: mx.permanent ? 'perm' : 'temp', reply: mx.reply, via: domain }));
    let last: RecipientOutcome[] = rcpts.map((rcpt) => ({ rcpt, status: 'temp', reply: `451 4.4.4 ${domain}: no MX host has an address`, via: domain }));
    for (const host of mx.hosts) {
      const { ips, trouble } = await this.addresses(host);
      if (ips.length === 0 && trouble) {
        last = rcpts.map((rcpt) => ({ rcpt, status: 'temp', reply: `451 4.4.3 ${host}: address lookup failed: ${trouble}`, via: host }));
      }
      for (const ip of ips) {
        const via = `${host}[${ip}]`;
        let session: SmtpSession | undefined;
        try {
          session = await SmtpSession.open({
            host: ip,
            port: this.o.port,
            secure: false,
            name: this.o.hostname,
            tls: { servername: isIP(host) ? undefined : host, rejectUnauthorized: false },
            connectTimeout: this.o.connectTimeout ?? 30_000,
            log: this.o.log,
          });
          const info = await session.send(req.sender, rcpts, req.open(), req.params);
          return outcomes(rcpts, via, { info });
        } catch (err) {
          last = outcomes(rcpts, via, { err: err as SmtpError });
          if (!isConnectionLevel(err as SmtpError)) return last;
        } finally {
          session?.close();
        }
      }
    }
    return last;
  }

  close(): void {}
}
