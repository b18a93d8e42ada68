import type { HttpOutcome, ListModeration, PanelRequest } from '../core/contracts.ts';
import { memberAddress } from '../core/listaddr.ts';
import type { Logger } from '../core/log.ts';
import type { Registry, Tenant } from '../core/registry.ts';
import { EditRefused, setListPolicy } from '../core/tenantfile.ts';
import type { ListMember, State } from '../state/index.ts';
import { csrfField, esc, field, messagePage, page, type Shell } from './html.ts';
import { redirect, sendHtml } from './web.ts';

/*
 * A customer's mailing lists: members (add, remove, CSV), held posts
 * (preview, approve, reject) and the posting policy. Members are the rows
 * `makewaves list add --no-confirm` / `list remove` write (state.lists),
 * decisions go through the lists service's own confirmation (as the owner's
 * reply does), the policy through core/tenantfile.ts as `list set` does.
 */

type Who = NonNullable<Shell['who']>;

export interface ListPagesDeps {
  registry: () => Registry;
  state: State;
  log: Logger;
  lists: ListModeration | undefined;
  apply: (what: string) => void;
  audit: (r: PanelRequest, action: string, detail: string) => void;
  cannotWrite: (r: PanelRequest, err: unknown) => HttpOutcome;
  now: () => number;
}

const POSTING: Record<string, string> = {
  open: 'anyone',
  members: 'members only (others held or refused)',
  moderated: 'every post held for you',
};

/** One CSV cell (RFC 4180), with a leading = + - @ made inert for spreadsheets. */
function csvCell(v: string): string {
  const safe = /^[=+\-@\t\r]/.test(v) ? `'${v}` : v;
  return /[",\r\n]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}

function listsIndex(who: Who, t: Tenant, counts: (name: string) => { members: number; held: number }): string {
  const lists = Object.entries(t.config.mail?.lists ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const base = `/t/${encodeURIComponent(who.tenant)}/lists/`;
  const rows = lists
    .map(([name, cfg]) => {
      const n = counts(name);
      return `<tr><td><a href="${esc(base + encodeURIComponent(name))}">${esc(`${name}@${t.domains[0]}`)}</a></td><td>${esc(cfg.posting)}</td><td>${n.members}</td><td>${n.held}</td></tr>`;
    })
    .join('');
  return page(
    { title: 'Mailing lists', who, current: 'lists' },
    lists.length
      ? `<table><thead><tr><th scope="col">List</th><th scope="col">Posting</th><th scope="col">Members</th><th scope="col">Held posts</th></tr></thead><tbody>${rows}</tbody></table>`
      : '<p>You have no mailing lists; your hosting provider can create one.</p>',
  );
}

interface ListView {
  name: string;
  address: string;
  posting: string;
  members: ListMember[];
  held: Array<{ id: number; poster: string; subject: string; reason: string; createdAt: number; text: string | undefined }>;
  done?: string;
  errors?: { member?: string; posting?: string };
  values?: { member?: string };
}

function listPage(who: Who, v: ListView): string {
  const base = `/t/${encodeURIComponent(who.tenant)}/lists/${encodeURIComponent(v.name)}`;
  const members = v.members
    .map(
      (m) =>
        `<tr><td>${esc(m.address)}</td><td>${esc(m.mode)}</td><td>${m.disabled ? 'disabled (bounces)' : 'enabled'}</td><td>${new Date(m.joinedAt).toISOString().slice(0, 10)}</td>` +
        `<td><form method="post" action="${base}/members/remove">${csrfField(who.csrf)}<input type="hidden" name="address" value="${esc(m.address)}">` +
        `<button type="submit" aria-label="Remove ${esc(m.address)}">Remove</button></form></td></tr>`,
    )
    .join('');
  const held = v.held
    .map(
      (h) =>
        `<article class="held" id="held-${h.id}"><h3>#${h.id}: ${esc(h.subject)}</h3><p>From ${esc(h.poster)}, ${new Date(h.createdAt).toISOString().slice(0, 16).replace('T', ' ')} UTC (${esc(h.reason)})</p>` +
        `<pre>${esc((h.text ?? '').slice(0, 4000))}</pre>` +
        `<form method="post" action="${base}/held">${csrfField(who.csrf)}<input type="hidden" name="id" value="${h.id}">` +
        `<button type="submit" name="action" value="approve" aria-label="Approve #${h.id}">Approve</button> <button type="submit" name="action" value="reject" aria-label="Reject #${h.id}">Reject</button></form></article>`,
    )
    .join('');
  const options = Object.entries(POSTING)
    .map(([k, text]) => `<option value="${k}"${k === v.posting ? ' selected' : ''}>${esc(`${k}: ${text}`)}</option>`)
    .join('');
  return page(
    { title: v.address, who, current: 'lists' },
    (v.done ? `<p class="done" role="status">${esc(v.done)}</p>` : '') +
      `<h2>Members</h2>` +
      (v.members.length
        ? `<table id="members"><thead><tr><th scope="col">Address</th><th scope="col">Mode</th><th scope="col">State</th><th scope="col">Since</th><th scope="col"></th></tr></thead><tbody>${members}</tbody></table>`
        : '<p id="members">No members yet.</p>') +
      `<p><a href="${base}/members.csv">Export members (CSV)</a></p>` +
      `<form method="post" action="${base}/members">${csrfField(who.csrf)}` +
      field({ id: 'member', name: 'address', label: 'Member address', value: v.values?.member ?? '', error: v.errors?.member, autocomplete: 'email' }) +
      `<p>Added at once, without a confirmation message: add only people who asked to join.</p><button type="submit">Add member</button></form>` +
      `<h2>Held posts</h2>${held || '<p id="held">No posts are waiting.</p>'}` +
      `<h2>Posting policy</h2><form method="post" action="${base}/policy">${csrfField(who.csrf)}` +
      `<label for="posting">Who may post</label><select id="posting" name="posting"${v.errors?.posting ? ' aria-invalid="true" aria-describedby="posting-error"' : ''}>${options}</select>` +
      (v.errors?.posting ? `<p class="error" id="posting-error">${esc(v.errors.posting)}</p>` : '') +
      `<button type="submit">Save policy</button></form>`,
  );
}

const DONE: Record<string, string> = {
  added: 'The member was added.',
  removed: 'The member was removed.',
  approved: 'The post was approved and goes out to the list.',
  rejected: 'The post was rejected; the poster is told.',
  policy: 'The posting policy was saved.',
};

export function listPages({ registry, state, log, lists, apply, audit, cannotWrite, now }: ListPagesDeps) {
  function view(t: Tenant, name: string, extra: Partial<ListView> = {}): ListView {
    const cfg = registry().listConfig(t, name)!;
    return {
      name,
      address: `${name}@${t.domains[0]}`,
      posting: cfg.posting,
      members: state.lists.members(t.id, name),
      held: state.lists.heldOf(t.id, name).map((h) => ({ ...h, text: lists?.preview(t.id, name, h.id)?.text })),
      ...extra,
    };
  }

  function csv(r: PanelRequest, t: Tenant, name: string): HttpOutcome {
    const lines = ['address,mode,state,bounce_score,joined'];
    for (const m of state.lists.members(t.id, name)) lines.push([m.address, m.mode, m.disabled ? 'disabled' : 'enabled', String(m.bounceScore), new Date(m.joinedAt).toISOString()].map(csvCell).join(','));
    const body = Buffer.from(`${lines.join('\r\n')}\r\n`);
    r.res.writeHead(200, {
      'Content-Type': 'text/csv; charset=utf-8',
      'Content-Length': body.length,
      'Content-Disposition': `attachment; filename="${name}-members.csv"`,
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
    });
    r.res.end(r.req.method === 'HEAD' ? undefined : body);
    return { status: 200, bytes: body.length };
  }

  async function post(r: PanelRequest, a: Who, t: Tenant, name: string, what: string, form: URLSearchParams): Promise<HttpOutcome> {
    const back = (done: string) => redirect(r.res, `/t/${encodeURIComponent(t.id)}/lists/${encodeURIComponent(name)}?done=${done}`);
    const refuse = (status: number, errors: ListView['errors'], values?: ListView['values']) => sendHtml(r.req, r.res, status, listPage(a, view(t, name, { errors, values })));
    const address = `${name}@${t.domains[0]}`;
    switch (what) {
      case 'members':
      case 'members/remove': {
        const raw = form.get('address') ?? '';
        let member: string;
        try {
          member = memberAddress(raw);
        } catch (err) {
          log.info({ user: a.login, tenant: t.id, list: name, remote: r.remote, why: (err as Error).message }, 'panel list change refused');
          return refuse(400, { member: (err as Error).message }, { member: raw });
        }
        if (what === 'members') {
          // Added without a confirmation: bounded, or a script could fill the state database and make the list a mailer to anyone.
          const max = registry().config.main.panel?.limits.listMembers;
          const n = state.lists.members(t.id, name).length;
          if (max !== undefined && n >= max && !state.lists.member(t.id, name, member)) {
            const why = `${address}: ${n + 1} members, more than the ${max} the panel may add up to (panel.limits.listMembers); nothing changed`;
            log.info({ user: a.login, tenant: t.id, list: name, remote: r.remote, why }, 'panel list change refused');
            return refuse(400, { member: why }, { member: raw });
          }
          state.lists.addMember(t.id, name, member, 'single', now());
          audit(r, 'member-add', `${member} to ${address}`);
          return back('added');
        }
        if (!state.lists.removeMember(t.id, name, member)) return refuse(400, { member: `${member} is not a member of ${address}` });
        audit(r, 'member-remove', `${member} from ${address}`);
        return back('removed');
      }
      case 'held': {
        const action = form.get('action');
        const id = Number(form.get('id'));
        if ((action !== 'approve' && action !== 'reject') || !Number.isSafeInteger(id)) return sendHtml(r.req, r.res, 400, messagePage('Bad request', 'Choose Approve or Reject for a held post.', a));
        const done = lists ? await lists.moderate(t.id, name, id, action === 'approve', `panel ${a.login} ${r.remote}`) : undefined;
        if (!done) {
          log.info({ user: a.login, tenant: t.id, list: name, held: id, remote: r.remote, why: 'no such held post' }, 'panel list change refused');
          return sendHtml(r.req, r.res, 404, messagePage('Not found', `There is no held post #${id} on ${address}; it may have been decided already.`, a));
        }
        audit(r, `held-${action}`, `#${id} on ${address}`);
        return back(done);
      }
      case 'policy': {
        const posting = form.get('posting') ?? '';
        try {
          setListPolicy(registry().config.dir, t.id, name, { posting });
        } catch (err) {
          if (!(err instanceof EditRefused)) return cannotWrite(r, err);
          log.info({ user: a.login, tenant: t.id, list: name, remote: r.remote, why: err.message }, 'panel list change refused');
          return refuse(400, { posting: err.message });
        }
        apply('list-policy');
        audit(r, 'list-policy', `${address}: posting ${posting}`);
        return back('policy');
      }
      default:
        return sendHtml(r.req, r.res, 404, messagePage('Not found', 'There is no such page in the panel.', a));
    }
  }

  return {
    /** Answers `lists`, `lists/<name>`, `lists/<name>/<what>` (rest is the part after `lists`). */
    async handle(r: PanelRequest, a: Who, t: Tenant, rest: string, form: URLSearchParams | undefined, query: URLSearchParams): Promise<HttpOutcome> {
      if (rest === '' || rest === '/') {
        if (form) return sendHtml(r.req, r.res, 405, messagePage('Method not allowed', 'This page is not a form.', a), { Allow: 'GET, HEAD' });
        return sendHtml(r.req, r.res, 200, listsIndex(a, t, (n) => ({ members: state.lists.members(t.id, n).length, held: state.lists.heldOf(t.id, n).length })));
      }
      const m = /^\/([^/]+)(?:\/(.+))?$/.exec(rest);
      let name = '';
      try {
        name = m ? decodeURIComponent(m[1]!) : '';
      } catch {
        // A broken %-escape names no list: the 404 below.
      }
      if (!m || !name || !registry().listConfig(t, name)) return sendHtml(r.req, r.res, 404, messagePage('Not found', 'You have no mailing list of that name.', a));
      const what = m[2] ?? '';
      if (form) return post(r, a, t, name, what, form);
      if (what === 'members.csv') return csv(r, t, name);
      if (what !== '') return sendHtml(r.req, r.res, 405, messagePage('Method not allowed', 'This address takes a form only.', a), { Allow: 'POST' });
      const done = Object.hasOwn(DONE, query.get('done') ?? '') ? DONE[query.get('done')!] : undefined;
      return sendHtml(r.req, r.res, 200, listPage(a, view(t, name, { done })));
    },
  };
}
