import type { MailDay, State } from '../state/index.ts';
import { esc } from './html.ts';
import { PLOT_DAYS } from './traffic.ts';

/*
 * The Mail part of the Traffic page: what became of mail to the tenant's
 * addresses per UTC day for the last 30 days (forwarded, refused, bounced:
 * a uPlot chart drawn from the table, as the traffic plots are), and the
 * last outcomes themselves. The numbers are the mail service's, recorded in
 * state (state/mailstats.ts) as they happen; everything shown back is
 * escaped (addresses, senders and replies come from strangers).
 */

/** Outcomes listed, newest first. */
export const RECENT_MAIL = 50;

const int = (n: number) => n.toLocaleString('en-US');

/** {@link PLOT_DAYS} days ending today (UTC), oldest first, days without mail as zeros. */
export function mailDays(state: State, tenant: string, now: number): MailDay[] {
  const day = (n: number) => new Date(now - n * 86_400_000).toISOString().slice(0, 10);
  const counted = new Map(state.mailStats.days(tenant, day(PLOT_DAYS - 1)).map((d) => [d.day, d]));
  const out: MailDay[] = [];
  for (let i = PLOT_DAYS - 1; i >= 0; i--) out.push(counted.get(day(i)) ?? { day: day(i), forwarded: 0, refused: 0, bounced: 0 });
  return out;
}

const KIND: Record<string, string> = { forwarded: 'forwarded', refused: 'refused', bounced: 'bounced' };

/** The section's HTML, for the Traffic page. */
export function mailSection(state: State, tenant: string, now: number): string {
  const days = mailDays(state, tenant, now);
  const total = days.reduce((a, d) => ({ forwarded: a.forwarded + d.forwarded, refused: a.refused + d.refused, bounced: a.bounced + d.bounced }), { forwarded: 0, refused: 0, bounced: 0 });
  const rows = [...days]
    .reverse()
    .map(
      (d) =>
        `<tr data-day="${d.day}"><th scope="row">${d.day}</th><td data-k="forwarded" data-v="${d.forwarded}">${int(d.forwarded)}</td>` +
        `<td data-k="refused" data-v="${d.refused}">${int(d.refused)}</td><td data-k="bounced" data-v="${d.bounced}">${int(d.bounced)}</td></tr>`,
    )
    .join('');
  const recent = state.mailStats.recent(tenant, RECENT_MAIL);
  const events = recent
    .map(
      (e) =>
        `<tr class="mail-${KIND[e.kind] ?? 'other'}"><td>${esc(new Date(e.at).toISOString().slice(0, 19).replace('T', ' '))}</td><td>${esc(KIND[e.kind] ?? e.kind)}</td>` +
        `<td>${esc(e.address)}</td><td>${esc(e.target || '—')}</td><td>${esc(e.sender || '<>')}</td><td>${esc(e.reply)}</td></tr>`,
    )
    .join('');
  return (
    `<h2 id="mail">Mail</h2>` +
    `<p id="mail-total">${int(total.forwarded)} forwarded, ${int(total.refused)} refused, ${int(total.bounced)} bounced in the last ${PLOT_DAYS} days.</p>` +
    `<div id="mail-plots" hidden><div id="plot-mail"></div></div>` +
    `<table id="mail-table"><caption>Mail per day (UTC), newest first</caption><thead><tr><th scope="col">Day</th><th scope="col">Forwarded</th><th scope="col">Refused</th><th scope="col">Bounced</th></tr></thead><tbody>${rows}</tbody></table>` +
    `<h2 id="mail-recent-title">Recent deliveries and bounces</h2>` +
    (recent.length
      ? `<table id="mail-recent"><caption>The last ${RECENT_MAIL}, newest first</caption><thead><tr><th scope="col">When (UTC)</th><th scope="col">What</th><th scope="col">To your address</th><th scope="col">Forwarded to</th><th scope="col">From</th><th scope="col">Reply</th></tr></thead><tbody>${events}</tbody></table>`
      : `<p id="mail-recent">No mail to your addresses yet.</p>`)
  );
}
