/**
 * The suite's error catalogue: every condition that a service refuses or
 * fails with has a stable code here, and its reply in each protocol is
 * decided here and nowhere else. A service says *what* happened
 * (`refusal('QUOTA_EXCEEDED', 'ftp', text)`); this file says how HTTP, FTP
 * and SMTP word it, so the same condition never gets different codes in
 * different services.
 *
 * A condition that exists in one protocol only (an SMTP extension the
 * client did not ask for, an FTP command out of sequence) is answered
 * where it arises, in that protocol's words; this table holds what more
 * than one service can meet.
 *
 * Messages are sentences fit for the person on the other end (an operator
 * for config errors, a client for protocol errors). Never put a host path
 * or a stack trace in a message that reaches a client.
 */

import type { JailRefusal } from '../lib/jail.ts';

/** A protocol the suite answers in. */
export type Protocol = 'http' | 'ftp' | 'smtp';

interface Entry {
  /** What the condition is, for docs and logs. */
  readonly summary: string;
  /** HTTP status (RFC 9110). */
  readonly http: number;
  /** FTP reply code (RFC 959 and its extensions). */
  readonly ftp: number;
  /** SMTP reply code and enhanced status (RFC 5321, RFC 3463). */
  readonly smtp: readonly [code: number, status: string];
}

/** Every condition, by code. Order: the client's fault, then ours, then the operator's. */
export const CATALOGUE = {
  BAD_SYNTAX: { summary: 'the request is not well formed', http: 400, ftp: 501, smtp: [501, '5.5.4'] },
  BAD_ADDRESS: { summary: 'an address that is not well formed', http: 400, ftp: 501, smtp: [501, '5.1.3'] },
  BAD_PATH: { summary: 'a path that is malformed or encodes a separator', http: 400, ftp: 553, smtp: [501, '5.5.4'] },
  JAIL_ESCAPE: { summary: 'a path or link that leads out of the tenant root', http: 403, ftp: 550, smtp: [550, '5.7.1'] },
  NOT_FOUND: { summary: 'nothing by that name', http: 404, ftp: 550, smtp: [550, '5.1.1'] },
  NOT_ALLOWED: { summary: 'a method or command this resource does not take', http: 405, ftp: 502, smtp: [502, '5.5.1'] },
  AUTH_FAILED: { summary: 'wrong credentials', http: 401, ftp: 530, smtp: [535, '5.7.8'] },
  LOCKED_OUT: { summary: 'too many failed logins from this address or for this account', http: 429, ftp: 530, smtp: [454, '4.7.0'] },
  // FTP 530, not RFC 2228's 534: it is the answer to USER (RFC 959 §5.4 allows USER only 230, 331, 332, 421, 500,
  // 501, 530; 534 answers the security commands AUTH/PROT/CCC), what vsftpd sends ("530 Non-anonymous sessions
  // must use encryption.") and what clients read as a refused login.
  POLICY_DENIED: { summary: 'refused by policy (relay, sender, encryption required)', http: 403, ftp: 530, smtp: [550, '5.7.1'] },
  // RFC 7489 §6.6.2 leaves the reply to the receiver; 5.7.1 "delivery not authorized" is what the large providers send.
  UNAUTHENTICATED: { summary: "mail failing the authentication its sender domain's DMARC policy demands (p=reject)", http: 403, ftp: 550, smtp: [550, '5.7.1'] },
  // RFC 7372 §3.2: X.7.23 "SPF validation failed".
  SPF_FAILED: { summary: 'mail from a host its envelope sender domain does not allow (SPF fail)', http: 403, ftp: 550, smtp: [550, '5.7.23'] },
  // RFC 5782 §2.1 leaves the reply open; 554 5.7.1 at connect is what Postfix's reject_rbl_client sends.
  BLOCKLISTED: { summary: 'a client whose address is on a DNS blocklist the operator uses', http: 403, ftp: 550, smtp: [554, '5.7.1'] },
  // RFC 3463 X.7.1 "delivery not authorized, message refused": what Postfix+rspamd (milter reject) and the large providers send.
  SPAM: { summary: 'mail the content filter (rspamd) scores as spam', http: 403, ftp: 550, smtp: [550, '5.7.1'] },
  LOOP: { summary: 'a forwarding or proxy loop', http: 508, ftp: 550, smtp: [550, '5.4.6'] },
  TOO_LARGE: { summary: 'larger than the limit', http: 413, ftp: 552, smtp: [552, '5.3.4'] },
  QUOTA_EXCEEDED: { summary: "the tenant's storage quota is used up", http: 507, ftp: 552, smtp: [552, '5.2.2'] },
  RATE_LIMITED: { summary: 'too many requests or connections from this client', http: 429, ftp: 421, smtp: [421, '4.7.0'] },
  SUSPENDED: { summary: 'the tenant is suspended by the operator', http: 503, ftp: 530, smtp: [450, '4.2.1'] },
  // RFC 3463 X.7.0 "other or undefined security status": temporary, so the sender retries (RFC 7208 §8.6, RFC 7489 §6.6.2 temperror).
  CHECK_TEMPFAIL: { summary: 'an authentication check could not finish for a temporary DNS failure', http: 503, ftp: 451, smtp: [451, '4.7.0'] },
  // 451 4.7.1, what rspamd's own proxy answers when it cannot scan ("try again later"): temporary, the sender retries.
  SCAN_TEMPFAIL: { summary: 'the content filter (rspamd) could not score the message now', http: 503, ftp: 451, smtp: [451, '4.7.1'] },
  UNAVAILABLE: { summary: 'a part of the suite this needs is not available right now', http: 503, ftp: 421, smtp: [451, '4.3.2'] },
  BACKEND_FAILED: { summary: "the tenant's backend or handler failed or answered badly", http: 502, ftp: 451, smtp: [451, '4.4.1'] },
  BACKEND_TIMEOUT: { summary: "the tenant's backend or handler did not answer in time", http: 504, ftp: 451, smtp: [451, '4.4.2'] },
  DISK_FAILED: { summary: 'the server could not write to its disk', http: 507, ftp: 451, smtp: [452, '4.3.1'] },
  INTERNAL: { summary: 'a fault of the suite (logged with a reference)', http: 500, ftp: 451, smtp: [451, '4.3.0'] },
  CONFIG_INVALID: { summary: 'a config file the suite refuses', http: 500, ftp: 421, smtp: [421, '4.3.5'] },
  LISTEN_FAILED: { summary: 'a listener could not bind', http: 503, ftp: 421, smtp: [421, '4.3.2'] },
  STATE_FAILED: { summary: 'the state database failed', http: 500, ftp: 451, smtp: [451, '4.3.0'] },
} as const satisfies Record<string, Entry>;

export type ErrorCode = keyof typeof CATALOGUE;

/** What each refusal of the jail's path rule is, whichever service met it. */
export const JAIL_REFUSALS: Record<JailRefusal, ErrorCode> = {
  'bad-encoding': 'BAD_PATH',
  'bad-char': 'BAD_PATH',
  escape: 'JAIL_ESCAPE',
  // A dot-name is answered as if it did not exist: its existence is not the client's business.
  hidden: 'NOT_FOUND',
};

/** A reply in one protocol: `code` to send, `text` the line after it (SMTP: starts with the enhanced status). */
export interface Reply {
  readonly code: number;
  readonly text: string;
}

/** The reply code `code` gets in `protocol`. */
export function replyCode(code: ErrorCode, protocol: Protocol): number {
  const e: Entry = CATALOGUE[code];
  return protocol === 'smtp' ? e.smtp[0] : e[protocol];
}

/**
 * The reply for `code` in `protocol`, with `text` as its sentence. SMTP
 * replies get the catalogue's enhanced status in front of the text.
 */
export function refusal(code: ErrorCode, protocol: Protocol, text: string): Reply {
  const e: Entry = CATALOGUE[code];
  if (protocol === 'smtp') return { code: e.smtp[0], text: `${e.smtp[1]} ${text}` };
  return { code: e[protocol], text };
}

export class MakewavesError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MakewavesError';
    this.code = code;
  }

  /** How this error is answered in `protocol`. */
  reply(protocol: Protocol): Reply {
    return refusal(this.code, protocol, this.message);
  }
}

/** A short random reference shown to a client and written to the log with the real cause. */
export function errorRef(): string {
  return Math.random().toString(36).slice(2, 8);
}
