import path from 'node:path';
import type { HttpOutcome, ListModeration, PanelRequest, WebRootWriter } from '../core/contracts.ts';
import { LOCKOUT_DEFAULTS } from '../core/config/schema.ts';
import { replyCode } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { Registry, Tenant } from '../core/registry.ts';
import { addForward, checkNewPassword, EditRefused, removeForward, setCatchAll, setFtpPassword } from '../core/tenantfile.ts';
import { treeUsage } from '../lib/du.ts';
import { hashPassword, verifyPassword } from '../lib/password.ts';
import { clientFields } from '../lib/peers.ts';
import { keyTag, throttledLogin, type PanelSession, type State } from '../state/index.ts';
import { forwardsPage, messagePage, overviewPage, passwordPage, TRAFFIC_CSP, trafficPage, type Shell } from './html.ts';
import { formPages } from './forms.ts';
import { listPages } from './lists.ts';
import { DEFAULT_MAX_UPLOAD, uploadPage, uploads } from './upload.ts';
import { zipUploads } from './zip.ts';
import { mailSection } from './mail.ts';
import { logFiles, logsSection, sendLog } from './logs.ts';
import { TrafficCounter } from './traffic.ts';
import { redirect, refusedBody, sendHtml } from './web.ts';

/** Who is acting: a logged-in customer, with what every page of theirs shows. */
export interface Acting {
  login: string;
  tenant: string;
  shell: NonNullable<Shell['who']>;
}

export interface CustomerDeps {
  registry: () => Registry;
  state: State;
  log: Logger;
  reload: () => boolean;
  lists: ListModeration | undefined;
  webRoot: WebRootWriter | undefined;
  sameToken: (given: string | undefined | null, expected: string) => boolean;
  /** Writes a `denied` audit entry, within the panel's per-account share of them. */
  denied: (r: PanelRequest, login: string, tenant: string, detail: string) => void;
  now: () => number;
}

/** The pages of one customer's tenant: overview, password, forwards. The caller has checked the session, its tenant and the CSRF token. */
export function customerPages({ registry, state, log, reload, lists, webRoot, sameToken, denied, now }: CustomerDeps) {
  const configDir = () => registry().config.dir;
  // Counts each access log once, then only what was appended: a view does not re-read 30 days.
  const logsDir = () => path.join(registry().config.main.dataDir, 'logs');
  const counter = new TrafficCounter(logsDir);

  /** Takes a write into the running server at once (the watcher would too, a moment later). */
  function apply(what: string): void {
    if (!reload()) log.error({ what }, 'the configuration was written but the reload refused it');
  }

  function audit(r: PanelRequest, a: Acting, action: string, detail: string): void {
    if (action === 'denied') return denied(r, a.login, a.tenant, detail);
    state.panel.audit({ at: now(), login: a.login, tenant: a.tenant, action, detail, remote: r.remote });
    log.info({ user: a.login, tenant: a.tenant, remote: r.remote, action, detail }, 'panel change');
  }

  /**
   * A write that failed on our side. The usual cause is named for the
   * operator: the suite runs as a service user (`user:`) that may not write
   * the config folder. Anything else is the caller's 500 with a reference.
   */
  function cannotWrite(r: PanelRequest, a: Acting, err: unknown): HttpOutcome {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'EROFS') throw err;
    log.error({ user: a.login, tenant: a.tenant, err: (err as Error).message }, `the panel cannot write the tenant file (${code}): the service user needs write access to ${registry().config.dir}/tenants`);
    return sendHtml(r.req, r.res, replyCode('UNAVAILABLE', 'http'), messagePage('Not saved', 'Your change could not be saved right now; nothing was changed. Please tell your hosting provider.', a.shell));
  }

  function forwardsOf(t: Tenant): Array<[string, readonly string[]]> {
    return Object.entries(t.config.mail?.forward ?? {}).sort(([a], [b]) => a.localeCompare(b));
  }

  async function overview(r: PanelRequest, a: Acting, t: Tenant): Promise<HttpOutcome> {
    const usage = await treeUsage(t.root);
    return sendHtml(
      r.req,
      r.res,
      200,
      overviewPage(a.shell, {
        domains: t.domains,
        bytes: usage.bytes,
        files: usage.files,
        quota: t.quota,
        ftpUsers: t.config.ftp.map((u) => `${u.user}@${t.id}`),
        forwards: Object.keys(t.config.mail?.forward ?? {}).length,
        suspended: t.suspended,
      }),
    );
  }

  async function changePassword(r: PanelRequest, a: Acting, form: URLSearchParams, sessionId: string): Promise<HttpOutcome> {
    const current = form.get('current') ?? '';
    const next = form.get('new') ?? '';
    const reg = registry();
    // The current password is a guess like any login's: it counts against the same lockout.
    const lockout = reg.config.main.ftp?.lockout ?? LOCKOUT_DEFAULTS;
    const result = await throttledLogin(state.ftpLogins, lockout, a.login, r.remote, async () => {
      const account = registry().ftpAccount(a.login);
      return account !== undefined && verifyPassword(current, account.hash);
    });
    if (!result.ok) {
      const error = result.lockedMs !== undefined ? `Too many failed attempts; try again in ${Math.ceil(result.lockedMs / 60_000)} minutes.` : 'The current password is wrong.';
      log.info({ user: a.login, ...clientFields(r.remote), why: result.lockedMs !== undefined ? 'locked' : 'wrong current password' }, 'panel password change refused');
      return sendHtml(r.req, r.res, result.lockedMs !== undefined ? replyCode('LOCKED_OUT', 'http') : 400, passwordPage(a.shell, { errors: { current: error } }));
    }
    let hash: string;
    try {
      checkNewPassword(next);
      const user = a.login.slice(0, a.login.lastIndexOf('@'));
      hash = await hashPassword(next);
      setFtpPassword(configDir(), a.tenant, user, hash);
    } catch (err) {
      if (!(err instanceof EditRefused)) return cannotWrite(r, a, err);
      log.info({ user: a.login, remote: r.remote, why: err.message }, 'panel password change refused');
      return sendHtml(r.req, r.res, 400, passwordPage(a.shell, { errors: { new: err.message } }));
    }
    // This session stays; every other one of the account ends (the reason for a new password, perhaps): now, and by its key tag at its next request.
    state.panel.retag(sessionId, keyTag(hash));
    state.panel.endSessionsOf(a.login, sessionId);
    apply('password');
    audit(r, a, 'password', `changed the FTP password of ${a.login}`);
    return redirect(r.res, `/t/${encodeURIComponent(a.tenant)}/password?done=1`);
  }

  async function addOrRemove(r: PanelRequest, a: Acting, t: Tenant, form: URLSearchParams, remove: boolean): Promise<HttpOutcome> {
    const raw = (form.get('address') ?? '').trim();
    const address = raw.includes('@') ? raw : `${raw}@${t.domains[0]}`;
    const targetsRaw = form.get('targets') ?? '';
    const targets = targetsRaw.split(/[\s,;]+/).filter(Boolean);
    try {
      if (remove) {
        const done = removeForward(configDir(), address, t.id);
        apply('forward-remove');
        audit(r, a, 'forward-remove', `${done.local}@${t.domains[0]}`);
        return redirect(r.res, `/t/${encodeURIComponent(t.id)}/forwards?done=removed`);
      }
      const done = addForward(configDir(), address, targets, t.id, registry().config.main.panel?.limits);
      apply('forward-add');
      audit(r, a, 'forward-add', `${done.local}@${t.domains[0]} → ${done.targets.join(', ')}`);
      return redirect(r.res, `/t/${encodeURIComponent(t.id)}/forwards?done=added`);
    } catch (err) {
      if (!(err instanceof EditRefused)) return cannotWrite(r, a, err);
      if (err.field === 'foreign') {
        log.warn({ user: a.login, tenant: err.owner, remote: r.remote, address, why: 'another tenant' }, 'panel request refused');
        denied(r, a.login, err.owner ?? t.id, `${remove ? 'forward-remove' : 'forward-add'} ${address}: another tenant's address`);
        return sendHtml(r.req, r.res, 403, messagePage('Forbidden', `${address} is not an address of yours.`, a.shell));
      }
      log.info({ user: a.login, tenant: t.id, remote: r.remote, why: err.message }, 'panel forward change refused');
      const errors = err.field === 'targets' ? { targets: err.message } : { address: err.message };
      const page = forwardsPage(a.shell, { domain: t.domains[0]!, forwards: forwardsOf(t), catchAll: t.config.mail?.catchAll, errors, values: { address: raw, targets: targetsRaw } });
      return sendHtml(r.req, r.res, 400, page);
    }
  }

  function catchAll(r: PanelRequest, a: Acting, t: Tenant, form: URLSearchParams, remove: boolean): HttpOutcome {
    const target = remove ? undefined : (form.get('catchAll') ?? '').trim();
    try {
      setCatchAll(configDir(), t.id, target);
    } catch (err) {
      if (!(err instanceof EditRefused)) return cannotWrite(r, a, err);
      log.info({ user: a.login, tenant: t.id, remote: r.remote, why: err.message }, 'panel catch-all change refused');
      const page = forwardsPage(a.shell, { domain: t.domains[0]!, forwards: forwardsOf(t), catchAll: t.config.mail?.catchAll, errors: { catchAll: err.message }, values: { catchAll: target ?? '' } });
      return sendHtml(r.req, r.res, 400, page);
    }
    apply('catch-all');
    audit(r, a, remove ? 'catchall-remove' : 'catchall-set', remove ? `*@${t.domains[0]}` : `*@${t.domains[0]} → ${target!.toLowerCase()}`);
    return redirect(r.res, `/t/${encodeURIComponent(t.id)}/forwards?done=${remove ? 'catchall-removed' : 'catchall-set'}`);
  }

  /** The list pages of the acting customer (built per request: they close over who acts). */
  const listsOf = (a: Acting) =>
    listPages({
      registry,
      state,
      log,
      lists,
      now,
      apply,
      audit: (r, action, detail) => audit(r, a, action, detail),
      cannotWrite: (r, err) => cannotWrite(r, a, err),
    });

  const formsOf = (a: Acting) =>
    formPages({ registry, state, log, apply, audit: (r, action, detail) => audit(r, a, action, detail), cannotWrite: (r, err) => cannotWrite(r, a, err) });

  /** Tenants with an archive being received or unpacked: one at a time each, so its scratch copy in <data> is at most one `maxUpload` per tenant. */
  const unpacking = new Map<string, object>();

  async function zipUpload(r: PanelRequest, a: Acting, t: Tenant, csrf: string): Promise<HttpOutcome> {
    if (webRoot && unpacking.has(t.id)) {
      log.info({ user: a.login, tenant: t.id, remote: r.remote, why: 'another archive under way' }, 'panel zip upload refused');
      const max = registry().config.main.panel?.maxUpload ?? DEFAULT_MAX_UPLOAD;
      const zipError = 'Another archive of yours is being uploaded or unpacked; try again when it is done. Nothing was stored.';
      return refusedBody(r.req, sendHtml(r.req, r.res, replyCode('RATE_LIMITED', 'http'), uploadPage(a.shell, { max, free: await webRoot.free(t.id), zipError, available: true })));
    }
    const mine = {};
    unpacking.set(t.id, mine);
    // Freed as the answer goes out (the next archive may follow at once), and only if still this one's.
    const settled = () => void (unpacking.get(t.id) === mine && unpacking.delete(t.id));
    try {
      return await zipUploads({ registry, log, webRoot, sameToken, settled, audit: (r2, action, detail) => audit(r2, a, action, detail) }).receive(r, a.shell, t, csrf);
    } finally {
      settled();
    }
  }

  const uploadsOf = (a: Acting) => uploads({ registry, log, webRoot, sameToken, audit: (r, action, detail) => audit(r, a, action, detail) });

  const DONE: Record<string, string> = {
    added: 'The forward was added.',
    removed: 'The forward was removed.',
    'catchall-set': 'The catch-all was set.',
    'catchall-removed': 'The catch-all was removed.',
  };

  return {
    acting(s: PanelSession): Acting {
      return { login: s.login, tenant: s.tenant, shell: { tenant: s.tenant, login: s.login, csrf: s.csrf } };
    },

    /** A POST to `upload` or `upload/zip` (multipart): checked and streamed into the web root by upload.ts or zip.ts. */
    async upload(r: PanelRequest, a: Acting, csrf: string, rest = 'upload'): Promise<HttpOutcome> {
      const t = registry().tenants.get(a.tenant);
      if (!t) return refusedBody(r.req, sendHtml(r.req, r.res, 404, messagePage('Not found', 'This site is no longer hosted here.')));
      if (rest === 'upload/zip') return zipUpload(r, a, t, csrf);
      return uploadsOf(a).receive(r, a.shell, t, csrf);
    },

    /** Answers `rest` (the path after `/t/<tenant>/`); `form` is the checked body of a POST, undefined for GET/HEAD. */
    async handle(r: PanelRequest, a: Acting, rest: string, form: URLSearchParams | undefined, query: URLSearchParams, sessionId: string): Promise<HttpOutcome> {
      const t = registry().tenants.get(a.tenant);
      if (!t) return sendHtml(r.req, r.res, 404, messagePage('Not found', 'This site is no longer hosted here.'));
      const post = form !== undefined;
      const onlyGet = () => sendHtml(r.req, r.res, 405, messagePage('Method not allowed', 'This page is not a form.', a.shell), { Allow: 'GET, HEAD' });
      const onlyPost = () => sendHtml(r.req, r.res, 405, messagePage('Method not allowed', 'This address takes a form only.', a.shell), { Allow: 'POST' });
      if (rest === 'lists' || rest.startsWith('lists/')) return listsOf(a).handle(r, a.shell, t, rest.slice('lists'.length), form, query);
      if (rest === 'forms' || rest.startsWith('forms/')) return formsOf(a).handle(r, a.shell, t, rest.slice('forms'.length), form, query);
      if (rest.startsWith('logs/')) return post ? onlyGet() : sendLog(r, a.shell, logsDir(), rest.slice('logs/'.length), log);
      switch (rest) {
        case '':
          return post ? onlyGet() : overview(r, a, t);
        case 'traffic':
          if (post) return onlyGet();
          return sendHtml(r.req, r.res, 200, trafficPage(a.shell, await counter.traffic(t.id, t.domains, now()), mailSection(state, t.id, now()) + logsSection(a.shell, await logFiles(logsDir(), t.id))), {
            'Content-Security-Policy': TRAFFIC_CSP,
          });
        case 'upload':
          return uploadsOf(a).show(r, a.shell, t, query);
        case 'password':
          return post ? changePassword(r, a, form, sessionId) : sendHtml(r.req, r.res, 200, passwordPage(a.shell, { done: query.get('done') === '1' }));
        case 'forwards': {
          if (post) return addOrRemove(r, a, t, form, false);
          const done = Object.hasOwn(DONE, query.get('done') ?? '') ? DONE[query.get('done')!] : undefined;
          return sendHtml(r.req, r.res, 200, forwardsPage(a.shell, { domain: t.domains[0]!, forwards: forwardsOf(t), catchAll: t.config.mail?.catchAll, done }));
        }
        case 'forwards/remove':
          return post ? addOrRemove(r, a, t, form, true) : onlyPost();
        case 'catchall':
          return post ? catchAll(r, a, t, form, false) : onlyPost();
        case 'catchall/remove':
          return post ? catchAll(r, a, t, form, true) : onlyPost();
        default:
          return sendHtml(r.req, r.res, 404, messagePage('Not found', 'There is no such page in the panel.', a.shell));
      }
    },
  };
}
