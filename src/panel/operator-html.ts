import type { CertRow } from '../core/certview.ts';
import { formatSize } from '../lib/sizes.ts';
import type { AuditEntry } from '../state/index.ts';
import { queueAge, type QueueOverview } from '../state/queueview.ts';
import { csrfField, esc, field, page } from './html.ts';

/*
 * The operator's pages: every tenant, the certificates, the mail queue and
 * the audit log, and the forms that add, suspend, resume and remove a
 * tenant. Plain HTML forms, every control labelled, every value escaped.
 */

/** Who is logged in as operator: the name shown and the session's CSRF token. */
export interface OperatorWho {
  login: string;
  csrf: string;
}

type Section = 'tenants' | 'certs' | 'queue' | 'audit';

function header(who: OperatorWho, current: Section | undefined): string {
  const link = (key: Section, href: string, text: string) => `<a href="${href}"${current === key ? ' aria-current="page"' : ''}>${text}</a>`;
  return (
    `<header><nav aria-label="Operator">${link('tenants', '/admin/', 'Tenants')}${link('certs', '/admin/certs', 'Certificates')}${link('queue', '/admin/queue', 'Mail queue')}${link('audit', '/admin/audit', 'Audit log')}</nav>` +
    `<span>Logged in as ${esc(who.login)} (operator)</span>` +
    `<form method="post" action="/logout">${csrfField(who.csrf)}<button type="submit">Log out</button></form></header>`
  );
}

function opPage(who: OperatorWho, title: string, current: Section | undefined, body: string): string {
  return page({ title, header: header(who, current) }, body);
}

/** One row of the tenants overview. */
export interface TenantRow {
  id: string;
  domains: readonly string[];
  bytes: number;
  quota: number | undefined;
  /** Undefined when not suspended; the reason (perhaps '') when it is. */
  suspended: { reason: string; since: string } | undefined;
  /** A short word on its certificates: "acme until 2027-03-01", "none", ... */
  certs: string;
  /** Requests counted today (UTC), as written so far. */
  today: number;
}

export interface AddForm {
  errors?: { id?: string; domains?: string; quota?: string };
  values?: { id?: string; domains?: string; quota?: string };
}

function disk(t: TenantRow): string {
  if (t.quota === undefined) return `${esc(formatSize(t.bytes))} (no quota)`;
  const pct = t.quota > 0 ? Math.round((t.bytes / t.quota) * 100) : 100;
  return `<meter min="0" max="${t.quota}" value="${Math.min(t.bytes, t.quota)}" high="${Math.floor(t.quota * 0.9)}" aria-label="Disk use of ${esc(t.id)}"></meter> ${esc(formatSize(t.bytes))} of ${esc(formatSize(t.quota))} (${pct}%)`;
}

export function tenantsPage(who: OperatorWho, o: { tenants: TenantRow[]; add?: AddForm; done?: string; error?: string }): string {
  const rows = o.tenants
    .map((t) => {
      const id = encodeURIComponent(t.id);
      const action = t.suspended ? 'resume' : 'suspend';
      const state = t.suspended ? `suspended${t.suspended.since ? ` since ${esc(t.suspended.since)}` : ''}${t.suspended.reason ? `: ${esc(t.suspended.reason)}` : ''}` : 'active';
      return (
        `<tr data-tenant="${esc(t.id)}"><th scope="row"><a href="/t/${id}/">${esc(t.id)}</a></th><td>${t.domains.map(esc).join('<br>')}</td><td>${disk(t)}</td>` +
        `<td class="state">${state}</td><td>${esc(t.certs)}</td><td>${t.today.toLocaleString('en-US')}</td>` +
        `<td><form method="post" action="/admin/tenants/${id}/${action}">${csrfField(who.csrf)}` +
        `<button type="submit" aria-label="${t.suspended ? 'Resume' : 'Suspend'} ${esc(t.id)}">${t.suspended ? 'Resume' : 'Suspend'}</button></form>` +
        ` <a href="/admin/tenants/${id}/remove" aria-label="Remove ${esc(t.id)}">Remove…</a></td></tr>`
      );
    })
    .join('');
  const add = o.add ?? {};
  return opPage(
    who,
    'Tenants',
    'tenants',
    (o.done ? `<p class="done" role="status">${esc(o.done)}</p>` : '') +
      (o.error ? `<p class="error" role="alert">${esc(o.error)}</p>` : '') +
      (o.tenants.length
        ? `<table id="tenants"><thead><tr><th scope="col">Tenant</th><th scope="col">Domains</th><th scope="col">Disk</th><th scope="col">State</th><th scope="col">Certificates</th><th scope="col">Requests today</th><th scope="col"></th></tr></thead><tbody>${rows}</tbody></table>`
        : '<p id="tenants">No tenants yet.</p>') +
      `<p>Suspending a tenant makes its sites answer 503, refuses its FTP and panel logins and holds its mail (450), as <code>makewaves tenant suspend</code> does.</p>` +
      `<h2>Add a tenant</h2><form method="post" action="/admin/tenants">${csrfField(who.csrf)}` +
      field({ id: 'tenant-id', name: 'id', label: 'Tenant id', value: add.values?.id ?? '', error: add.errors?.id }) +
      `<p>Lower-case letters, digits, "-" and "."; a domain name is a good id.</p>` +
      field({ id: 'tenant-domains', name: 'domains', label: 'Domains', value: add.values?.domains ?? '', error: add.errors?.domains }) +
      `<p>One or more, separated by commas or spaces.</p>` +
      field({ id: 'tenant-quota', name: 'quota', label: 'Quota', value: add.values?.quota ?? '', error: add.errors?.quota, required: false }) +
      `<p>Disk space of its web root (512KiB, 10MB, ...); empty for none.</p>` +
      `<button type="submit">Add tenant</button></form>`,
  );
}

/** The confirmation step of a removal: the tenant's id typed again. */
export function removePage(who: OperatorWho, o: { id: string; domains: readonly string[]; error?: string; value?: string }): string {
  return opPage(
    who,
    `Remove ${o.id}`,
    'tenants',
    `<p>Removing <strong>${esc(o.id)}</strong> (${o.domains.map(esc).join(', ')}) takes its sites off line and out of every service. ` +
      `Its file, web root, logs, state and queued mail are moved into an archive under the data folder, as <code>makewaves tenant remove</code> does; ` +
      `<code>makewaves tenant restore</code> brings it back.</p>` +
      `<form method="post" action="/admin/tenants/${encodeURIComponent(o.id)}/remove">${csrfField(who.csrf)}` +
      field({ id: 'confirm', name: 'confirm', label: 'Type the tenant id to confirm', value: o.value ?? '', error: o.error, autocomplete: 'off' }) +
      `<button type="submit">Remove tenant</button></form><p><a href="/admin/">Back to the tenants</a></p>`,
  );
}

export function certsPage(who: OperatorWho, o: { rows: CertRow[]; statusError?: string } | undefined): string {
  if (!o) return opPage(who, 'Certificates', 'certs', '<p id="certs">No <code>http.tls</code> in makewaves.yaml: nothing is served over HTTPS.</p>');
  const rows = o.rows
    .map(
      (c) =>
        `<tr><th scope="row">${esc(c.domain)}</th><td>${esc(c.tenant)}</td><td>${esc(c.source)}</td><td>${esc(c.issuer)}</td><td>${esc(c.notAfter)}</td><td>${esc(c.next)}</td><td>${esc(c.lastError)}</td></tr>`,
    )
    .join('');
  return opPage(
    who,
    'Certificates',
    'certs',
    (o.statusError ? `<p class="error" role="alert">${esc(o.statusError)}</p>` : '') +
      `<p>What each tenant domain is served with, as <code>makewaves certs</code> prints it.</p>` +
      `<table id="certs"><thead><tr><th scope="col">Domain</th><th scope="col">Tenant</th><th scope="col">Source</th><th scope="col">Issuer</th><th scope="col">Not after</th><th scope="col">Next renewal</th><th scope="col">Last error</th></tr></thead><tbody>${rows}</tbody></table>`,
  );
}

export function queuePage(who: OperatorWho, q: QueueOverview): string {
  const deferred = q.deferred.map((d) => `<tr><th scope="row">${esc(d.domain)}</th><td>${d.recipients}</td><td>${esc(d.lastReply || '-')}</td></tr>`).join('');
  const rows = q.rows
    .map(
      (m) =>
        `<tr><th scope="row">${esc(m.id)}</th><td>${esc(queueAge(m.ageMs))}</td><td>${m.size}</td><td>${esc(m.returnPath || '<>')}</td><td>${m.to.map(esc).join('<br>')}</td>` +
        `<td>${m.attempts}</td><td>${esc(queueAge(m.nextInMs))}</td><td>${esc(m.lastReply ?? '-')}</td></tr>`,
    )
    .join('');
  return opPage(
    who,
    'Mail queue',
    'queue',
    `<p id="queue-summary">${q.rows.length} message${q.rows.length === 1 ? '' : 's'} queued` +
      (q.oldestMs !== undefined ? `, oldest ${esc(queueAge(q.oldestMs))}, ${q.pending} recipient${q.pending === 1 ? '' : 's'} waiting` : '') +
      `.</p>` +
      `<h2>Deferred, per domain</h2>` +
      (q.deferred.length
        ? `<table id="deferred"><thead><tr><th scope="col">Domain</th><th scope="col">Recipients</th><th scope="col">Last reply</th></tr></thead><tbody>${deferred}</tbody></table>`
        : '<p id="deferred">None.</p>') +
      `<h2>Messages</h2>` +
      (q.rows.length
        ? `<table id="messages"><thead><tr><th scope="col">Id</th><th scope="col">Age</th><th scope="col">Bytes</th><th scope="col">From</th><th scope="col">To</th><th scope="col">Attempts</th><th scope="col">Next in</th><th scope="col">Last reply</th></tr></thead><tbody>${rows}</tbody></table>`
        : '<p id="messages">The queue is empty.</p>') +
      `<p>As <code>makewaves queue</code> lists it; <code>makewaves queue flush</code> and <code>queue delete ID</code> act on it.</p>`,
  );
}

export function auditPage(who: OperatorWho, entries: AuditEntry[]): string {
  const rows = entries
    .map(
      (e) =>
        `<tr><td>${esc(new Date(e.at).toISOString())}</td><td>${esc(e.remote)}</td><td>${esc(e.login)}</td><td>${esc(e.action)}</td><td>${esc(e.tenant)}</td><td>${esc(e.detail)}</td></tr>`,
    )
    .join('');
  return opPage(
    who,
    'Audit log',
    'audit',
    `<p>The newest ${entries.length} entries, oldest first, as <code>makewaves panel audit</code> prints them.</p>` +
      `<table id="audit"><thead><tr><th scope="col">When (UTC)</th><th scope="col">From</th><th scope="col">Who</th><th scope="col">What</th><th scope="col">Tenant</th><th scope="col">Detail</th></tr></thead><tbody>${rows}</tbody></table>`,
  );
}

export function operatorMessage(who: OperatorWho, title: string, text: string): string {
  return opPage(who, title, undefined, `<p>${esc(text)}</p><p><a href="/admin/">Back to the tenants</a></p>`);
}
