import type { HttpOutcome, PanelRequest } from '../core/contracts.ts';
import type { Logger } from '../core/log.ts';
import type { Registry, Tenant } from '../core/registry.ts';
import { editFormsRecipients, EditRefused } from '../core/tenantfile.ts';
import { describeOutcome, type FormSubmission, type State } from '../state/index.ts';
import { csrfField, esc, field, messagePage, page, type Shell } from './html.ts';
import { redirect, sendHtml } from './web.ts';

/*
 * A customer's forms: the recipients its form handlers may mail, changed
 * through core/tenantfile.ts as `makewaves forms recipients add|remove`
 * does, and the recent submissions with what became of their mail
 * (state.forms, as `makewaves forms <tenant>` shows them).
 */

type Who = NonNullable<Shell['who']>;

/** Submissions shown, newest first. */
const RECENT = 50;

export interface FormPagesDeps {
  registry: () => Registry;
  state: State;
  log: Logger;
  apply: (what: string) => void;
  audit: (r: PanelRequest, action: string, detail: string) => void;
  cannotWrite: (r: PanelRequest, err: unknown) => HttpOutcome;
}

function formsPage(who: Who, o: { recipients: readonly string[]; submissions: FormSubmission[]; done?: string; error?: string; value?: string }): string {
  const base = `/t/${encodeURIComponent(who.tenant)}/forms`;
  const recipients = o.recipients
    .map(
      (a) =>
        `<tr><td>${esc(a)}</td><td><form method="post" action="${base}/remove">${csrfField(who.csrf)}<input type="hidden" name="address" value="${esc(a)}">` +
        `<button type="submit" aria-label="Remove ${esc(a)}">Remove</button></form></td></tr>`,
    )
    .join('');
  const subs = o.submissions
    .map(
      (s) =>
        `<tr><td>${esc(s.at.slice(0, 19).replace('T', ' '))}</td><td>${esc(s.remote)}</td><td>/cgi-bin/${esc(s.handler)}</td><td>${s.recipients.map(esc).join('<br>')}</td>` +
        `<td><details><summary>${esc(s.subject)}</summary><pre>${esc(s.text.slice(0, 4000))}</pre></details></td><td class="outcome-${s.status}">${esc(describeOutcome(s))}</td></tr>`,
    )
    .join('');
  return page(
    { title: 'Forms', who, current: 'forms' },
    (o.done ? `<p class="done" role="status">${esc(o.done)}</p>` : '') +
      `<h2>Recipients</h2><p>The only addresses your form handlers may send mail to.</p>` +
      (o.recipients.length
        ? `<table id="recipients"><thead><tr><th scope="col">Address</th><th scope="col"></th></tr></thead><tbody>${recipients}</tbody></table>`
        : '<p id="recipients">None: form mail is refused.</p>') +
      `<form method="post" action="${base}">${csrfField(who.csrf)}` +
      field({ id: 'recipient', name: 'address', label: 'Recipient', value: o.value ?? '', error: o.error, autocomplete: 'email' }) +
      `<button type="submit">Add recipient</button></form>` +
      `<h2>Recent submissions</h2>` +
      (o.submissions.length
        ? `<table id="submissions"><thead><tr><th scope="col">When (UTC)</th><th scope="col">From</th><th scope="col">Handler</th><th scope="col">To</th><th scope="col">Subject</th><th scope="col">Delivery</th></tr></thead><tbody>${subs}</tbody></table>`
        : '<p id="submissions">No submissions yet.</p>'),
  );
}

const DONE: Record<string, string> = { added: 'The recipient was added.', removed: 'The recipient was removed.' };

export function formPages({ registry, state, log, apply, audit, cannotWrite }: FormPagesDeps) {
  const recipientsOf = (t: Tenant) => t.config.forms?.recipients ?? [];
  const recent = (t: Tenant) => state.forms.list(t.id, RECENT).reverse();

  return {
    /** Answers `forms` (GET: the page; POST: add) and `forms/remove` (POST). */
    handle(r: PanelRequest, a: Who, t: Tenant, rest: string, form: URLSearchParams | undefined, query: URLSearchParams): HttpOutcome {
      if (rest !== '' && rest !== '/remove') return sendHtml(r.req, r.res, 404, messagePage('Not found', 'There is no such page in the panel.', a));
      if (!form) {
        if (rest) return sendHtml(r.req, r.res, 405, messagePage('Method not allowed', 'This address takes a form only.', a), { Allow: 'POST' });
        const done = Object.hasOwn(DONE, query.get('done') ?? '') ? DONE[query.get('done')!] : undefined;
        return sendHtml(r.req, r.res, 200, formsPage(a, { recipients: recipientsOf(t), submissions: recent(t), done }));
      }
      const remove = rest === '/remove';
      const raw = form.get('address') ?? '';
      try {
        editFormsRecipients(registry().config.dir, t.id, remove ? 'remove' : 'add', raw.trim() ? [raw] : [], registry().config.main.panel?.limits);
      } catch (err) {
        if (!(err instanceof EditRefused)) return cannotWrite(r, err);
        log.info({ user: a.login, tenant: t.id, remote: r.remote, why: err.message }, 'panel forms change refused');
        return sendHtml(r.req, r.res, 400, formsPage(a, { recipients: recipientsOf(t), submissions: recent(t), error: err.message, value: raw }));
      }
      apply(remove ? 'forms-recipient-remove' : 'forms-recipient-add');
      audit(r, remove ? 'forms-recipient-remove' : 'forms-recipient-add', raw.trim().toLowerCase());
      return redirect(r.res, `/t/${encodeURIComponent(t.id)}/forms?done=${remove ? 'removed' : 'added'}`);
    },
  };
}
