import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SecureContext } from 'node:tls';
import type { Tenant } from './registry.ts';

/**
 * Interfaces through which services use each other without importing each
 * other: main.ts wires an implementation from one service into another.
 */

/** What a handled HTTP request sent, for the access log and traffic counters. */
export interface HttpOutcome {
  status: number;
  bytes: number;
}

/** A request for `/cgi-bin/<name><pathInfo>` on a tenant's site. */
export interface GatewayRequest {
  req: IncomingMessage;
  res: ServerResponse;
  tenant: Tenant;
  /** Handler name: the first path segment after /cgi-bin/ (decoded, no "/"). */
  name: string;
  /** The rest of the decoded path after the name ("" or "/..."). */
  pathInfo: string;
  /** Raw query string without "?". */
  query: string;
  remote: string;
  /** Port the request arrived on. */
  serverPort: number;
}

/** Runs form handlers (implemented by cgi/, used by http/). Must always answer the request. */
export interface HandlerGateway {
  handle(r: GatewayRequest): Promise<HttpOutcome>;
}

/** One message for the durable outbound queue. */
export interface OutboundMessage {
  /** Envelope sender ("" for a null sender). */
  from: string;
  /** Envelope recipients. */
  to: string[];
  /** The whole message, headers and body, CRLF line ends. */
  raw: Buffer;
  /** The tenant on whose behalf it is sent, for logs and limits. */
  tenant?: string;
}

/** The durable outbound mail queue (implemented by mail/, used by cgi/ and lists). */
export interface MailSubmitter {
  /** Resolves with the queue id once the message is durably queued (on disk and in state). */
  submit(msg: OutboundMessage): Promise<string>;
}

/**
 * Tells the HTTP service that a tenant's files changed through the suite
 * itself (an FTP upload, delete or rename), so the next request sees the
 * change at once, without waiting for the cache's revalidation interval.
 */
export interface SiteChanges {
  changed(tenantId: string): void;
}

/** One message for a mailing-list address, as accepted by the SMTP service. */
export interface ListMail {
  tenant: string;
  list: string;
  /** Which of the list's addresses it was sent to. */
  role: 'post' | 'request' | 'subscribe' | 'unsubscribe' | 'confirm' | 'bounces';
  /** The token of `news-confirm+TOKEN`, the VERP-encoded member of `news-bounces+…`; "" otherwise. */
  param: string;
  /** The envelope recipient as given. */
  rcpt: string;
  /** The envelope sender ("" for a null sender: a bounce or an auto-reply). */
  sender: string;
  /** The whole message with our Received: header (and Authentication-Results, when checked), CRLF line ends. */
  raw: Buffer;
  /**
   * How the inbound checks authenticated its From: domain in alignment
   * (RFC 7489 §3.1): by DMARC, or without a DMARC record by DKIM or SPF;
   * `none` when they did not; absent when the checks are off.
   */
  authenticated?: 'dmarc' | 'dkim' | 'spf' | 'none' | undefined;
  /**
   * The From: domain those checks judged (lower case), as their own parser
   * read the field: a member's post counts as authenticated only when its
   * poster's domain is this one.
   */
  authenticatedDomain?: string | undefined;
  /**
   * The DMARC policy those checks found for that domain (p=, or sp= for a
   * subdomain; `absent` when it publishes none); undefined when not known
   * (checks off, a temporary failure): the lists then ask for it themselves.
   */
  authenticatedDmarc?: 'none' | 'quarantine' | 'reject' | 'absent' | undefined;
}

/** Seals mail the suite passes on after changing it (implemented by mail/, used by lists). */
export interface ArcSealer {
  /**
   * The ARC set (RFC 8617: ARC-Seal, ARC-Message-Signature,
   * ARC-Authentication-Results) to put on top of `raw`, made from the
   * Authentication-Results field the suite wrote at receipt; empty when
   * `raw` has none or sealing is off. The signature does not cover
   * List-Unsubscribe, so one set serves every member's copy.
   */
  seal(raw: Buffer): Promise<Buffer>;
}

/** DMARC policies of sender domains, looked up through the suite's resolver (implemented by mail/, used by lists). */
export interface DmarcPolicies {
  /**
   * The policy that applies to mail From: `domain` (its `_dmarc` record, or
   * its organisational domain's); undefined when none is published.
   * Rejects when DNS could not be asked (timeout, SERVFAIL).
   */
  policy(domain: string): Promise<'none' | 'quarantine' | 'reject' | undefined>;
}

/** Takes mail for list addresses (implemented by lists/, used by mail/). */
export interface ListInbox {
  /**
   * Resolves once the message is durably stored (the SMTP service answers
   * 250 only then); it is acted on afterwards. Rejects if it could not be
   * stored, leaving nothing behind.
   */
  receive(m: ListMail): Promise<void>;
}

/** A request for `/lists/<name>/<rest>` on a tenant's site, for a list that tenant has. */
export interface ListPageRequest {
  req: IncomingMessage;
  res: ServerResponse;
  tenant: Tenant;
  list: string;
  /** Decoded path segments after `/lists/<name>/`. */
  segments: string[];
  /** Raw query string without "?". */
  query: string;
  remote: string;
}

/** Serves the web pages of mailing lists (implemented by lists/, used by http/). Must always answer the request. */
export interface ListPages {
  handle(r: ListPageRequest): Promise<HttpOutcome>;
}

/** What became of a file written into a web root: stored, or refused in FTP's words (a path, the quota, a folder). */
export type WebRootResult = { ok: true; clientPath: string; bytes: number } | { ok: false; why: 'quota' | 'refused'; message: string };

/**
 * Writes files into a tenant's web root with FTP's own jail, quota and
 * atomic replace (implemented by ftp/, used by panel/): one code path for
 * every upload, whatever it came by.
 */
export interface WebRootWriter {
  /** Bytes left in the tenant's quota (Infinity without one). */
  free(tenant: string): Promise<number>;
  /**
   * Stores `source` at `clientPath` (jail-relative) of `tenant`'s web root:
   * into a hidden temporary beside it, every chunk charged to the quota,
   * renamed over the target once `source` ends. If `source` throws, or the
   * quota is reached, the temporary goes and the old file stays as it was;
   * a throw from `source` is rethrown. `who` is for the log.
   */
  store(tenant: string, clientPath: string, source: AsyncIterable<Buffer>, who: { login: string; remote: string }): Promise<WebRootResult>;
  /**
   * Unpacks a tree (a zip of a site) into folder `folder` (jail-relative,
   * existing) of `tenant`'s web root, all or nothing: every path is judged
   * by the jail and the declared sizes by the quota before anything is
   * written; then each file goes to a hidden temporary beside its target,
   * every chunk charged to the quota and counted against its declared size
   * (more bytes than declared is a refusal); only when all are complete are
   * they renamed over their targets. On any refusal or throw, the
   * temporaries and the folders made for them go: nothing is left behind.
   */
  storeTree(tenant: string, folder: string, entries: readonly WebRootEntry[], who: { login: string; remote: string }): Promise<WebRootTreeResult>;
}

/** One entry of a tree to unpack: a folder, or a file of `size` bytes whose content `open` gives. Paths are relative, '/'-separated. */
export type WebRootEntry = { path: string; dir: true } | { path: string; dir: false; size: number; open: () => AsyncIterable<Buffer> };

/** What became of a tree: unpacked (counts, bytes), or refused in FTP's words with nothing written. */
export type WebRootTreeResult = { ok: true; folder: string; files: number; folders: number; bytes: number } | { ok: false; why: 'quota' | 'refused'; message: string };

/** One outcome of mail to one of a tenant's addresses, for its panel: forwarded (the next hop took it), refused (in the SMTP session), bounced. */
export interface MailOutcome {
  tenant: string;
  kind: 'forwarded' | 'refused' | 'bounced';
  /** The tenant's address the mail was sent to. */
  address: string;
  /** Where it was forwarded ('' when it was refused before that was known). */
  target: string;
  /** The envelope sender ('' = null sender). */
  sender: string;
  /** The next hop's reply, or our refusal. */
  reply: string;
}

/** Where the mail service tells each outcome (implemented by state's MailStats, used by mail/, wired in main.ts). */
export interface MailJournal {
  record(o: MailOutcome): void;
}

/** A held post as its owner sees it before deciding: the text only, decoded, never its HTML. */
export interface HeldPreview {
  poster: string;
  subject: string;
  text: string;
}

/** The owner's decisions on held posts, for the panel (implemented by lists/, used by panel/). */
export interface ListModeration {
  /** Held post `heldId` of `tenant`'s list `list`, or undefined if there is none (decided, expired, another list's). */
  preview(tenant: string, list: string, heldId: number): HeldPreview | undefined;
  /**
   * Approves (posts) or rejects (tells the poster) held post `heldId`, by a
   * fresh approval token in the owner's name used up at once: the same
   * confirmation as the owner's reply by mail or `makewaves list approve`.
   * `via` is for the log. Undefined when there is no such held post.
   */
  moderate(tenant: string, list: string, heldId: number, approve: boolean, via: string): Promise<'approved' | 'rejected' | undefined>;
}

/** Something the operator should know about, as `/healthz` and `makewaves status` show it. */
export interface HealthProblem {
  /** Stable key: at most one problem per key at a time (`config`, `mail-permanent-failures`, `cert:<file>`). */
  readonly key: string;
  /** degraded: serving, but something needs the operator; down: a listener is not serving. */
  readonly severity: 'degraded' | 'down';
  /** One sentence for the operator, naming the file, address or rate concerned. */
  readonly message: string;
}

/** Where services report what they know is wrong (implemented by core/health.ts, read by admin/). */
export interface HealthReporter {
  /**
   * Sets the problem under `key`, or clears it with undefined. With
   * `afterMs`, it shows only once it has been set (without a clear) for that
   * long: "the relay unreachable for more than a minute".
   */
  set(key: string, problem: (Omit<HealthProblem, 'key'> & { afterMs?: number }) | undefined): void;
  /** One delivery attempt to one recipient and how it ended (for the permanent-failure rate). */
  delivery(status: 'sent' | 'temp' | 'perm'): void;
}

/** Path under which ACME HTTP-01 challenges are asked for (RFC 8555 §8.3). */
export const ACME_CHALLENGE_PATH = '/.well-known/acme-challenge/';

/**
 * Answers ACME HTTP-01 challenges (implemented by acme/, used by http/ for
 * every request before tenant routing, suspension or proxying).
 */
export interface AcmeChallenges {
  /** Answers `req` when it asks for a token pending for its Host; undefined otherwise (the request is routed as usual). */
  answer(req: IncomingMessage, res: ServerResponse): HttpOutcome | undefined;
  /**
   * TLS-ALPN-01 (RFC 8737), present when that challenge type is configured:
   * the context with the challenge certificate for a pending challenge of
   * `servername`, for a handshake that offers `acme-tls/1`; undefined when
   * none is pending.
   */
  tlsAlpn?: {
    context(servername: string): SecureContext | undefined;
    /** An acme-tls/1 handshake completed (for the log): no HTTP follows on it. */
    answered(servername: string, remote: string | undefined): void;
  };
}

/** A request on the control panel's host (`panel.host`), over HTTPS or from a loopback client. */
export interface PanelRequest {
  req: IncomingMessage;
  res: ServerResponse;
  remote: string;
  /** True on an HTTPS connection: cookies get `Secure` and the `__Host-` prefix. */
  secure: boolean;
}

/** Serves the customers' control panel (implemented by panel/, used by http/). Must always answer the request. */
export interface PanelPages {
  handle(r: PanelRequest): Promise<HttpOutcome>;
}

/**
 * The outbound queue's removal of one message, as `makewaves queue delete`
 * asks it over the control socket (implemented by mail/, used by panel/
 * when the operator removes a tenant: its queued mail leaves the queue the
 * way the CLI's removal takes it). False when there is no such message.
 */
export interface QueueRemover {
  delete(id: string): Promise<boolean>;
}
