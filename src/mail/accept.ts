import type { Socket } from 'node:net';
import path from 'node:path';
import { TLSSocket, type SecureContext } from 'node:tls';
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';
import type { CertStore } from '../core/certs.ts';
import { suiteResolver } from '../core/dns.ts';
import type { Metrics } from '../core/metrics.ts';
import type { HealthReporter } from '../core/contracts.ts';
import type { ArcSealer, ListInbox, ListMail, MailSubmitter } from '../core/contracts.ts';
import type { MainConfig } from '../core/config/schema.ts';
import type { MailDeps } from './index.ts';
import { errorRef, refusal, type ErrorCode } from '../core/errors.ts';
import type { Service } from '../core/lifecycle.ts';
import type { Logger } from '../core/log.ts';
import type { RcptRoute, Registry } from '../core/registry.ts';
import { parseRecipient, roleOf } from '../core/recipient.ts';
import { formatAddress, listenOn, parseListen } from '../lib/listen.ts';
import type { State } from '../state/index.ts';
import { ControlServer } from './control.ts';
import { checkInbound, createArcSealer, createDkimSigner, type InboundAuth } from './mailauth.ts';
import { checkedMessage, decide, policyFor, stripOurResults } from './inbound.ts';
import { CheckTimeout, type SealRequest } from './inbound-pool.ts';
import { blocklisted } from './dnsbl.ts';
import { checkContent, type SpamSettings } from './rspamd.ts';
import { normalizeCrlf } from './crlf.ts';
import { MAX_LINE, MessageScan, scanned } from './scan.ts';
import { MxDeliverer, RelayDeliverer, type Deliverer, type MxResolver } from './deliver.ts';
import { MailQueue, newQueueId } from './queue.ts';
import { Spool, SpoolAborted } from '../state/spool.ts';
import { Srs } from './srs.ts';
import { isRenegotiationError, refuseRenegotiation } from '../lib/renegotiation.ts';
import { Timeline } from '../lib/timeline.ts';

/** An error smtp-server turns into a reply: `responseCode` plus a text that starts with the enhanced status code. */
export function reply(code: number, text: string): Error & { responseCode: number } {
  return Object.assign(new Error(text), { responseCode: code });
}

/** smtp-server's form of a catalogued refusal (see core/errors.ts). */
export function refuse(code: ErrorCode, text: string): Error & { responseCode: number } {
  const r = refusal(code, 'smtp', text);
  return reply(r.code, r.text);
}

/** What one session remembers beyond smtp-server's own session object. */
export interface SessionState {
  log: Logger;
  registry: Registry;
  routes: Map<string, { tenant?: string; targets: readonly string[]; list?: ListTarget }>;
  /** When the current transaction's MAIL FROM came (`performance.now()`): where its timeline starts. */
  mailAt?: number;
}

/**
 * The sender's reply when the next hop refused every recipient while it
 * waited (Postfix's rule: refuse in the session whatever you can, so no
 * bounce goes to a sender that may be forged): the next hop's 5xx code and
 * enhanced status, its text made safe for one reply line.
 */
export function nextHopRefusal(remote: string): Error & { responseCode: number } {
  const m = /^(5\d\d)(?:[ -]|$)(?:(5\.\d{1,3}\.\d{1,3})(?:\s|$))?(.*)$/s.exec(remote.trim());
  const code = m ? Number(m[1]) : 554;
  const status = m?.[2] ?? '5.0.0';
  // One line of printable ASCII: every run of anything else (CR, LF, other
  // controls, DEL, non-ASCII) and of spaces becomes one space; capped at 200
  // characters, trimmed after the cut so it never ends in a space.
  const text = (m ? m[3]! : remote).replace(/[^\x21-\x7e]+/g, ' ').slice(0, 201).trim().slice(0, 200).trim();
  return reply(code, `${status} Delivery refused by the next hop: ${text || 'no reason given'}`);
}

export const NON_ASCII = /[^\x00-\x7f]/;

export function asksUtf8(args: unknown): boolean {
  return typeof args === 'object' && args !== null && (args as { SMTPUTF8?: unknown }).SMTPUTF8 === true;
}

/**
 * The MAIL FROM parameters to pass on: BODY=8BITMIME (RFC 6152) and
 * SMTPUTF8 (RFC 6531), with whether the message needs the latter (UTF-8 in
 * its envelope or header section), known once the body is in.
 */
export function mailParams(session: SMTPServerSession, from: string, recipients: ReadonlyArray<{ rcpt: string }>, scan: MessageScan) {
  const env = session.envelope as SMTPServerSession['envelope'] & { bodyType?: string; smtpUtf8?: boolean };
  return {
    eightBit: env.bodyType === '8bitmime',
    smtputf8: env.smtpUtf8 === true || asksUtf8(env.mailFrom ? env.mailFrom.args : undefined),
    needsUtf8: () => scan.eightBitHeaders || NON_ASCII.test(from) || recipients.some((r) => NON_ASCII.test(r.rcpt)),
  };
}

/** What stop() reads of smtp-server's connections to tell an idle session from one in a transaction. */
export interface IdleCheck {
  session?: { envelope?: { mailFrom?: unknown } };
  _dataStream?: unknown;
  send(code: number, text: string): void;
  close(): void;
}

/** The inbound results for a log line. */
export function authLog(auth: InboundAuth | undefined): Record<string, unknown> {
  return auth ? { spf: auth.spf, dkim: auth.dkim, dmarc: auth.dmarc.result, dmarcPolicy: auth.dmarc.policy, aligned: auth.aligned } : {};
}

/** Characters a header field may carry from a client-chosen value (no CR, LF or other controls). */
export function headerSafe(v: string): string {
  return v.replace(/[^\x21-\x7e]/g, '?');
}

/**
 * Our trace field, RFC 5321 §4.4: `from` the EHLO name and the client's
 * address, `by` us, `with` ESMTP/ESMTPS (RFC 3848), our queue id, `for` the
 * recipient when there is exactly one (more would disclose the others).
 */
export function receivedHeader(session: SMTPServerSession, hostname: string, id: string, only: string | undefined): Buffer {
  const helo = headerSafe(session.hostNameAppearsAs || 'unknown');
  const ip = session.remoteAddress;
  const host = session.clientHostname && !session.clientHostname.startsWith('[') ? `${headerSafe(session.clientHostname)} ` : '';
  const proto = headerSafe(session.transmissionType || 'SMTP');
  const date = new Date().toUTCString().replace('GMT', '+0000');
  const forPart = only ? `\r\n\tfor <${headerSafe(only)}>` : '';
  return Buffer.from(`Received: from ${helo} (${host}[${ip}])\r\n\tby ${hostname} (makewaves) with ${proto} id ${id}${forPart};\r\n\t${date}\r\n`);
}

/** A list address a message was sent to. */
export type ListTarget = Pick<ListMail, 'tenant' | 'list' | 'role' | 'param'>;

export type RcptDecision =
  | { ok: true; tenant?: string; targets: readonly string[]; problems?: readonly string[]; list?: ListTarget; operator?: 'postmaster' | 'abuse' }
  | { ok: false; code: number; text: string; reason: string; detail: string; tenant?: string; noPostmaster?: true };

const REFUSALS: Record<Exclude<RcptRoute, { ok: true }>['reason'], { code: ErrorCode; text: (a: string) => string }> = {
  syntax: { code: 'BAD_ADDRESS', text: (a) => `<${a}>: bad recipient address syntax` },
  'relay-denied': { code: 'POLICY_DENIED', text: (a) => `<${a}>: relay access denied` },
  'unknown-user': { code: 'NOT_FOUND', text: (a) => `<${a}>: no such recipient here` },
  // RFC 3463 §3.3 X.4.6 "routing loop detected": permanent, the owner must fix it.
  loop: { code: 'LOOP', text: (a) => `<${a}>: forwarding loop, the owner of this address needs to fix its forwards` },
  // RFC 3463 §3.3 X.2.1 "mailbox disabled, not accepting messages"; 4xx so the sender keeps it and retries.
  suspended: { code: 'SUSPENDED', text: (a) => `<${a}>: mailbox temporarily disabled, try again later` },
};

/**
 * Decides the fate of one RCPT TO from `sender` ("" = the null
 * reverse-path): an SRS bounce address coming back, or a tenant route.
 *
 * An SRS address exists to carry bounces to the original sender. Those
 * come from the null reverse-path (DSNs, RFC 3464; auto-replies use it too,
 * RFC 3834 §3.3), so mail from anyone else to an SRS address is refused:
 * otherwise every SRS address we ever wrote into a forwarded message would
 * relay anything to its original sender.
 */
export function routeRecipient(registry: Registry, srs: Srs, address: string, sender: string): RcptDecision {
  const safe = address.replace(/[^\x21-\x7e]/g, '?');
  const p = parseRecipient(address);
  // postmaster@ and abuse@ of the SRS domain are the operator's (core/registry.ts), never SRS addresses.
  if (p.ok && srs.handles(p.domain) && !registry.hostsDomain(p.domain) && !roleOf(p.local)) {
    const back = srs.reverse(p.local);
    if (!back.ok) return { ok: false, ...refusal('POLICY_DENIED', 'smtp', `<${safe}>: ${back.why}`), reason: 'srs-invalid', detail: back.why };
    if (sender !== '') {
      const why = 'this SRS address takes only bounces (null sender <>)';
      return { ok: false, ...refusal('POLICY_DENIED', 'smtp', `<${safe}>: ${why}`), reason: 'srs-not-bounce', detail: why };
    }
    return { ok: true, targets: [back.address] };
  }
  const route = registry.route(address);
  if (route.ok && route.kind === 'list') {
    return { ok: true, tenant: route.tenant.id, targets: [], list: { tenant: route.tenant.id, list: route.list, role: route.role, param: route.param } };
  }
  // The operator's mail (mail.postmaster): no tenant's, so the suite's own check policy applies to it.
  if (route.ok && route.kind === 'operator') return { ok: true, targets: route.targets, problems: route.problems.length ? route.problems : undefined, operator: route.role };
  if (route.ok) return { ok: true, tenant: route.tenant.id, targets: route.targets, problems: route.problems.length ? route.problems : undefined };
  const r = REFUSALS[route.reason];
  return { ok: false, ...refusal(r.code, 'smtp', r.text(safe)), reason: route.reason, detail: route.detail, tenant: route.tenant?.id, ...(route.noPostmaster ? { noPostmaster: true as const } : {}) };
}

/**
 * The warning for a postmaster@ or abuse@ refused because `mail.postmaster`
 * is not set (RFC 5321 §4.5.1 asks every mail domain to take postmaster):
 * once a minute at most, however many such RCPTs come, on the session's
 * logger (who: its connection, client and sender).
 */
export function noPostmasterWarning(now: () => number): (log: Logger, rcpt: string, from: string) => void {
  let warnedAt = -Infinity;
  return (log, rcpt, from) => {
    const t = now();
    if (t - warnedAt < 60_000) return;
    warnedAt = t;
    log.warn({ rcpt, from }, `RCPT refused for <${rcpt}>: mail.postmaster is not set in makewaves.yaml, so postmaster@ and abuse@ without a tenant forward of that name are refused (RFC 5321 section 4.5.1 asks every mail domain to take postmaster; logged once a minute at most)`);
  };
}

/** The whole message after CRLF normalisation; throws SpoolAborted (answered as for the spool) when it is too large or has too long a line. */
async function readMessage(stream: SMTPServerDataStream, scan: MessageScan): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of scanned(normalizeCrlf(stream as AsyncIterable<Buffer>), scan)) {
    if (stream.sizeExceeded || scan.tooLong) continue;
    chunks.push(chunk);
  }
  if (stream.sizeExceeded || scan.tooLong) throw new SpoolAborted('message refused while being received');
  return Buffer.concat(chunks);
}

/** What the checks' thread needs to seal a message; undefined when the key cannot be had (the event loop then tries, and logs why). */
async function sealRequest(arcKey: AcceptContext['arcKey'], s: SessionState, prefix: Buffer): Promise<SealRequest | undefined> {
  try {
    return { ...(await arcKey()), prefix };
  } catch (err) {
    s.log.warn({ err: (err as Error).message }, 'the ARC key could not be read for the checks thread; the message is sealed after the checks');
    return undefined;
  }
}

/**
 * The DMARC policy the checks found for the From: domain, kept with a list
 * post so its From: rewrite needs no lookup of its own: `absent` when the
 * domain publishes none; undefined when not known (no checks, no single
 * From: domain, a temporary failure).
 */
export function dmarcFound(auth: InboundAuth | undefined): ListMail['authenticatedDmarc'] {
  if (!auth?.fromDomain || auth.temporary) return undefined;
  if (auth.dmarc.result === 'none') return 'absent';
  const p = auth.dmarc.policy?.toLowerCase();
  return p === 'reject' || p === 'quarantine' || p === 'none' ? p : undefined;
}

/** The results of checks cut short at `seconds`: a temporary error of each method (RFC 8601 §2.7). */
function timedOut(hostname: string, seconds: number): InboundAuth {
  const why = `(no result within ${seconds} s)`;
  return { results: `${hostname}; spf=temperror ${why}; dkim=temperror ${why}; dmarc=temperror ${why}`, fromDomain: undefined, spf: 'temperror', dkim: ['temperror'], dkimPass: [], dmarc: { result: 'temperror', policy: undefined }, aligned: undefined, temporary: true };
}

/** What accepting a message needs of the mail service. */
export interface AcceptContext {
  hostname: string;
  checks: NonNullable<MainConfig['smtp']>['checks'];
  queue: MailQueue;
  srs: Srs;
  smtp: NonNullable<MainConfig['smtp']>;
  deps: MailDeps;
  arcSeal: (raw: Buffer) => Promise<Buffer>;
  /** The suite's ARC key, for the checks' thread to seal with. */
  arcKey: () => Promise<{ selector: string; privateKey: string }>;
  lookup: (name: string, type: string) => Promise<never>;
  /** Where the checks run (a worker thread: inbound-pool.ts); absent: checkInbound() on this thread. */
  check?: (raw: Buffer, options: Parameters<typeof checkInbound>[1] & { seal?: SealRequest | undefined }, timeline?: Timeline) => Promise<InboundAuth>;
}

/**
 * DATA: what a message goes through between its last byte and our reply —
 * the inbound checks and the tenants' policy (refusals in the session), the
 * ARC seal, and the durable queue or the lists service; 250 only once it is
 * all on disk.
 */
export function createAcceptor(a: AcceptContext): { acceptMessage(s: SessionState, stream: SMTPServerDataStream, session: SMTPServerSession): Promise<string> } {
  const { hostname, checks, queue, srs, smtp, deps, arcSeal, lookup } = a;
  const spamScans = deps.metrics?.counter('makewaves_spam_scans_total', 'Messages scored by rspamd, by what became of them (accept, tag, reject, failed).', ['action']);
  async function acceptMessage(s: SessionState, stream: SMTPServerDataStream, session: SMTPServerSession): Promise<string> {
    const id = newQueueId();
    // From MAIL FROM to each stage of this message: one debug line once it is answered.
    const timeline = new Timeline(s.mailAt);
    timeline.mark('data');
    const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const recipients: Array<{ rcpt: string; origRcpt: string }> = [];
    const lists: Array<ListTarget & { rcpt: string }> = [];
    const seen = new Set<string>();
    const tenants = new Set<string>();
    for (const r of session.envelope.rcptTo) {
      const route = s.routes.get(r.address.toLowerCase());
      if (!route) continue;
      if (route.tenant) tenants.add(route.tenant);
      if (route.list) lists.push({ ...route.list, rcpt: r.address });
      for (const t of route.targets) {
        if (seen.has(t)) continue;
        seen.add(t);
        recipients.push({ rcpt: t, origRcpt: r.address });
      }
    }
    const tenant = tenants.size > 0 ? [...tenants].join(',') : undefined;
    const only = session.envelope.rcptTo.length === 1 ? session.envelope.rcptTo[0]!.address : undefined;
    const prefix = receivedHeader(session, hostname, id, only);
    const scan = new MessageScan();
    const settings = s.registry.config.main.smtp?.checks ?? checks;
    const params = mailParams(session, from, recipients, scan);
    try {
      let body: Buffer | AsyncIterable<Buffer>;
      let auth: InboundAuth | undefined;
      let authMs: number | undefined;
      const spam = s.registry.config.main.spam;
      if (!settings.enabled && lists.length === 0 && !spam?.rspamd) {
        body = scanned(normalizeCrlf(stream as AsyncIterable<Buffer>), scan);
      } else {
        // The checks need the whole message before the reply (a refusal is in the session): it is read into memory (at most smtp.maxMessageBytes).
        const received = await readMessage(stream, scan);
        timeline.mark('received');
        let raw: Buffer | undefined;
        const sealing = settings.enabled && lists.length === 0 && settings.arcSeal;
        if (settings.enabled) {
          const t0 = performance.now();
          // Without content scoring the message leaves as the checks leave it: the checks' thread seals it too (one hand-over, not three).
          const seal = sealing && !spam?.rspamd ? await sealRequest(a.arcKey, s, prefix) : undefined;
          const checked = await inboundChecks(s, session, received, from, tenants, timeline, seal);
          auth = checked.auth;
          raw = checkedMessage(auth.results, prefix, checked.raw);
          authMs = Math.round((performance.now() - t0) * 100) / 100;
          timeline.mark('checked');
        }
        // Without the checks, the message as received under our Received: field.
        raw ??= Buffer.concat([prefix, received]);
        // Content scoring after the checks, on the message as it would be passed on; the ARC seal then covers our verdict.
        if (spam?.rspamd) {
          const own = auth && ownSignature(s, auth);
          if (own) {
            // Mail the suite made and signed (a list copy, form mail, a notice) coming back through SMTP: it was never scored as ours, and needs no scoring.
            s.log.info({ qid: id, from, signedBy: own }, `message not scored: it carries a valid DKIM signature of ours (d=${own.domain} s=${own.selector})`);
            spamScans?.inc({ action: 'own' });
          } else raw = await scoreContent(s, session, raw, { ...spam, rspamd: spam.rspamd }, id);
          timeline.mark('scored');
        }
        if (sealing) {
          raw = Buffer.concat([auth?.arcSet !== undefined ? Buffer.from(auth.arcSet, 'latin1') : await sealOrNot(s, raw), raw]);
          timeline.mark('sealed');
        }
        if (lists.length > 0) return await acceptForLists(s, raw, { id, from, tenant, recipients, lists, params, auth: auth ? (auth.aligned ?? 'none') : undefined, authDomain: auth?.fromDomain, authDmarc: dmarcFound(auth) });
        body = raw;
      }
      const { size, refused } = await queue.enqueue({
        id,
        // SRS: forwarded mail leaves with our domain in its envelope sender, so SPF passes at the target.
        sender: srs.forward(from),
        returnPath: from,
        tenant,
        recipients,
        ...(Buffer.isBuffer(body) ? {} : { prefix }),
        body,
        // Refused, not cut or wrapped: a forwarder must not alter what may be signed (DKIM).
        abort: () => stream.sizeExceeded || scan.tooLong,
        ...params,
        // Every recipient here is forwarded: the next hop is asked while the sender waits (see nextHopRefusal).
        waitMs: smtp!.waitForNextHop * 1000,
        timeline,
      });
      if (refused !== undefined) {
        s.log.info({ qid: id, tenant, from, to: recipients.map((r) => r.rcpt), reply: refused }, 'message refused: the next hop refused every recipient');
        deps.metrics?.smtpRefused.inc({ reason: 'next-hop-refused' });
        throw nextHopRefusal(refused);
      }
      s.log.info(
        { qid: id, tenant, from, to: recipients.map((r) => r.rcpt), rcpts: session.envelope.rcptTo.map((r) => r.address), size, ...authLog(auth), authMs },
        'message accepted',
      );
      for (const t of tenants.size > 0 ? tenants : ['_none']) deps.metrics?.smtpAccepted.inc({ tenant: t });
      timeline.mark('answered');
      s.log.debug({ qid: id, ms: timeline.marks }, 'message timeline');
      return `Ok: queued as ${id}`;
    } catch (err) {
      // Our own reply (the next hop's refusal, an authentication refusal) goes out as it is.
      if (typeof (err as { responseCode?: unknown }).responseCode === 'number') throw err;
      if (err instanceof SpoolAborted && scan.tooLong && !stream.sizeExceeded) {
        s.log.info({ from, longestLine: scan.longest, limit: MAX_LINE }, `message refused: a line is longer than ${MAX_LINE} octets`);
        deps.metrics?.smtpRefused.inc({ reason: 'line-length' });
        throw reply(554, `5.6.0 Message refused: a line longer than ${MAX_LINE} octets (RFC 5322 section 2.1.1)`);
      }
      if (err instanceof SpoolAborted) {
        s.log.info({ from, bytes: stream.byteLength, limit: smtp!.maxMessageBytes }, 'message refused: larger than smtp.maxMessageBytes');
        deps.metrics?.smtpRefused.inc({ reason: 'size' });
        const tooLarge = refuse('TOO_LARGE', `Message exceeds the size limit of ${smtp!.maxMessageBytes} bytes`);
        journalRefusal(s, session, from, `${tooLarge.responseCode} ${tooLarge.message}`);
        throw tooLarge;
      }
      if (stream.destroyed && (err as NodeJS.ErrnoException).code === 'ECONNECTION') {
        // Nobody is left to answer; nothing was kept.
        s.log.info({ from, bytes: stream.byteLength }, 'client went away during DATA; message dropped before acceptance');
        throw reply(451, '4.4.2 Connection closed during DATA');
      }
      const ref = errorRef();
      s.log.error({ ref, err: (err as Error).message, code: (err as NodeJS.ErrnoException).code }, 'could not queue a message');
      throw refuse('DISK_FAILED', `Cannot queue the message now, try again later (ref ${ref})`);
    }
  }

  /** Tells the journal of a message refused in the session, once per recipient of a tenant (the panel's "refused"). */
  function journalRefusal(s: SessionState, session: SMTPServerSession, from: string, text: string): void {
    for (const r of session.envelope.rcptTo) {
      const route = s.routes.get(r.address.toLowerCase());
      if (route?.tenant) deps.journal?.record({ tenant: route.tenant, kind: 'refused', address: r.address.toLowerCase(), target: '', sender: from, reply: text });
    }
  }


  /**
   * SPF, DKIM, DMARC and ARC of a received message, and the policy of its
   * recipients' tenants over them: resolves with the results and the
   * message without Authentication-Results fields that claim our name, or
   * throws the refusal (550 in the session; 451 for a temporary failure
   * when the policy says defer).
   */
  type Checked = Promise<{ auth: InboundAuth; raw: Buffer }>;
  async function inboundChecks(s: SessionState, session: SMTPServerSession, received: Buffer, from: string, tenants: ReadonlySet<string>, timeline: Timeline, seal: SealRequest | undefined): Checked {
    const helo = session.hostNameAppearsAs || session.remoteAddress;
    let auth: InboundAuth;
    try {
      const options = { sender: from, ip: session.remoteAddress, helo, hostname, resolver: lookup };
      auth = await (a.check ? a.check(received, { ...options, seal }, timeline) : checkInbound(received, options));
    } catch (err) {
      if (err instanceof CheckTimeout) {
        // RFC 8601 §2.7: a temporary failure of each method; the tenants' `temporary` policy accepts it so tagged, or defers it (451).
        s.log.warn({ from, ip: session.remoteAddress, helo, seconds: err.seconds }, `inbound checks timed out (no result within ${err.seconds} s: a DNS server not answering?); every result is temperror`);
        return finish(s, session, received, from, tenants, timedOut(hostname, err.seconds));
      }
      // Not a DNS failure (those are temperror results): the library could not read the message. Treated as a temporary failure, never a refusal.
      const ref = errorRef();
      s.log.error({ ref, from, err: (err as Error).message }, 'inbound checks failed; the message counts as not authenticated');
      auth = { results: `${hostname}; none (checks failed, ref ${ref})`, fromDomain: undefined, spf: 'none', dkim: [], dkimPass: [], dmarc: { result: 'none', policy: undefined }, aligned: undefined, temporary: true };
    }
    return finish(s, session, received, from, tenants, auth);
  }

  /** The tenants' policy over `auth`: the refusal thrown, or the results and the message without fields that claim our name. */
  function finish(s: SessionState, session: SMTPServerSession, received: Buffer, from: string, tenants: ReadonlySet<string>, auth: InboundAuth): { auth: InboundAuth; raw: Buffer } {
    const policy = policyFor(s.registry.config.main.smtp?.checks ?? checks, [...tenants].map((t) => s.registry.tenants.get(t)?.config));
    const refused = decide(auth, policy, { sender: from, ip: session.remoteAddress });
    if (refused) {
      s.log.info({ from, ...authLog(auth), policy, reason: refused.reason }, `message refused: ${refused.reason}`);
      deps.metrics?.smtpRefused.inc({ reason: refused.reason });
      const err = refuse(refused.code, refused.text);
      // A deferral (4xx) is not a refusal: the sender tries again.
      if (err.responseCode >= 500) journalRefusal(s, session, from, `${err.responseCode} ${err.message}`);
      throw err;
    }
    const stripped = stripOurResults(received, hostname);
    if (stripped.removed > 0) s.log.info({ from, removed: stripped.removed }, 'removed Authentication-Results fields claiming our name');
    return { auth, raw: stripped.raw };
  }

  /**
   * A verified DKIM signature made with one of our own keys (d= a domain
   * of ours and s= a selector we hold, current or retired), or undefined.
   * The selector matters: a tenant's other mail provider signs for the
   * same domain with keys that are not ours.
   */
  function ownSignature(s: SessionState, auth: InboundAuth): { domain: string; selector: string } | undefined {
    return auth.dkimPass.find(
      (sig) => (sig.domain === hostname || s.registry.hostsDomain(sig.domain)) && deps.state.dkim.list(sig.domain).some((k) => k.purpose === 'dkim' && k.selector === sig.selector),
    );
  }

  /** The message scored by rspamd (tagged or not), or the refusal thrown (550 5.7.1 spam; 451 4.7.1 when rspamd failed and spam.onFailure says tempfail). */
  async function scoreContent(s: SessionState, session: SMTPServerSession, raw: Buffer, spam: SpamSettings, id: string): Promise<Buffer> {
    const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const env = {
      ip: session.remoteAddress,
      helo: session.hostNameAppearsAs || session.remoteAddress,
      from,
      rcpts: session.envelope.rcptTo.map((r) => r.address),
      queueId: id,
      hostname: session.clientHostname && !session.clientHostname.startsWith('[') ? session.clientHostname : undefined,
    };
    const out = await checkContent(raw, env, spam, s.log, (action) => spamScans?.inc({ action }));
    if (!out.refusal) return out.raw;
    deps.metrics?.smtpRefused.inc({ reason: out.refusal.code === 'SPAM' ? 'spam' : 'spam-tempfail' });
    throw refuse(out.refusal.code, out.refusal.text);
  }


  /** The ARC set for a forwarded message, or nothing when sealing fails (logged: the message still goes, as an unsigned one would). */
  async function sealOrNot(s: SessionState, raw: Buffer): Promise<Buffer> {
    try {
      return await arcSeal(raw);
    } catch (err) {
      s.log.error({ err: (err as Error).message }, 'message forwarded without an ARC seal: sealing failed');
      return Buffer.alloc(0);
    }
  }

  /**
   * A message with list recipients (read into memory: at most
   * smtp.maxMessageBytes), queued for its forward recipients if it has any,
   * then handed to the lists service once per list address; 250 only when
   * all of that is durable.
   */
  async function acceptForLists(
    s: SessionState,
    raw: Buffer,
    m: {
      id: string;
      from: string;
      tenant: string | undefined;
      recipients: Array<{ rcpt: string; origRcpt: string }>;
      lists: Array<ListTarget & { rcpt: string }>;
      params: ReturnType<typeof mailParams>;
      auth: ListMail['authenticated'];
      authDomain: string | undefined;
      authDmarc: ListMail['authenticatedDmarc'];
    },
  ): Promise<string> {
    if (m.recipients.length > 0) {
      const sealed = (s.registry.config.main.smtp?.checks ?? checks).arcSeal && m.auth !== undefined ? await sealOrNot(s, raw) : Buffer.alloc(0);
      await queue.enqueue({ id: m.id, sender: srs.forward(m.from), returnPath: m.from, tenant: m.tenant, recipients: m.recipients, body: Buffer.concat([sealed, raw]), ...m.params });
    }
    for (const l of m.lists) {
      const mail: ListMail = { tenant: l.tenant, list: l.list, role: l.role, param: l.param, rcpt: l.rcpt, sender: m.from, raw, authenticated: m.auth, authenticatedDomain: m.authDomain, authenticatedDmarc: m.authDmarc };
      await deps.lists!.receive(mail);
    }
    s.log.info({ qid: m.id, tenant: m.tenant, from: m.from, to: m.recipients.map((r) => r.rcpt), lists: m.lists.map((l) => l.rcpt), size: raw.length, authenticated: m.auth }, 'message accepted');
    for (const t of m.tenant?.split(',') ?? ['_none']) deps.metrics?.smtpAccepted.inc({ tenant: t });
    return `Ok: queued as ${m.id}`;
  }

  return { acceptMessage };
}
