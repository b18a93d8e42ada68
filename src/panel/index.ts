import { randomBytes, timingSafeEqual } from 'node:crypto';
import { LOCKOUT_DEFAULTS } from '../core/config/schema.ts';
import type { HttpOutcome, ListModeration, PanelPages, PanelRequest, QueueRemover, WebRootWriter } from '../core/contracts.ts';
import { errorRef, replyCode } from '../core/errors.ts';
import type { Job, Service } from '../core/lifecycle.ts';
import type { Logger } from '../core/log.ts';
import type { Registry } from '../core/registry.ts';
import { DUMMY_HASH, verifyPassword } from '../lib/password.ts';
import { clientFields } from '../lib/peers.ts';
import { keyTag, throttledLogin, type PanelSession, type State } from '../state/index.ts';
import { sendAsset } from './assets.ts';
import { customerPages, type Acting } from './customer.ts';
import { loginPage, messagePage } from './html.ts';
import { operatorLogin, operatorPages } from './operator.ts';
import { cookieName, readCookie, readForm, redirect, sendHtml, setCookie } from './web.ts';

export interface PanelDeps {
  registry: Registry;
  state: State;
  log: Logger;
  /** Takes the configuration on disk into the running server (the same reload as SIGHUP); false if it was refused. */
  reload: () => boolean;
  /** Held-post decisions, when the suite runs mailing lists (`smtp` configured). */
  lists?: ListModeration;
  /** Uploads into web roots, through the FTP service's jail and quota (when `ftp:` is configured). */
  webRoot?: WebRootWriter;
  /** The running mail queue (when `smtp` is configured), for the operator's tenant removal. */
  queue?: QueueRemover;
  now?: () => number;
}

/** A session lives at most this long, however busy (then its owner logs in again). */
export const SESSION_MAX_AGE_MS = 12 * 3600_000;

/**
 * Refusals of one account written to the audit log per minute. The rest of
 * that minute's are in the log only: a script asking for other tenants'
 * pages would otherwise grow the state database without end and push every
 * other entry out of the operator's view.
 */
export const AUDITED_DENIALS_PER_MINUTE = 30;

/** One account's refusals in the current minute: the first {@link AUDITED_DENIALS_PER_MINUTE} are audited, the next says so, the rest are logged only. */
class DenialBudget {
  private readonly seen = new Map<string, { since: number; n: number }>();

  take(login: string, at: number): 'audit' | 'last' | 'log' {
    let d = this.seen.get(login);
    if (!d || at - d.since >= 60_000) this.seen.set(login, (d = { since: at, n: 0 }));
    d.n++;
    return d.n <= AUDITED_DENIALS_PER_MINUTE ? 'audit' : d.n === AUDITED_DENIALS_PER_MINUTE + 1 ? 'last' : 'log';
  }

  /** Forgets the minutes that are over. */
  prune(at: number): void {
    for (const [login, d] of this.seen) if (at - d.since >= 60_000) this.seen.delete(login);
  }
}

const SESSION = 'mw_session';
/** The login form's own CSRF token (double-submit: cookie and field must match), before there is a session. */
const LOGIN_TOKEN = 'mw_login';

function sameToken(a: string | undefined | null, b: string): boolean {
  if (typeof a !== 'string' || a.length !== b.length) return false;
  return timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

function token(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * The customers' control panel: log in with a tenant's FTP account (under
 * FTP's lockout), then see its overview and change its password and
 * forwards. Sessions and the audit log are in state; every write goes
 * through core/tenantfile.ts, as the CLI's do, then the suite reloads.
 */
export function createPanel({ registry, state, log: rootLog, reload, lists, webRoot, queue, now = Date.now }: PanelDeps): { service: Service; pages: PanelPages } {
  const log = rootLog.child({ svc: 'panel' });
  let current = registry;
  const idleMs = () => (current.config.main.panel?.idleMinutes ?? 30) * 60_000;
  const lockout = () => current.config.main.ftp?.lockout ?? LOCKOUT_DEFAULTS;
  /** The password hash of operator `name` (`panel.admins`); a name with "@" is an FTP login, never an operator. */
  const adminHash = (name: string): string | undefined => {
    const admins = current.config.main.panel?.admins ?? {};
    return !name.includes('@') && Object.hasOwn(admins, name) ? admins[name] : undefined;
  };
  /** Where a session starts: the operator's tenants, or the customer's own overview. */
  const home = (s: PanelSession) => (s.role === 'operator' ? '/admin/' : `/t/${encodeURIComponent(s.tenant)}/`);

  function sessionOf(r: PanelRequest): { id: string; s: PanelSession } | undefined {
    const id = readCookie(r.req, cookieName(SESSION, r.secure));
    if (!id || !/^[A-Za-z0-9_-]{43}$/.test(id)) return undefined;
    const s = state.panel.session(id, idleMs(), SESSION_MAX_AGE_MS, now());
    if (!s) return undefined;
    // The account must still be what it was at login: there, with the same password, its tenant not suspended.
    let why: string | undefined;
    if (s.role === 'operator') {
      const hash = adminHash(s.login);
      why = !hash ? 'account removed' : keyTag(hash) !== s.keyTag ? 'password changed' : undefined;
    } else {
      const account = current.ftpAccount(s.login);
      why = !account ? 'account removed' : keyTag(account.hash) !== s.keyTag ? 'password changed' : account.tenant.suspended ? 'tenant suspended' : undefined;
    }
    if (why) {
      state.panel.endSession(id);
      log.info({ user: s.login, tenant: s.tenant, remote: r.remote, why }, 'panel session ended');
      return undefined;
    }
    return { id, s };
  }

  function showLogin(r: PanelRequest, status: number, o: { user?: string; error?: string } = {}): HttpOutcome {
    const t = token();
    return sendHtml(r.req, r.res, status, loginPage({ csrf: t, ...o }), { 'Set-Cookie': setCookie(cookieName(LOGIN_TOKEN, r.secure), t, r.secure) });
  }

  async function login(r: PanelRequest): Promise<HttpOutcome> {
    const form = await readForm(r.req);
    if (!form) return sendHtml(r.req, r.res, 400, messagePage('Bad request', 'The form could not be read.'));
    const expected = readCookie(r.req, cookieName(LOGIN_TOKEN, r.secure));
    if (!expected || !sameToken(form.get('csrf'), expected)) {
      log.info({ remote: r.remote, why: 'login form without its token' }, 'panel login refused');
      return showLogin(r, 403, { error: 'The login form had expired; please log in again.' });
    }
    // Bounded: the name becomes a key of the lockout table (no login is this long).
    const user = (form.get('user') ?? '').trim().toLowerCase().slice(0, 320);
    const password = form.get('password') ?? '';
    // A name without "@" is an operator's (panel.admins), under the same lockout as every login.
    const operator = !user.includes('@');
    const hashOf = () => (operator ? adminHash(user) : current.ftpAccount(user)?.hash);
    let hash = hashOf();
    const result = await throttledLogin(state.ftpLogins, lockout(), user, r.remote, async () => {
      hash = hashOf();
      // An unknown user costs the same scrypt work as a known one.
      return (await verifyPassword(password, hash ?? DUMMY_HASH)) && hash !== undefined;
    });
    if (!result.ok) {
      if (result.lockedMs !== undefined) {
        log.warn({ user, ...clientFields(r.remote), why: 'locked', key: result.key }, 'panel login refused: too many failures');
        return showLogin(r, replyCode('LOCKED_OUT', 'http'), { user, error: `Too many failed logins; try again in ${Math.ceil(result.lockedMs / 60_000)} minutes.` });
      }
      log.info({ user, ...clientFields(r.remote), why: !hash ? 'no such user' : 'wrong password', locked: result.locked }, 'panel login failed');
      return showLogin(r, 401, { user, error: 'Wrong user or password.' });
    }
    const clearLoginToken = setCookie(cookieName(LOGIN_TOKEN, r.secure), '', r.secure, 0);
    if (operator) {
      const id = token();
      state.panel.createSession(id, { login: user, tenant: '', role: 'operator', csrf: token(), keyTag: keyTag(hash!), remote: r.remote, created: now() });
      state.panel.audit({ at: now(), login: operatorLogin(user), tenant: '', action: 'login', detail: '', remote: r.remote });
      log.info({ user, role: 'operator', remote: r.remote }, 'panel login');
      return redirect(r.res, '/admin/', { 'Set-Cookie': [setCookie(cookieName(SESSION, r.secure), id, r.secure), clearLoginToken] });
    }
    const account = current.ftpAccount(user)!;
    const tenant = account.tenant;
    if (tenant.suspended) {
      log.info({ user, tenant: tenant.id, remote: r.remote, why: 'tenant suspended' }, 'panel login refused');
      return showLogin(r, 403, { user, error: 'This account is suspended; please contact your hosting provider.' });
    }
    const id = token();
    const t = now();
    state.panel.createSession(id, { login: account.login, tenant: tenant.id, csrf: token(), keyTag: keyTag(account.hash), remote: r.remote, created: t });
    state.panel.audit({ at: t, login: account.login, tenant: tenant.id, action: 'login', detail: '', remote: r.remote });
    log.info({ user: account.login, tenant: tenant.id, remote: r.remote }, 'panel login');
    return redirect(r.res, `/t/${encodeURIComponent(tenant.id)}/`, { 'Set-Cookie': [setCookie(cookieName(SESSION, r.secure), id, r.secure), clearLoginToken] });
  }

  const denials = new DenialBudget();

  /** Writes a `denied` entry, unless `login` had its share this minute; false when it was left to the log line. */
  function auditDenied(r: PanelRequest, login: string, tenant: string, detail: string): boolean {
    const at = now();
    const take = denials.take(login, at);
    if (take === 'log') return false;
    state.panel.audit({ at, login, tenant, action: 'denied', detail: take === 'last' ? `more than ${AUDITED_DENIALS_PER_MINUTE} refusals in a minute; the rest of this minute's are in the log only` : detail, remote: r.remote });
    return take === 'audit';
  }

  /** Refuses a request of session `s` with 403, in the log and the audit log. */
  function deny(r: PanelRequest, acting: Acting | undefined, tenant: string, why: string): HttpOutcome {
    const audited = auditDenied(r, acting?.login ?? '-', tenant, `${r.req.method} ${r.req.url ?? ''}: ${why}`);
    log.warn({ user: acting?.login, tenant: tenant.slice(0, 253), remote: r.remote, url: r.req.url?.slice(0, 500), why, ...(audited ? {} : { audited }) }, 'panel request refused');
    const text: Record<string, string> = {
      'another tenant': 'This page belongs to another customer.',
      'operator page': "This page is for the hosting provider's operators.",
      'operator acting': "An operator changes a customer's password with makewaves passwd, not here.",
    };
    return sendHtml(r.req, r.res, 403, messagePage('Forbidden', text[why] ?? 'The form had expired or did not come from this panel; please try again.', acting?.shell));
  }

  const customer = customerPages({
    registry: () => current,
    state,
    log,
    reload,
    lists,
    webRoot,
    sameToken,
    denied: (r, login, tenant, detail) => void auditDenied(r, login, tenant, detail),
    now,
  });
  const operatorView = operatorPages({ registry: () => current, state, log, reload, queue, now });

  /** Who acts in a session: the customer, or an operator on tenant `tenant` (its audit lines say so). */
  function actingOf(s: PanelSession, tenant: string): Acting {
    if (s.role !== 'operator') return customer.acting(s);
    const login = operatorLogin(s.login);
    return { login, tenant, shell: { tenant, login, csrf: s.csrf, operator: true } };
  }

  async function route(r: PanelRequest): Promise<HttpOutcome> {
    const { req } = r;
    const url = new URL(req.url ?? '/', 'http://panel.invalid');
    const method = req.method ?? 'GET';
    const get = method === 'GET' || method === 'HEAD';
    if (!get && method !== 'POST') return sendHtml(req, r.res, 405, messagePage('Method not allowed', 'The panel answers GET and POST only.'), { Allow: 'GET, HEAD, POST' });
    if (url.pathname.startsWith('/assets/')) {
      const sent = get ? sendAsset(req, r.res, url.pathname.slice('/assets/'.length)) : undefined;
      return sent ?? sendHtml(req, r.res, 404, messagePage('Not found', 'There is no such page in the panel.'));
    }
    const session = sessionOf(r);
    if (url.pathname === '/') return redirect(r.res, session ? home(session.s) : '/login');
    if (url.pathname === '/login') {
      if (get) return session ? redirect(r.res, home(session.s)) : showLogin(r, 200);
      return login(r);
    }
    if (url.pathname === '/logout' && !get) {
      const form = await readForm(req);
      if (session) {
        const a = actingOf(session.s, session.s.tenant);
        if (!sameToken(form?.get('csrf'), session.s.csrf)) return deny(r, a, session.s.tenant, 'no valid CSRF token');
        state.panel.endSession(session.id);
        state.panel.audit({ login: a.login, tenant: session.s.tenant, action: 'logout', detail: '', remote: r.remote });
      }
      return redirect(r.res, '/login', { 'Set-Cookie': setCookie(cookieName(SESSION, r.secure), '', r.secure, 0) });
    }
    const admin = /^\/admin(?:\/(.*))?$/.exec(url.pathname);
    const m = /^\/t\/([^/]+)\/(.*)$/.exec(url.pathname);
    if (!m && !admin) return sendHtml(req, r.res, 404, messagePage('Not found', 'There is no such page in the panel.'));
    if (!session) {
      if (readCookie(req, cookieName(SESSION, r.secure))) log.info({ remote: r.remote, url: req.url, why: 'unknown or expired session' }, 'panel request refused');
      if (get) return redirect(r.res, '/login', { 'Set-Cookie': setCookie(cookieName(SESSION, r.secure), '', r.secure, 0) });
      return sendHtml(req, r.res, 403, messagePage('Forbidden', 'Your session has ended; please log in again.'));
    }
    const operator = session.s.role === 'operator';
    if (admin) {
      if (!operator) return deny(r, customer.acting(session.s), session.s.tenant, 'operator page');
      const who = { login: session.s.login, csrf: session.s.csrf };
      let form: URLSearchParams | undefined;
      if (!get) {
        form = await readForm(req);
        if (!form) return sendHtml(req, r.res, 400, messagePage('Bad request', 'The form could not be read.'));
        if (!sameToken(form.get('csrf'), session.s.csrf)) return deny(r, actingOf(session.s, ''), '', 'no valid CSRF token');
      }
      return operatorView.handle(r, who, admin[1] ?? '', form, url.searchParams);
    }
    let tenantId: string;
    try {
      tenantId = decodeURIComponent(m![1]!);
    } catch {
      // A broken %-escape names no tenant.
      log.info({ user: session.s.login, remote: r.remote, url: req.url?.slice(0, 500), why: 'broken %-escape in the tenant' }, 'panel request refused');
      return sendHtml(req, r.res, 404, messagePage('Not found', 'There is no such page in the panel.'));
    }
    const acting = actingOf(session.s, tenantId);
    if (operator) {
      if (!current.tenants.has(tenantId)) return sendHtml(req, r.res, 404, messagePage('Not found', 'There is no such tenant.', acting.shell));
      if (m![2] === 'password') return deny(r, acting, tenantId, 'operator acting');
    } else if (tenantId !== session.s.tenant) return deny(r, acting, tenantId, 'another tenant');
    // The upload form is multipart: its token is checked as the body streams in, before the file is stored.
    if (!get && (m![2] === 'upload' || m![2] === 'upload/zip')) return customer.upload(r, acting, session.s.csrf, m![2]);
    let form: URLSearchParams | undefined;
    if (!get) {
      form = await readForm(req);
      if (!form) return sendHtml(req, r.res, 400, messagePage('Bad request', 'The form could not be read.', acting.shell));
      if (!sameToken(form.get('csrf'), session.s.csrf)) return deny(r, acting, tenantId, 'no valid CSRF token');
    }
    return customer.handle(r, acting, m![2]!, form, url.searchParams, session.id);
  }

  return {
    pages: {
      async handle(r) {
        // HTTPS only from here on for a year (RFC 6797); never sent over loopback plain HTTP, where it means nothing.
        if (r.secure) r.res.setHeader('Strict-Transport-Security', 'max-age=31536000');
        try {
          return await route(r);
        } catch (err) {
          const ref = errorRef();
          log.error({ ref, remote: r.remote, url: r.req.url, err: (err as Error).stack }, 'panel request failed');
          if (r.res.headersSent) {
            r.res.destroy();
            return { status: 500, bytes: 0 };
          }
          return sendHtml(r.req, r.res, 500, messagePage('Something went wrong', `The panel could not do that; the operator can find it under reference ${ref}.`));
        }
      },
    },
    service: {
      name: 'panel',
      start: async () => [],
      stop: async () => undefined,
      reload(next) {
        return () => void (current = next);
      },
      jobs(): Job[] {
        const run = () => void (state.panel.prune(idleMs(), SESSION_MAX_AGE_MS), denials.prune(now()));
        return [{ name: 'prune panel sessions', schedule: '*/10 * * * *', run }];
      },
    },
  };
}
