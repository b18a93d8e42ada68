import { createHash, createHmac, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { readNoLink } from '../lib/ownfile.ts';
import path from 'node:path';
import type { ArcSealer, DmarcPolicies, MailSubmitter } from '../core/contracts.ts';
import type { Logger } from '../core/log.ts';
import type { ListConfig, Registry, Tenant } from '../core/registry.ts';
import type { ListStore, ListToken, MemberMode, State } from '../state/index.ts';
import { composeNotice } from './message.ts';

/** Tokens (confirmations, approvals) are good for 7 days. */
export const TOKEN_TTL_MS = 7 * 24 * 3600_000;

/** Everything about one list that its messages need, from config. */
export interface ListContext {
  tenant: Tenant;
  name: string;
  cfg: ListConfig;
  /** The tenant's first domain: the list's addresses and List-Id use it. */
  domain: string;
  /** `news@example.test`, `news-request@example.test`... */
  addr(suffix?: string): string;
  /** `<news.example.test>` (RFC 2919). */
  listId: string;
  /** `https://example.test/lists/news/` */
  web: string;
}

export const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** The HMAC key for signed unsubscribe URLs: 32 random bytes in `<data>/lists.key`, made on first start (mode 0600). */
export function openKey(dataDir: string): Buffer {
  const file = path.join(dataDir, 'lists.key');
  try {
    return readNoLink(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  mkdirSync(dataDir, { recursive: true });
  try {
    writeFileSync(file, randomBytes(32), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return readNoLink(file);
}

/**
 * What every part of the lists service shares: the current registry, the
 * store, the clock, the log, and the few things all list mail is made of
 * (a list's context, its notices, its tokens, its signed unsubscribe URLs).
 */
export interface ListKit {
  readonly log: Logger;
  readonly now: () => number;
  readonly store: ListStore;
  readonly state: State;
  readonly mail: MailSubmitter;
  /** ARC sealing of posts (nothing when absent). */
  readonly sealer: ArcSealer | undefined;
  /** DMARC policies of posters' domains, for `fromMunging: dmarc` (absent: never rewritten for DMARC). */
  readonly dmarc: DmarcPolicies | undefined;
  /** The registry in force (swapped on reload). */
  registry: Registry;
  /** True between stop() and the next start(): long work ends at its next step. */
  stopped: boolean;
  context(tenantId: string, name: string): ListContext | undefined;
  /** Queues a notice from the list's -request address, with the list's bounce address as sender. */
  send(c: ListContext, to: string, subject: string, text: string, headers?: string[]): Promise<void>;
  /** A fresh token for `action`, stored by its hash; the token itself goes only into the mail. */
  newToken(c: ListContext, action: ListToken['action'], address: string, mode: MemberMode, heldId: number | null): string;
  sign(c: ListContext, address: string): string;
  /** The per-member one-click URL (RFC 8058 §3.1: it must identify the member without any other state). */
  unsubscribeUrl(c: ListContext, address: string): string;
  /** The per-member List-Unsubscribe field of a list copy or digest. */
  memberHeader(c: ListContext, address: string): string;
}

export interface ListKitDeps {
  registry: Registry;
  state: State;
  log: Logger;
  /** The durable outbound queue: every copy and notice goes out through it. */
  mail: MailSubmitter;
  /** ARC-seals each post once before it is distributed (absent: posts go unsealed). */
  sealer?: ArcSealer;
  /** Looks up the DMARC policy of a poster's domain (through the suite's resolver). */
  dmarc?: DmarcPolicies;
  /** The clock (token expiry, bounce days); tests move it. */
  now?: () => number;
}

export function createListKit(d: ListKitDeps): ListKit {
  const log = d.log.child({ svc: 'lists' });
  const now = d.now ?? Date.now;
  const store = d.state.lists;
  const key = openKey(d.registry.config.main.dataDir);

  const kit: ListKit = {
    log,
    now,
    store,
    state: d.state,
    mail: d.mail,
    sealer: d.sealer,
    dmarc: d.dmarc,
    registry: d.registry,
    stopped: true,

    context(tenantId, name) {
      const tenant = kit.registry.tenants.get(tenantId);
      const cfg = tenant && kit.registry.listConfig(tenant, name);
      if (!tenant || !cfg) return undefined;
      const domain = tenant.domains[0]!;
      const origin = cfg.webUrl ? new URL(cfg.webUrl).origin : `https://${domain}`;
      return {
        tenant,
        name,
        cfg,
        domain,
        addr: (suffix = '') => `${name}${suffix}@${domain}`,
        listId: `<${name}.${domain}>`,
        web: `${origin}/lists/${encodeURIComponent(name)}/`,
      };
    },

    async send(c, to, subject, text, headers = []) {
      const raw = composeNotice({ from: c.addr('-request'), to, subject, text, domain: c.domain, now: now(), headers: [`List-Id: ${c.listId}`, ...headers] });
      // Notices leave with the list's bounce address: a bounce of a confirmation is not a member's bounce.
      const qid = await d.mail.submit({ from: c.addr('-bounces'), to: [to], raw, tenant: c.tenant.id });
      log.debug({ tenant: c.tenant.id, list: c.name, to, subject, qid }, 'notice queued');
    },

    newToken(c, action, address, mode, heldId) {
      const token = randomBytes(16).toString('hex');
      const t = now();
      store.addToken(sha256(token), { tenant: c.tenant.id, list: c.name, action, address, mode, heldId, createdAt: t, expiresAt: t + TOKEN_TTL_MS });
      return token;
    },

    sign(c, address) {
      return createHmac('sha256', key).update(`unsubscribe\n${c.tenant.id}\n${c.name}\n${address}`).digest('base64url').slice(0, 22);
    },

    unsubscribeUrl(c, address) {
      return `${c.web}unsubscribe/${Buffer.from(address).toString('base64url')}/${kit.sign(c, address)}`;
    },

    memberHeader(c, address) {
      return `List-Unsubscribe: <mailto:${c.addr('-request')}?subject=unsubscribe>,\r\n <${kit.unsubscribeUrl(c, address)}>\r\n`;
    },
  };
  return kit;
}
