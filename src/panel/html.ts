import { createHash } from 'node:crypto';
import { formatSize } from '../lib/sizes.ts';
import { PLOT_DAYS, TOP_DAYS, type Traffic } from './traffic.ts';

/*
 * The panel's pages: plain HTML forms that work without JavaScript, every
 * control with a visible <label>, every value from config, state or the
 * request escaped on the way out (esc). No page runs a script but the
 * traffic page's plots, from the panel's own files (TRAFFIC_CSP).
 */

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
/** Escapes text for HTML element content and quoted attribute values. */
export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESC[c]!);
}

const CSS =
  'body{font:16px/1.5 system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em;color:#222}' +
  'header{display:flex;flex-wrap:wrap;gap:1em;align-items:center;border-bottom:1px solid #ccc;padding-bottom:.5em;margin-bottom:1em}' +
  'header nav a{margin-right:1em}header form{margin-left:auto}' +
  'label{display:block;font-weight:600;margin-top:1em}input{font:inherit;padding:.3em;width:100%;max-width:28em;box-sizing:border-box}' +
  'button{font:inherit;margin-top:1em;padding:.3em 1em}.error{color:#a00;font-weight:600;margin:.2em 0}.done{color:#060;font-weight:600}' +
  'table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left;vertical-align:top}' +
  'td form button{margin:0}meter{width:100%;max-width:28em;height:1.5em}select{font:inherit;padding:.3em}' +
  'pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em;max-height:20em;overflow:auto}.held{border-top:1px solid #ccc;margin-top:1em}';

/** The Content-Security-Policy of every panel page: nothing runs, nothing loads, forms post only here, no framing. */
export const CSP = `default-src 'none'; style-src 'sha256-${createHash('sha256').update(CSS).digest('base64')}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`;

/** The traffic page's: the same, plus the panel's own scripts and style sheet (uPlot and the plots), from the panel alone. */
export const TRAFFIC_CSP = CSP.replace("style-src ", "script-src 'self'; style-src 'self' ");

export interface Shell {
  title: string;
  /** Set once logged in: the tenant id, the login shown, and the CSRF token for the log-out form; `operator` when an operator acts on the tenant. */
  who?: { tenant: string; login: string; csrf: string; operator?: boolean };
  /** A header of its own instead of the tenant's (the operator's pages). */
  header?: string;
  /** Which nav entry is current. */
  current?: 'overview' | 'traffic' | 'password' | 'forwards' | 'lists' | 'forms' | 'upload';
}

/** A whole page around `body` (already HTML). */
export function page(shell: Shell, body: string, head = ''): string {
  let header = shell.header ?? '';
  if (shell.who && shell.header === undefined) {
    const base = `/t/${encodeURIComponent(shell.who.tenant)}/`;
    const link = (key: Shell['current'], href: string, text: string) => `<a href="${esc(href)}"${shell.current === key ? ' aria-current="page"' : ''}>${text}</a>`;
    header =
      `<header><nav aria-label="Panel">${shell.who.operator ? '<a href="/admin/">All tenants</a>' : ''}${link('overview', base, 'Overview')}${link('traffic', `${base}traffic`, 'Traffic')}${shell.who.operator ? '' : link('password', `${base}password`, 'Password')}${link('forwards', `${base}forwards`, 'Forwards')}${link('lists', `${base}lists`, 'Lists')}${link('forms', `${base}forms`, 'Forms')}${link('upload', `${base}upload`, 'Upload')}</nav>` +
      `<span>Logged in as ${esc(shell.who.login)}</span>` +
      `<form method="post" action="/logout">${csrfField(shell.who.csrf)}<button type="submit">Log out</button></form></header>`;
  }
  return (
    `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">` +
    `<title>${esc(shell.title)} · makewaves panel</title><style>${CSS}</style>${head}</head>` +
    `<body>${header}<main><h1>${esc(shell.title)}</h1>${body}</main></body></html>\n`
  );
}

/** The path of a tenant's pages, for links and form actions (absolute: a page re-shown after a POST has another URL). */
function base(who: NonNullable<Shell['who']>): string {
  return `/t/${encodeURIComponent(who.tenant)}/`;
}

export function csrfField(token: string): string {
  return `<input type="hidden" name="csrf" value="${esc(token)}">`;
}

/** A labelled input with its error (if any) right below it, tied to it for screen readers. */
export function field(o: { id: string; name: string; label: string; type?: string; value?: string; error?: string; autocomplete?: string; required?: boolean }): string {
  const err = o.error ? `<p class="error" id="${o.id}-error">${esc(o.error)}</p>` : '';
  return (
    `<label for="${o.id}">${esc(o.label)}</label>` +
    `<input id="${o.id}" name="${o.name}" type="${o.type ?? 'text'}"${o.value !== undefined ? ` value="${esc(o.value)}"` : ''}` +
    `${o.autocomplete ? ` autocomplete="${o.autocomplete}"` : ''}${o.required === false ? '' : ' required'}` +
    `${o.error ? ` aria-invalid="true" aria-describedby="${o.id}-error"` : ''}>${err}`
  );
}

export function loginPage(o: { csrf: string; user?: string; error?: string }): string {
  return page(
    { title: 'Log in' },
    `<p>Log in with one of your FTP accounts (user@your-site); operators with their operator name.</p>` +
      `<form method="post" action="/login">${csrfField(o.csrf)}` +
      field({ id: 'user', name: 'user', label: 'User', value: o.user ?? '', autocomplete: 'username' }) +
      field({ id: 'password', name: 'password', label: 'Password', type: 'password', autocomplete: 'current-password', error: o.error }) +
      `<button type="submit">Log in</button></form>`,
  );
}

export interface Overview {
  domains: readonly string[];
  bytes: number;
  files: number;
  quota: number | undefined;
  ftpUsers: readonly string[];
  forwards: number;
  suspended: boolean;
}

export function overviewPage(who: NonNullable<Shell['who']>, o: Overview): string {
  const used = formatSize(o.bytes);
  const disk =
    o.quota === undefined
      ? `<p id="disk">${esc(used)} used (no quota)</p>`
      : `<label for="disk-meter">Disk use</label><meter id="disk-meter" min="0" max="${o.quota}" value="${Math.min(o.bytes, o.quota)}" high="${Math.floor(o.quota * 0.9)}"></meter>` +
        `<p id="disk">${esc(used)} of ${esc(formatSize(o.quota))} (${o.quota > 0 ? Math.round((o.bytes / o.quota) * 100) : 100}%)</p>`;
  return page(
    { title: 'Overview', who, current: 'overview' },
    `<h2>Web space</h2>${disk}<p id="files">${o.files} file${o.files === 1 ? '' : 's'}</p>` +
      `<h2>Domains</h2><ul>${o.domains.map((d) => `<li>${esc(d)}</li>`).join('')}</ul>` +
      `<h2>FTP accounts</h2><ul>${o.ftpUsers.map((u) => `<li>${esc(u)}</li>`).join('')}</ul>` +
      `<p>${o.forwards} mail forward${o.forwards === 1 ? '' : 's'}: <a href="${base(who)}forwards">manage forwards</a></p>`,
  );
}

export function passwordPage(who: NonNullable<Shell['who']>, o: { errors?: { current?: string; new?: string }; done?: boolean }): string {
  return page(
    { title: 'Password', who, current: 'password' },
    (o.done ? `<p class="done" role="status">Your password has been changed. Use the new one for FTP and SFTP from now on.</p>` : '') +
      `<p>The password of ${esc(who.login)}, for FTP, SFTP and this panel.</p>` +
      `<form method="post" action="${base(who)}password">${csrfField(who.csrf)}` +
      field({ id: 'current', name: 'current', label: 'Current password', type: 'password', autocomplete: 'current-password', error: o.errors?.current }) +
      field({ id: 'new', name: 'new', label: 'New password', type: 'password', autocomplete: 'new-password', error: o.errors?.new }) +
      `<button type="submit">Change password</button></form>`,
  );
}

export function forwardsPage(
  who: NonNullable<Shell['who']>,
  o: {
    domain: string;
    forwards: ReadonlyArray<[string, readonly string[]]>;
    catchAll: string | undefined;
    errors?: { address?: string; targets?: string; catchAll?: string };
    values?: { address?: string; targets?: string; catchAll?: string };
    done?: string;
  },
): string {
  const rows = o.forwards
    .map(([local, targets]) => {
      const address = `${local}@${o.domain}`;
      return (
        `<tr><td>${esc(address)}</td><td>${targets.map(esc).join('<br>')}</td>` +
        `<td><form method="post" action="${base(who)}forwards/remove">${csrfField(who.csrf)}<input type="hidden" name="address" value="${esc(address)}">` +
        `<button type="submit" aria-label="Remove ${esc(address)}">Remove</button></form></td></tr>`
      );
    })
    .join('');
  const table = o.forwards.length
    ? `<table><caption>Forwards</caption><thead><tr><th scope="col">Address</th><th scope="col">Forwarded to</th><th scope="col"></th></tr></thead><tbody>${rows}</tbody></table>`
    : '<p>No forwards yet.</p>';
  return page(
    { title: 'Forwards', who, current: 'forwards' },
    (o.done ? `<p class="done" role="status">${esc(o.done)}</p>` : '') +
      table +
      `<h2>Add a forward</h2><form method="post" action="${base(who)}forwards">${csrfField(who.csrf)}` +
      field({ id: 'address', name: 'address', label: 'Address', value: o.values?.address ?? '', error: o.errors?.address }) +
      `<p>A name (info) or a whole address of your domain (info@${esc(o.domain)}).</p>` +
      field({ id: 'targets', name: 'targets', label: 'Forward to', value: o.values?.targets ?? '', error: o.errors?.targets, autocomplete: 'email' }) +
      `<p>One or more mailboxes, separated by commas.</p>` +
      `<button type="submit">Add forward</button></form>` +
      `<h2>Catch-all</h2><p id="catchall-now">${o.catchAll ? `Mail for any other address @${esc(o.domain)} goes to ${esc(o.catchAll)}.` : `Mail for any other address @${esc(o.domain)} is refused.`}</p>` +
      `<form method="post" action="${base(who)}catchall">${csrfField(who.csrf)}` +
      field({ id: 'catchall', name: 'catchAll', label: 'Catch-all to', value: o.values?.catchAll ?? o.catchAll ?? '', error: o.errors?.catchAll, autocomplete: 'email' }) +
      `<button type="submit">Set catch-all</button></form>` +
      (o.catchAll ? `<form method="post" action="${base(who)}catchall/remove">${csrfField(who.csrf)}<button type="submit">Remove catch-all</button></form>` : ''),
  );
}

const int = (n: number) => n.toLocaleString('en-US');

function topTable(id: string, caption: string, what: string, rows: ReadonlyArray<[string, number]>): string {
  if (rows.length === 0) return `<h2>${esc(caption)}</h2><p id="${id}">None in the last ${TOP_DAYS} days.</p>`;
  return (
    `<h2>${esc(caption)}</h2><table id="${id}"><thead><tr><th scope="col">${esc(what)}</th><th scope="col">Requests</th></tr></thead><tbody>` +
    rows.map(([k, n]) => `<tr><td>${esc(k)}</td><td>${int(n)}</td></tr>`).join('') +
    `</tbody></table>`
  );
}

/**
 * Traffic: the numbers of the last {@link PLOT_DAYS} days as a table (what
 * a browser without scripts shows, and what the plots are drawn from) and,
 * with scripts, as uPlot charts; then the top tables of the last week.
 */
export function trafficPage(who: NonNullable<Shell['who']>, t: Traffic, mail = ''): string {
  const rows = [...t.days]
    .reverse()
    .map(
      (d) =>
        `<tr data-day="${d.day}"><th scope="row">${d.day}</th><td data-k="requests" data-v="${d.requests}">${int(d.requests)}</td>` +
        `<td data-k="bytes" data-v="${d.bytes}">${esc(formatSize(d.bytes))}</td><td data-k="c4xx" data-v="${d.c4xx}">${int(d.c4xx)}</td><td data-k="c5xx" data-v="${d.c5xx}">${int(d.c5xx)}</td></tr>`,
    )
    .join('');
  const total = t.days.reduce((a, d) => ({ requests: a.requests + d.requests, bytes: a.bytes + d.bytes }), { requests: 0, bytes: 0 });
  return page(
    { title: 'Traffic', who, current: 'traffic' },
    `<p id="traffic-total">${int(total.requests)} requests, ${esc(formatSize(total.bytes))} sent in the last ${PLOT_DAYS} days.</p>` +
      `<div id="traffic-plots" hidden><div id="plot-requests"></div><div id="plot-bytes"></div><div id="plot-errors"></div></div>` +
      `<table id="traffic-table"><caption>Per day (UTC), newest first</caption><thead><tr><th scope="col">Day</th><th scope="col">Requests</th><th scope="col">Bytes</th><th scope="col">4xx</th><th scope="col">5xx</th></tr></thead><tbody>${rows}</tbody></table>` +
      topTable('top-pages', 'Top pages', 'Page', t.pages) +
      topTable('top-referrers', 'Top referrers', 'Referrer', t.referrers) +
      topTable('top-404', 'Not found (404)', 'Page', t.notFound) +
      mail +
      `<script src="/assets/uplot.min.js"></script><script src="/assets/traffic.js"></script>`,
    `<link rel="stylesheet" href="/assets/uplot.min.css">`,
  );
}

/** A page for a refusal (403, 404, 405...), with a way back. */
export function messagePage(title: string, text: string, who?: Shell['who']): string {
  return page({ title, who }, `<p>${esc(text)}</p><p><a href="/">Back to the panel</a></p>`);
}
