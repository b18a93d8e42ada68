import type { ErrorCode } from '../core/errors.ts';
import type { MainConfig, TenantConfig } from '../core/config/schema.ts';
import { stripFields } from './fields.ts';
import { authservId, type InboundAuth } from './mailauth.ts';

/** One tenant's policy for inbound authentication (tenant file `mail.checks` over `smtp.checks`). */
export interface CheckPolicy {
  dmarcReject: 'refuse' | 'tag';
  spfFail: 'tag' | 'refuse';
  temporary: 'accept' | 'defer';
}

type Checks = NonNullable<MainConfig['smtp']>['checks'];

/**
 * The policy for a message to the recipients of `tenants` (none: an SRS
 * bounce, the suite's defaults). One SMTP reply answers every recipient,
 * so when their tenants differ the strictest choice of each key wins.
 */
export function policyFor(defaults: Checks, tenants: ReadonlyArray<TenantConfig | undefined>): CheckPolicy {
  const own = tenants.map((t) => ({ ...pick(defaults), ...defined(t?.mail?.checks) }));
  if (own.length === 0) own.push(pick(defaults));
  return {
    dmarcReject: own.some((p) => p.dmarcReject === 'refuse') ? 'refuse' : 'tag',
    spfFail: own.some((p) => p.spfFail === 'refuse') ? 'refuse' : 'tag',
    temporary: own.some((p) => p.temporary === 'defer') ? 'defer' : 'accept',
  };
}

const pick = (c: Checks): CheckPolicy => ({ dmarcReject: c.dmarcReject, spfFail: c.spfFail, temporary: c.temporary });

function defined<T extends object>(o: T | undefined): Partial<T> {
  return Object.fromEntries(Object.entries(o ?? {}).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** A refusal of the message in the session; `reason` is for logs and metrics. */
export interface AuthRefusal {
  code: ErrorCode;
  text: string;
  reason: 'dmarc-reject' | 'spf-fail' | 'auth-tempfail';
}

/**
 * What `policy` makes of `auth`: undefined to accept (the
 * Authentication-Results field is the tag: DMARC p=quarantine failures,
 * SPF fails, temperrors let through), or the refusal. A temporary failure
 * is never refused permanently: a DMARC fail may be one only because an
 * SPF lookup timed out.
 */
export function decide(auth: InboundAuth, policy: CheckPolicy, envelope: { sender: string; ip: string }): AuthRefusal | undefined {
  if (auth.temporary) {
    if (policy.temporary === 'accept') return undefined;
    return { code: 'CHECK_TEMPFAIL', text: 'Cannot check the authentication of this message now (a DNS lookup timed out or failed), try again later', reason: 'auth-tempfail' };
  }
  if (auth.dmarc.result === 'fail' && auth.dmarc.policy === 'reject' && policy.dmarcReject === 'refuse') {
    const d = auth.fromDomain ?? 'the From: domain';
    return {
      code: 'UNAUTHENTICATED',
      text: `Message refused: its From: domain ${d} publishes a DMARC policy of reject, and this message passes neither SPF nor DKIM in alignment with ${d} (RFC 7489)`,
      reason: 'dmarc-reject',
    };
  }
  if (auth.spf === 'fail' && auth.dmarc.result === 'none' && policy.spfFail === 'refuse') {
    const at = envelope.sender.lastIndexOf('@');
    const d = at === -1 ? 'the sender domain' : envelope.sender.slice(at + 1);
    return { code: 'SPF_FAILED', text: `Message refused: ${d} does not allow ${envelope.ip} to send its mail (SPF fail, RFC 7208)`, reason: 'spf-fail' };
  }
  return undefined;
}

/**
 * A message as it is passed on after the checks: our Authentication-Results
 * field, our Received: field (`prefix`), then what was received less the
 * results claiming our name. The checks' thread builds the same bytes to
 * seal them (inbound-pool.ts), so both must come from here.
 */
export function checkedMessage(results: string, prefix: Buffer, stripped: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`Authentication-Results: ${results}\r\n`, 'latin1'), prefix, stripped]);
}

/**
 * `raw` without the Authentication-Results fields that claim our
 * authserv-id (RFC 8601 §5: a forgery, or a copy of ours coming back);
 * the header section is otherwise left as it was, byte for byte.
 */
export function stripOurResults(raw: Buffer, hostname: string): { raw: Buffer; removed: number } {
  const id = hostname.toLowerCase();
  return stripFields(raw, (name, value) => name === 'authentication-results' && authservId(value) === id, /(^|\r\n)authentication-results\s*:/i);
}
