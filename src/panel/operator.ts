import { certOverview, type CertRow } from '../core/certview.ts';
import type { HttpOutcome, PanelRequest, QueueRemover } from '../core/contracts.ts';
import { replyCode } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { Registry, Tenant } from '../core/registry.ts';
import { addTenant, removeTenant, resumeTenant, suspendTenant } from '../core/tenantadmin.ts';
import { EditRefused } from '../core/tenantfile.ts';
import { TENANT_ID } from '../core/config/load.ts';
import { scanUsage } from '../lib/du.ts';
import type { State } from '../state/index.ts';
import { queueOverview } from '../state/queueview.ts';
import { archiveTenantState } from '../state/tenantarchive.ts';
import { auditPage, certsPage, operatorMessage, queuePage, removePage, tenantsPage, type AddForm, type OperatorWho, type TenantRow } from './operator-html.ts';
import { redirect, sendHtml } from './web.ts';

/*
 * What an operator (an account under `panel.admins`) can do besides every
 * tenant's own pages: see every tenant, add, suspend, resume and remove
 * one, and read the certificates, the mail queue and the audit log. Each
 * change goes through core/tenantadmin.ts, the code `makewaves tenant
 * add|suspend|resume|remove` runs, then the suite reloads. The caller has
 * checked the session's role and the CSRF token of a POST.
 */

export interface OperatorDeps {
  registry: () => Registry;
  state: State;
  log: Logger;
  reload: () => boolean;
  /** The running queue, when `smtp` is configured: a removed tenant's queued mail leaves through it. */
  queue: QueueRemover | undefined;
  now: () => number;
}

/** The audit log's name for an operator: never mistaken for an FTP login (those have an "@"). */
export const operatorLogin = (name: string) => `${name} (operator)`;

/** One line about a tenant's certificates for the overview: the one that ends first, or the domains with none. */
function certSummary(rows: CertRow[]): string {
  if (rows.length === 0) return '-';
  const none = rows.filter((c) => c.leftMs === undefined).map((c) => c.domain);
  if (none.length > 0) return `none for ${none.join(', ')}`;
  const first = rows.reduce((a, b) => (b.leftMs! < a.leftMs! ? b : a));
  return `${first.leftMs! < 0 ? 'EXPIRED' : first.source}, until ${first.notAfter.slice(0, 10)}`;
}

const DONE: Record<string, (id: string) => string> = {
  added: (id) => `Tenant ${id} was added.`,
  suspended: (id) => `Tenant ${id} was suspended.`,
  resumed: (id) => `Tenant ${id} was resumed.`,
  removed: (id) => `Tenant ${id} was removed and archived.`,
};

/**
 * True when `tenant` is in the state notice `done` says (the query string of
 * the redirect after the change, which anyone can put in a link): the notice
 * never names anything but a tenant that is, or a tenant id that was.
 */
function isDoneIn(reg: Registry, done: string, tenant: string): boolean {
  if (tenant.length > 253 || !TENANT_ID.test(tenant)) return false;
  const t = reg.tenants.get(tenant);
  if (done === 'removed') return t === undefined;
  if (!t) return false;
  return done === 'suspended' ? t.suspended : done === 'resumed' ? !t.suspended : true;
}

export function operatorPages({ registry, state, log, reload, queue, now }: OperatorDeps) {
  function apply(what: string): void {
    if (!reload()) log.error({ what }, 'the configuration was written but the reload refused it');
  }

  function audit(r: PanelRequest, who: OperatorWho, tenant: string, action: string, detail: string): void {
    state.panel.audit({ at: now(), login: operatorLogin(who.login), tenant, action, detail, remote: r.remote });
    log.info({ user: who.login, role: 'operator', tenant, remote: r.remote, action, detail }, 'panel change');
  }

  async function rows(): Promise<TenantRow[]> {
    const reg = registry();
    const certs = certOverview(reg, now());
    const today = new Date(now()).toISOString().slice(0, 10);
    const out: TenantRow[] = [];
    for (const t of [...reg.tenants.values()].sort((a, b) => a.id.localeCompare(b.id))) {
      const s = t.config.suspended;
      out.push({
        id: t.id,
        domains: t.domains,
        bytes: await scanUsage(t.root),
        quota: t.quota,
        suspended: s === false ? undefined : s === true ? { reason: '', since: '' } : { reason: s.reason ?? '', since: s.since ?? '' },
        certs: certs ? certSummary(certs.rows.filter((c) => c.tenant === t.id)) : 'no HTTPS',
        today: state.traffic.since(t.id, today).requests,
      });
    }
    return out;
  }

  async function overview(r: PanelRequest, who: OperatorWho, status: number, o: { add?: AddForm; done?: string; error?: string } = {}): Promise<HttpOutcome> {
    return sendHtml(r.req, r.res, status, tenantsPage(who, { tenants: await rows(), ...o }));
  }

  /**
   * A write that failed on our side: the usual cause (the service user may
   * not write the config folder) named for the operator; anything else is
   * the caller's 500 with a reference.
   */
  function cannotWrite(r: PanelRequest, who: OperatorWho, err: unknown): HttpOutcome {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'EROFS') throw err;
    log.error({ user: who.login, err: (err as Error).message }, `the panel cannot write (${code}): the service user needs write access to ${registry().config.dir}/tenants and the data folder`);
    return sendHtml(r.req, r.res, replyCode('UNAVAILABLE', 'http'), operatorMessage(who, 'Not saved', `The change could not be saved (${(err as Error).message}); nothing was changed.`));
  }

  async function add(r: PanelRequest, who: OperatorWho, form: URLSearchParams): Promise<HttpOutcome> {
    const values = { id: (form.get('id') ?? '').trim(), domains: form.get('domains') ?? '', quota: (form.get('quota') ?? '').trim() };
    const domains = values.domains.split(/[\s,;]+/).filter(Boolean);
    try {
      addTenant(registry().config.dir, values.id.toLowerCase(), { domains, quota: values.quota || undefined }, new Date(now()));
    } catch (err) {
      if (!(err instanceof EditRefused)) return cannotWrite(r, who, err);
      log.info({ user: who.login, remote: r.remote, tenant: values.id, why: err.message }, 'panel tenant add refused');
      const key = err.field === 'quota' || err.field === 'id' ? err.field : 'domains';
      return overview(r, who, 400, { add: { errors: { [key]: err.message }, values } });
    }
    const id = values.id.toLowerCase();
    apply('tenant-add');
    audit(r, who, id, 'tenant-add', `${domains.map((d) => d.toLowerCase()).join(', ')}${values.quota ? `, quota ${values.quota}` : ''}`);
    return redirect(r.res, `/admin/?done=added&tenant=${encodeURIComponent(id)}`);
  }

  async function suspendOrResume(r: PanelRequest, who: OperatorWho, t: Tenant, suspend: boolean, form: URLSearchParams): Promise<HttpOutcome> {
    const reason = (form.get('reason') ?? '').trim() || undefined;
    try {
      if (suspend) suspendTenant(registry().config.dir, t.id, reason, new Date(now()));
      else resumeTenant(registry().config.dir, t.id);
    } catch (err) {
      if (!(err instanceof EditRefused)) return cannotWrite(r, who, err);
      log.info({ user: who.login, remote: r.remote, tenant: t.id, why: err.message }, `panel tenant ${suspend ? 'suspend' : 'resume'} refused`);
      return overview(r, who, 409, { error: err.message });
    }
    apply(suspend ? 'tenant-suspend' : 'tenant-resume');
    audit(r, who, t.id, suspend ? 'tenant-suspend' : 'tenant-resume', reason ?? '');
    return redirect(r.res, `/admin/?done=${suspend ? 'suspended' : 'resumed'}&tenant=${encodeURIComponent(t.id)}`);
  }

  async function remove(r: PanelRequest, who: OperatorWho, t: Tenant, form: URLSearchParams): Promise<HttpOutcome> {
    const typed = (form.get('confirm') ?? '').trim();
    if (typed !== t.id) {
      log.info({ user: who.login, remote: r.remote, tenant: t.id, why: 'confirmation did not match' }, 'panel tenant remove refused');
      return sendHtml(r.req, r.res, 400, removePage(who, { id: t.id, domains: t.domains, value: typed, error: `Type "${t.id}" exactly to remove it; nothing was removed.` }));
    }
    let done: { archive: string; queued: number };
    try {
      done = await removeTenant(
        registry().config.dir,
        t.id,
        // The running server's own state and queue: what the CLI reaches over the state file and the control socket.
        (o) =>
          archiveTenantState(state, o, async (m) => {
            if (queue) await queue.delete(m.id);
            else state.mailQueue.remove(m.id, m.file, true);
          }),
        new Date(now()),
      );
    } catch (err) {
      if (!(err instanceof EditRefused)) return cannotWrite(r, who, err);
      log.info({ user: who.login, remote: r.remote, tenant: t.id, why: err.message }, 'panel tenant remove refused');
      return sendHtml(r.req, r.res, 400, removePage(who, { id: t.id, domains: t.domains, value: typed, error: err.message }));
    }
    apply('tenant-remove');
    audit(r, who, t.id, 'tenant-remove', `archived in ${done.archive} with ${done.queued} queued message(s)`);
    return redirect(r.res, `/admin/?done=removed&tenant=${encodeURIComponent(t.id)}`);
  }

  return {
    /** Answers `rest` (the path after `/admin/`); `form` is the checked body of a POST, undefined for GET/HEAD. */
    async handle(r: PanelRequest, who: OperatorWho, rest: string, form: URLSearchParams | undefined, query: URLSearchParams): Promise<HttpOutcome> {
      const post = form !== undefined;
      const notFound = () => sendHtml(r.req, r.res, 404, operatorMessage(who, 'Not found', 'There is no such page in the panel.'));
      const onlyGet = () => sendHtml(r.req, r.res, 405, operatorMessage(who, 'Method not allowed', 'This page is not a form.'), { Allow: 'GET, HEAD' });
      const onlyPost = () => sendHtml(r.req, r.res, 405, operatorMessage(who, 'Method not allowed', 'This address takes a form only.'), { Allow: 'POST' });
      switch (rest) {
        case '': {
          if (post) return onlyGet();
          const done = query.get('done') ?? '';
          const tenant = query.get('tenant') ?? '';
          return overview(r, who, 200, { done: Object.hasOwn(DONE, done) && isDoneIn(registry(), done, tenant) ? DONE[done]!(tenant) : undefined });
        }
        case 'tenants':
          return post ? add(r, who, form) : redirect(r.res, '/admin/');
        case 'certs':
          return post ? onlyGet() : sendHtml(r.req, r.res, 200, certsPage(who, certOverview(registry(), now())));
        case 'queue':
          return post ? onlyGet() : sendHtml(r.req, r.res, 200, queuePage(who, queueOverview(state, now())));
        case 'audit':
          return post ? onlyGet() : sendHtml(r.req, r.res, 200, auditPage(who, state.panel.auditLog({ limit: 200 })));
      }
      const m = /^tenants\/([^/]+)\/(suspend|resume|remove)$/.exec(rest);
      if (!m) return notFound();
      let id: string;
      try {
        id = decodeURIComponent(m[1]!);
      } catch {
        // A broken %-escape names no tenant.
        return notFound();
      }
      const t = registry().tenants.get(id);
      if (!t) return sendHtml(r.req, r.res, 404, operatorMessage(who, 'Not found', 'There is no such tenant (removed meanwhile?).'));
      if (m[2] === 'remove') return post ? remove(r, who, t, form) : sendHtml(r.req, r.res, 200, removePage(who, { id: t.id, domains: t.domains }));
      return post ? suspendOrResume(r, who, t, m[2] === 'suspend', form) : onlyPost();
    },
  };
}
