import net, { type Socket } from 'node:net';
import path from 'node:path';
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';
import type { CertStore } from '../core/certs.ts';
import { suiteResolver } from '../core/dns.ts';
import type { Metrics } from '../core/metrics.ts';
import type { HealthReporter } from '../core/contracts.ts';
import type { ArcSealer, DmarcPolicies, ListInbox, ListMail, MailJournal, MailSubmitter } from '../core/contracts.ts';
import { errorRef, refusal, type ErrorCode } from '../core/errors.ts';
import type { Service } from '../core/lifecycle.ts';
import type { Logger } from '../core/log.ts';
import type { RcptRoute, Registry } from '../core/registry.ts';
import { parseRecipient } from '../core/recipient.ts';
import { formatAddress, listenOn, parseListen } from '../lib/listen.ts';
import { clientFields, PeerCounter, type Admission } from '../lib/peers.ts';
import type { State } from '../state/index.ts';
import { ControlServer } from './control.ts';
import { createInboundPool } from './inbound-pool.ts';
import { checkInbound, createArcSealer, createDkimSigner, dmarcPolicy, type InboundAuth } from './mailauth.ts';
import { decide, policyFor, stripOurResults } from './inbound.ts';
import { blocklisted } from './dnsbl.ts';
import { normalizeCrlf } from './crlf.ts';
import { MAX_LINE, MessageScan, scanned } from './scan.ts';
import { MxDeliverer, RelayDeliverer, type Deliverer, type MxResolver } from './deliver.ts';
import { MailQueue, newQueueId } from './queue.ts';
import { Spool, SpoolAborted } from '../state/spool.ts';
import { Srs } from './srs.ts';
import { smtpServerOptions } from './smtp-options.ts';
import { isRenegotiationError } from '../lib/renegotiation.ts';
import { asksUtf8, authLog, createAcceptor, mailParams, NON_ASCII, noPostmasterWarning, refuse, reply, routeRecipient, type IdleCheck, type ListTarget, type SessionState } from './accept.ts';
export { nextHopRefusal, receivedHeader, routeRecipient } from './accept.ts';

export interface MailDeps {
  registry: Registry;
  state: State;
  log: Logger;
  /** DNS for direct MX delivery (tests point it at loopback). */
  resolver?: MxResolver;
  /** The clock of the queue (retries, expiry, SRS day stamps). */
  now?: () => number;
  /** The suite's certificate store: with a default certificate in it, STARTTLS is offered (by SNI). */
  certs?: CertStore;
  metrics?: Metrics;
  /** Told every delivery outcome, for the permanent-failure rate. */
  health?: HealthReporter;
  /** Takes mail for mailing-list addresses; without it those are refused with 451 at RCPT time. */
  lists?: ListInbox;
  /** Told every final outcome of mail to a tenant's address (forwarded, refused, bounced), for its panel. */
  journal?: MailJournal;
}

export interface MailService {
  service: Service;
  /** The durable queue, for form handlers and lists (wired by main.ts). */
  submitter: MailSubmitter;
  queue: MailQueue;
  /** ARC sealing with the suite's key, for list posts (wired by main.ts); seals nothing when `smtp.checks` turns it off. */
  sealer: ArcSealer;
  /** DMARC policies through the suite's resolver, for lists (wired by main.ts). */
  dmarc: DmarcPolicies;
}


type SendFn = (code: number, data?: string | string[], context?: string | false) => void;

/**
 * smtp-server derives the enhanced status code of a handler's error from
 * the reply code alone (550 → 5.1.1), which would make a relay refusal read
 * `550 5.1.1`. Our handler texts start with their own RFC 3463 code; for
 * those, the connection's send() is told to add none.
 */
class MailSmtpServer extends SMTPServer {
  override connect(socket: Socket, socketOptions?: Parameters<SMTPServer['connect']>[1]): void {
    super.connect(socket, socketOptions);
    let conn: unknown;
    for (const c of this.connections) conn = c;
    const target = conn as { send: SendFn };
    const send = target.send.bind(target);
    target.send = (code, data, context) => {
      if (typeof data === 'string' && context === undefined && /^[245]\.\d{1,3}\.\d{1,3} /.test(data)) return send(code, data, false);
      return send(code, data, context);
    };
  }
}

/**
 * SMTP sessions open per client key (an IPv6 client by its /64), each
 * counted from onConnect (its DNS blocklist lookup included) until `free`:
 * its onClose, or its refusal.
 */
function sessionSlots() {
  const perClient = new PeerCounter();
  /** Each counted session's release, by session id. */
  const releases = new Map<string, () => void>();
  return {
    take(id: string, ip: string, limit: number): Admission {
      const admitted = perClient.acquire(ip, limit);
      if (admitted.ok) releases.set(id, admitted.release);
      return admitted;
    },
    held: (id: string): boolean => releases.has(id),
    free(id: string): void {
      releases.get(id)?.();
      releases.delete(id);
    },
  };
}

/**
 * Binds every `smtp.listen` address: the first on smtp-server's own
 * listener, each further one on a listener of its own (pushed to `more`)
 * that hands its connections to the first, so every session is one of the
 * same server (its limits, its stop). A second listen on smtp-server's
 * listener is refused by Node ("Listen method has been called more than
 * once"): a list of two failed the start.
 */
async function listenAll(first: net.Server, specs: readonly string[], more: net.Server[]): Promise<string[]> {
  const urls: string[] = [];
  for (const [i, spec] of specs.entries()) {
    let target = first;
    if (i > 0) {
      target = net.createServer((socket) => first.emit('connection', socket));
      more.push(target);
    }
    urls.push(`smtp://${formatAddress(await listenOn(target, parseListen(spec)!, 'smtp'))}`);
  }
  return urls;
}

/**
 * Closes smtp-server and the further listeners of {@link listenAll}; resolves
 * once every one has closed, or `graceMs` + 1 s later. Each listener's close
 * waits for the connections it accepted: the further ones' sessions are
 * smtp-server's too, but its own listener knows nothing of them, so the stop
 * waits for every listener's close. `closing` runs once all are asked to.
 */
function closeListeners(server: SMTPServer, more: net.Server[], graceMs: number, closing: () => void): Promise<void> {
  return new Promise<void>((resolve) => {
    let open = 1 + more.length;
    const t = setTimeout(resolve, graceMs + 1_000);
    const closed = () => {
      if (--open > 0) return;
      clearTimeout(t);
      resolve();
    };
    for (const s of more.splice(0)) s.close(closed);
    server.close(closed);
    closing();
  });
}

/**
 * Accepts mail for tenant domains and forwards it; never relays for
 * strangers. Recipients are routed at RCPT time (unknown → 550 5.1.1,
 * foreign in any spelling → 550 5.7.1); a message is answered 250 only once
 * it is in the spool (fsync'd) and in state; the queue then delivers it
 * through `smtp.relay` or the recipients' MX, retries, and bounces.
 */
export function createMailService(deps: MailDeps): MailService {
  const main = deps.registry.config.main;
  const smtp = main.smtp;
  if (!smtp) throw new Error('createMailService needs an smtp section in the config');
  const log = deps.log.child({ svc: 'smtp' });
  let registry = deps.registry;
  const hostname = main.hostname;
  const srs = Srs.open(main.dataDir, smtp.srsDomain ?? hostname, deps.now, smtp.srsMaxAgeDays);
  // SPF, DKIM keys, DMARC and ARC keys are looked up through the suite's one resolver (`dns:`).
  const authResolver = suiteResolver(main.dns);
  const lookup = (name: string, type: string) => authResolver.resolve(name, type) as Promise<never>;
  const checks = smtp.checks;
  // The suite's ARC key, parsed once by the state's key cache (the one the DKIM signer uses too).
  const arcKey = async () => {
    const k = await deps.state.dkim.ensureArc(hostname);
    return { selector: k.selector, privateKey: deps.state.dkim.privateKey(k), parsed: deps.state.dkim.signingKey(k) };
  };
  const arcSeal = createArcSealer({ hostname, now: deps.now, key: arcKey });
  const sealer: ArcSealer = {
    seal: (raw) => {
      const now = registry.config.main.smtp?.checks ?? checks;
      return now.enabled && now.arcSeal ? arcSeal(raw) : Promise.resolve(Buffer.alloc(0));
    },
  };
  const transport: Deliverer = smtp.relay
    ? new RelayDeliverer({ url: smtp.relay, hostname, maxConnections: Math.min(smtp.queue.concurrency, 20), log })
    : new MxDeliverer({ hostname, port: smtp.queue.mxPort, resolver: deps.resolver ?? (main.dns ? suiteResolver(main.dns) : undefined), log });
  // Each attempt timed for the delivery latency histogram.
  const deliverer: Deliverer = {
    deliver: async (req) => {
      const end = deps.metrics?.mailDeliveryDuration.startTimer();
      try {
        return await transport.deliver(req);
      } finally {
        end?.();
      }
    },
    close: () => transport.close(),
  };
  const deliveries = deps.metrics?.counter('makewaves_mail_deliveries_total', 'Delivery attempts to one recipient, by result (sent, temp, perm).', ['result']);
  const store = deps.state.mailQueue;
  deps.metrics?.gauge('makewaves_mail_queue_messages', 'Messages in the outbound queue.', () => store.count());
  deps.metrics?.gauge('makewaves_mail_queue_oldest_seconds', 'Age of the oldest message in the outbound queue (0 when empty).', () => {
    const t = store.oldest();
    return t === undefined ? 0 : Math.max(0, ((deps.now ?? Date.now)() - t) / 1000);
  });
  const queue = new MailQueue({
    onOutcome: (status, reply) => {
      deliveries?.inc({ result: status });
      deps.health?.delivery(status);
      // No SMTP reply at all (4.4.1: refused, timed out, unresolvable) from the relay: it is unreachable.
      if (smtp.relay && status === 'temp' && reply.startsWith('4.4.1 ')) {
        deps.health?.set('relay', { severity: 'degraded', afterMs: 60_000, message: `the relay ${smtp.relay} has been unreachable for over a minute (${reply})` });
      } else if (smtp.relay && status !== 'temp') deps.health?.set('relay', undefined);
    },
    store: deps.state.mailQueue,
    spool: new Spool(path.join(main.dataDir, 'spool')),
    deliverer,
    log,
    hostname,
    settings: smtp.queue,
    now: deps.now,
    bouncesPerDomainPerHour: smtp.bouncesPerDomainPerHour,
    sign: createDkimSigner({ keys: deps.state.dkim, registry: () => registry, hostname, log, now: deps.now }),
    onRecipient: (o) => {
      const tenant = tenantOf(o.tenant, o.origRcpt);
      if (!tenant) return; // a bounce or other mail of our own: no tenant's
      const kind = o.outcome === 'sent' ? 'forwarded' : o.outcome === 'failed' ? 'bounced' : 'refused';
      deps.journal?.record({ tenant, kind, address: o.origRcpt.toLowerCase(), target: o.rcpt, sender: o.sender, reply: o.reply });
    },
    // Form mail: its outcome goes to the form log (`makewaves forms`), where the customer reads it;
    // a bounce mailed to forms@<domain> would reach nobody.
    onMessageOutcome: (o) => {
      const recorded = deps.state.forms.recordOutcome(o.id, o.status, o.reply);
      if (recorded && o.status === 'bounced') log.info({ qid: o.id, reply: o.reply }, 'bounce recorded in the form log instead of mailed');
      return recorded && o.status === 'bounced';
    },
  });
  /** The tenant a recipient's outcome belongs to: the message's, or of several, the one hosting the address it was sent to. */
  function tenantOf(tenants: string | null, address: string): string | undefined {
    if (!tenants) return undefined;
    const ids = tenants.split(',');
    if (ids.length === 1) return ids[0];
    const domain = address.slice(address.lastIndexOf('@') + 1).toLowerCase();
    return ids.find((id) => registry.tenants.get(id)?.domains.some((d) => d.toLowerCase() === domain)) ?? ids[0];
  }
  // The checks themselves run in a worker thread (inbound-pool.ts), with their own resolver for `dns:`.
  const inbound = createInboundPool({ dns: main.dns, log, timeout: checks.timeout });
  const { acceptMessage } = createAcceptor({ hostname, checks, queue, srs, smtp, deps, arcSeal, arcKey, lookup, check: inbound.check });
  const control = new ControlServer(path.join(main.dataDir, 'mail.sock'), queue, log);

  const sessions = new Map<string, SessionState>();
  const slots = sessionSlots();
  const warnNoPostmaster = noPostmasterWarning(deps.now ?? Date.now);

  const server = new MailSmtpServer({
    ...smtpServerOptions({ smtp, hostname, certs: deps.certs, registry: () => registry, log }),

    onConnect(session, done) {
      deps.metrics?.smtpSessions.inc();
      const ip = session.remoteAddress;
      const clog = log.child({ conn: session.id, ...clientFields(ip) });
      const admitted = slots.take(session.id, ip, smtp.maxConnectionsPerIp);
      if (!admitted.ok) {
        clog.info({ limit: smtp.maxConnectionsPerIp, open: admitted.open }, 'refused: too many connections from this address');
        deps.metrics?.smtpRefused.inc({ reason: 'too-many-connections' });
        return done(refuse('RATE_LIMITED', 'Too many connections from your address, try again later'));
      }
      const admit = () => {
        // Gone while its blocklist lookup ran: onClose has been and released it.
        if (!slots.held(session.id)) return done();
        sessions.set(session.id, { log: clog, registry, routes: new Map() });
        clog.debug('connected');
        done();
      };
      const lists = registry.config.main.spam?.dnsbl ?? [];
      if (lists.length === 0) return admit();
      const trouble = (zone: string, code: string) => clog.warn({ zone, code }, 'DNS blocklist not answered; the client is let in');
      void blocklisted(ip, lists, authResolver, trouble).then(
        (listed) => {
          if (!listed) return admit();
          clog.info({ zone: listed.zone, answer: listed.answer }, `refused: listed by the DNS blocklist ${listed.zone}`);
          deps.metrics?.smtpRefused.inc({ reason: 'dnsbl' });
          slots.free(session.id);
          done(refuse('BLOCKLISTED', `Service unavailable; client host [${ip}] blocked using ${listed.zone}; see ${listed.url}`));
        },
        (err: Error) => {
          clog.error({ err: err.message }, 'DNS blocklist check failed; the client is let in');
          admit();
        },
      );
    },

    onClose(session) {
      slots.free(session.id);
      sessions.delete(session.id);
    },

    onMailFrom(address, session, done) {
      const s = sessions.get(session.id)!;
      s.routes.clear();
      s.mailAt = performance.now();
      s.log.debug({ from: address.address, args: address.args }, 'MAIL FROM');
      if (NON_ASCII.test(address.address) && !asksUtf8(address.args)) {
        s.log.info({ from: address.address }, 'MAIL refused: a UTF-8 address without SMTPUTF8');
        deps.metrics?.smtpRefused.inc({ reason: 'utf8-without-smtputf8' });
        return done(reply(553, '5.6.7 A UTF-8 address needs the SMTPUTF8 parameter (RFC 6531)'));
      }
      done();
    },

    onRcptTo(address, session, done) {
      const s = sessions.get(session.id)!;
      const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
      const utf8 = session.envelope.smtpUtf8 || (session.envelope.mailFrom && asksUtf8(session.envelope.mailFrom.args));
      if (NON_ASCII.test(address.address) && !utf8) {
        s.log.info({ rcpt: address.address, from }, 'RCPT refused: a UTF-8 address without SMTPUTF8');
        deps.metrics?.smtpRefused.inc({ reason: 'utf8-without-smtputf8' });
        return done(reply(553, '5.6.7 A UTF-8 address needs the SMTPUTF8 parameter (RFC 6531)'));
      }
      const decided = routeRecipient(s.registry, srs, address.address, from);
      if (!decided.ok) {
        s.log.info({ rcpt: address.address, from, reason: decided.reason, detail: decided.detail }, `RCPT refused: ${decided.reason}`);
        if (decided.noPostmaster) warnNoPostmaster(s.log, address.address, from);
        deps.metrics?.smtpRefused.inc({ reason: decided.reason });
        // Refused for good at a tenant's domain (not a suspension's 4xx): the tenant's "refused".
        if (decided.tenant && decided.code >= 500) deps.journal?.record({ tenant: decided.tenant, kind: 'refused', address: address.address.toLowerCase(), target: '', sender: from, reply: `${decided.code} ${decided.text}` });
        return done(reply(decided.code, decided.text));
      }
      if (decided.list && !deps.lists) {
        s.log.error({ rcpt: address.address, tenant: decided.tenant }, 'RCPT deferred: mailing lists are not available');
        deps.metrics?.smtpRefused.inc({ reason: 'lists-unavailable' });
        return done(refuse('UNAVAILABLE', 'Mailing lists are not available right now, try again later'));
      }
      s.routes.set(address.address.toLowerCase(), { tenant: decided.tenant, targets: decided.targets, list: decided.list });
      s.log.info({ rcpt: address.address, tenant: decided.tenant, targets: decided.targets, list: decided.list, operator: decided.operator, problems: decided.problems }, 'RCPT accepted');
      done();
    },

    onData(stream: SMTPServerDataStream, session, done) {
      const s = sessions.get(session.id)!;
      void acceptMessage(s, stream, session).then(
        (msg) => done(null, msg),
        (err: Error & { responseCode?: number }) => done(err),
      ).finally(() => {
        // While stopping, a session whose message was just answered is closed once the reply is out.
        if (stopping) setImmediate(closeIdleSessions);
      });
    },
  });
  server.on('error', (err: Error) => {
    if (isRenegotiationError(err)) return; // logged with the client's address where it was refused (onSecure)
    log.error({ err: err.message }, 'SMTP server error');
  });

  let stopping = false;
  /** Sessions with no transaction under way have nothing to lose: 421 now (RFC 5321 §3.8), not after the grace. */
  function closeIdleSessions(): void {
    for (const c of (server as unknown as { connections: Set<IdleCheck> }).connections) {
      if (!c.session?.envelope?.mailFrom && !c._dataStream) {
        c.send(421, `${hostname} Service shutting down, try again later`);
        c.close();
      }
    }
  }

  const urls: string[] = [];
  /** The listeners after the first (listenAll). */
  const more: net.Server[] = [];
  return {
    queue,
    submitter: queue,
    sealer,
    dmarc: { policy: (domain) => dmarcPolicy(domain, lookup) },
    service: {
      name: 'smtp',
      async start() {
        // The control socket first: it refuses a data folder a running server uses, before the queue clears the
        // spool's unfinished files (that server's messages being received).
        await control.start();
        try {
          await queue.start();
          urls.push(...(await listenAll(server.server, smtp.listen, more)));
        } catch (err) {
          await control.stop();
          await queue.stop(0);
          for (const s of [server.server, ...more]) s.close();
          throw err;
        }
        return urls;
      },
      async stop(graceMs) {
        // smtp-server answers 421 to the sessions still open after closeTimeout: make that the grace we were given.
        (server as unknown as { options: { closeTimeout: number } }).options.closeTimeout = Math.max(graceMs, 1);
        await closeListeners(server, more, graceMs, () => {
          stopping = true;
          closeIdleSessions();
        });
        await control.stop();
        await queue.stop(graceMs);
        await inbound.close();
      },
      reload(next) {
        return () => void (registry = next);
      },
    },
  };
}
