import type { ArcSealer, ListInbox, ListMail, ListModeration, ListPages, MailSubmitter } from '../core/contracts.ts';
import type { Job, Service } from '../core/lifecycle.ts';
import type { Logger } from '../core/log.ts';
import type { Registry } from '../core/registry.ts';
import type { ArchivedPost, State } from '../state/index.ts';
import { digestSender } from './digests.ts';
import { createInboxWorker } from './inbox.ts';
import { createListKit, type ListContext } from './kit.ts';
import { createMembership, type Membership } from './membership.ts';
import { createListPages } from './pages.ts';
import { createPosting } from './posting.ts';

import type { ListKitDeps } from './kit.ts';
export { TOKEN_TTL_MS, type ListContext } from './kit.ts';

/** What the lists service needs: the same as its kit (kit.ts), which every part of it shares. */
export type ListsDeps = ListKitDeps;

/** What the pages module may ask of the list service. */
export interface ListActions extends Membership {
  context(tenantId: string, name: string): ListContext | undefined;
  archiveMonths(c: ListContext): Array<{ month: string; n: number }>;
  archiveMonth(c: ListContext, month: string): ArchivedPost[];
  archived(c: ListContext, id: number): ArchivedPost | undefined;
}

/** The lists service and the interfaces main.ts wires into mail and http. */
export interface Lists {
  service: Service;
  inbox: ListInbox;
  pages: ListPages;
  actions: ListActions;
  moderation: ListModeration;
  /** Sends the digests of every list with posts waiting (the daily job; tests call it directly). */
  sendDigests(): Promise<void>;
}

/**
 * Mailing lists: commands and confirmations by mail and on the web, posting
 * policy with held posts, distribution through the durable queue with VERP
 * and the RFC 2369/2919/8058 headers, bounce scoring and daily digests.
 * Mail arrives through {@link ListInbox} (stored before the SMTP 250, acted
 * on in order afterwards); pages through {@link ListPages}. The parts:
 * kit.ts (what all share), membership.ts (tokens: join, leave, moderate),
 * posting.ts (policy, distribution, archive), inbox.ts (the worker over
 * received list mail, commands and bounces), digests.ts.
 */
/** A token the panel makes for a decision is used at once; it outlives that by little. */
const MODERATION_TOKEN_TTL_MS = 60_000;

export function createListsService(d: ListsDeps): Lists {
  const kit = createListKit(d);
  const { log, now, store } = kit;
  // An approval releases a held post into the inbox, which the worker then picks up (called only after both exist).
  const members = createMembership(kit, () => inboxWorker.kick());
  const inboxWorker = createInboxWorker(kit, members, createPosting(kit));
  const sendDigests = digestSender(kit);

  const actions: ListActions = {
    ...members,
    context: kit.context,
    archiveMonths: (c) => store.archiveMonths(c.tenant.id, c.name),
    archiveMonth: (c, month) => store.archiveMonth(c.tenant.id, c.name, month),
    archived: (c, id) => store.archived(c.tenant.id, c.name, id),
  };

  // The panel's decisions: held post checked to be the list's, then a fresh owner's token through the one confirmation.
  const ofList = (tenant: string, list: string, heldId: number) => {
    const h = store.held(heldId);
    return h && h.tenant === tenant && h.list === list ? h : undefined;
  };
  const moderation: ListModeration = {
    preview: (tenant, list, heldId) => (ofList(tenant, list, heldId) ? members.held(heldId) : undefined),
    async moderate(tenant, list, heldId, approve, via) {
      const c = kit.context(tenant, list);
      if (!c || !ofList(tenant, list, heldId)) return undefined;
      const token = store.moderationToken(tenant, list, heldId, c.cfg.owner, now(), MODERATION_TOKEN_TTL_MS);
      const done = await members.confirm(c, token, via, !approve);
      return done === 'approved' || done === 'rejected' ? done : undefined;
    },
  };

  return {
    actions,
    moderation,
    inbox: {
      async receive(m: ListMail): Promise<void> {
        const id = store.receive(m, now());
        log.debug({ inbox: id, tenant: m.tenant, list: m.list, role: m.role }, 'list mail stored');
        inboxWorker.kick();
      },
    },
    pages: createListPages(actions, log, now),
    service: {
      name: 'lists',
      async start() {
        kit.stopped = false;
        const left = store.inboxIds().length;
        if (left > 0) log.info({ waiting: left }, 'resuming list mail received before the last stop');
        inboxWorker.kick();
        return [];
      },
      async stop(graceMs) {
        kit.stopped = true;
        const running = inboxWorker.running();
        if (running) {
          let t: NodeJS.Timeout | undefined;
          await Promise.race([running, new Promise<void>((resolve) => (t = setTimeout(resolve, graceMs)))]);
          clearTimeout(t);
        }
      },
      reload(next) {
        return () => void (kit.registry = next);
      },
      jobs(): Job[] {
        return [
          {
            name: 'expire list tokens',
            schedule: '23 * * * *',
            run: () => {
              const n = store.expire(now());
              if (n.tokens || n.held) log.info(n, 'expired list tokens and held posts removed');
            },
          },
          { name: 'send list digests', schedule: '0 6 * * *', run: sendDigests },
        ];
      },
    },
    sendDigests,
  };
}
