import type { InboxMail } from '../state/index.ts';
import { verpDecode } from '../core/listaddr.ts';
import type { ListContext, ListKit } from './kit.ts';
import type { Membership } from './membership.ts';
import type { Posting } from './posting.ts';
import { decodeWords, firstAddress, header, isAutomatic, isMailbox, plainText, splitMessage, type Field } from './message.ts';

/** Bounce scores older than this start again from zero (Mailman's bounce_info_stale_after). */
const BOUNCE_STALE_MS = 7 * 24 * 3600_000;
const MAX_COMMAND_LINES = 10;

/** The worker over the list inbox: mail stored before the SMTP 250, acted on in order afterwards. */
export interface InboxWorker {
  /** Starts working through the inbox, or asks the running pass to look again. */
  kick(): void;
  /** The pass under way, if any (stop waits for it). */
  running(): Promise<void> | undefined;
}

export function createInboxWorker(kit: ListKit, members: Membership, posting: Posting): InboxWorker {
  const { log, now, store } = kit;
  let running: Promise<void> | undefined;
  let again = false;

  /** Commands of a -request mail: the Subject, else the first lines of the text. */
  function commands(fields: Field[], text: string): string[][] {
    const subject = decodeWords(header(fields, 'subject') ?? '')
      .replace(/^\s*((re|aw|fwd?|sv)\s*:\s*)+/i, '')
      .trim();
    const parse = (line: string) => line.trim().toLowerCase().split(/\s+/);
    const known = (w: string[]) => ['subscribe', 'unsubscribe', 'help', 'confirm', 'reject'].includes(w[0] ?? '');
    if (subject && known(parse(subject))) return [parse(subject)];
    const out: string[][] = [];
    for (const line of text.split(/\r?\n/)) {
      if (line.trim() === '') continue;
      const w = parse(line);
      if (!known(w) || out.length >= MAX_COMMAND_LINES) break;
      out.push(w);
    }
    return out;
  }

  async function handleRequest(c: ListContext, m: InboxMail, fields: Field[], who: string): Promise<void> {
    const l = log.child({ tenant: c.tenant.id, list: c.name, inbox: m.id, from: who });
    const cmds = commands(fields, plainText(splitMessage(m.raw)));
    if (cmds.length === 0) return l.info('request ignored: no command in the subject or the first lines');
    for (const [cmd, arg] of cmds) {
      if (cmd === 'subscribe') await members.requestSubscribe(c, who, arg === 'digest' ? 'digest' : 'single', 'mail');
      else if (cmd === 'unsubscribe') await members.requestUnsubscribe(c, who, 'mail');
      else if (cmd === 'confirm' || cmd === 'reject') await members.confirm(c, arg ?? '', 'mail', cmd === 'reject');
      else if (cmd === 'help') {
        await kit.send(
          c,
          who,
          `Help for ${c.addr()}`,
          `${c.cfg.description ? `${c.cfg.description}\n\n` : ''}Commands, in the Subject of a message to ${c.addr('-request')}:\n` +
            `  subscribe          join the list\n  subscribe digest   join, one digest a day\n  unsubscribe        leave the list\n  help               this text\n\n` +
            `Or use the page ${c.web}\n`,
        );
        l.info('help sent');
      }
    }
  }

  async function handleBounce(c: ListContext, m: InboxMail): Promise<void> {
    const l = log.child({ tenant: c.tenant.id, list: c.name, inbox: m.id });
    const address = m.param ? verpDecode(m.param) : undefined;
    const member = address ? store.member(c.tenant.id, c.name, address) : undefined;
    if (!address || !member) return l.info({ param: m.param }, 'bounce ignored: not for a member of this list');
    // RFC 3464 §2.3.4: the Status of a recipient in the delivery-status part; 5.x.x is permanent, 4.x.x transient.
    const status = /^Status:\s*([45])\.\d{1,3}\.\d{1,3}/im.exec(m.raw.toString('latin1'))?.[1];
    if (!status) return l.info({ address }, 'bounce ignored: no delivery status in it');
    const t = now();
    const day = new Date(t).toISOString().slice(0, 10);
    if (member.bounceDay === day) return l.info({ address, score: member.bounceScore }, 'bounce not scored: this member already had one counted today');
    const stale = member.bounceDay !== null && t - Date.parse(`${member.bounceDay}T00:00:00Z`) > BOUNCE_STALE_MS;
    const score = (stale ? 0 : member.bounceScore) + (status === '5' ? 1 : 0.5);
    const disable = score >= c.cfg.bounceThreshold;
    store.setBounce(member.id, score, day, disable || member.disabled);
    l.info({ address, kind: status === '5' ? 'hard' : 'soft', score, threshold: c.cfg.bounceThreshold }, 'bounce scored');
    if (disable && !member.disabled) {
      l.warn({ address, score }, 'member disabled: too many bounces');
      await kit.send(
        c,
        c.cfg.owner,
        `${address} disabled on ${c.addr()}`,
        `Mail to ${address} kept bouncing (score ${score}, threshold ${c.cfg.bounceThreshold}); delivery to it is stopped.\n` +
          `It stays a member; "makewaves list add ${address} ${c.addr()} --no-confirm" enables it again.\n`,
      );
    }
  }

  async function handle(m: InboxMail): Promise<void> {
    const c = kit.context(m.tenant, m.list);
    if (!c) return log.warn({ tenant: m.tenant, list: m.list, inbox: m.id }, 'mail for a list that is no longer configured; dropped');
    const { fields } = splitMessage(m.raw);
    if (m.role === 'post') return posting.handlePost(c, m, fields);
    if (m.role === 'bounces') return handleBounce(c, m);
    const who = firstAddress(header(fields, 'from')) ?? (isMailbox(m.sender.toLowerCase()) ? m.sender.toLowerCase() : undefined);
    const auto = isAutomatic(m.sender, fields);
    if (auto || !who) {
      return log.info({ tenant: c.tenant.id, list: c.name, inbox: m.id, role: m.role, sender: m.sender, why: auto ?? 'no sender address' }, 'command mail ignored');
    }
    if (m.role === 'subscribe') return members.requestSubscribe(c, who, 'single', 'mail');
    if (m.role === 'unsubscribe') return members.requestUnsubscribe(c, who, 'mail');
    if (m.role === 'confirm') {
      await members.confirm(c, m.param, 'mail');
      return;
    }
    return handleRequest(c, m, fields, who);
  }

  /** Works through the inbox in order; a message leaves it once handled. One that fails is logged and kept, and tried again when the next list mail arrives or at the next start. */
  function kick(): void {
    if (kit.stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = (async () => {
      const failed = new Set<number>();
      do {
        again = false;
        for (const id of store.inboxIds()) {
          if (kit.stopped) return;
          if (failed.has(id)) continue;
          const m = store.inboxGet(id);
          if (!m) continue;
          try {
            await handle(m);
            if (kit.stopped && m.role === 'post') {
              // A distribution cut short by stop keeps its row and cursor.
              const left = store.inboxGet(id);
              if (left && store.deliveryBatch(m.tenant, m.list, left.cursor, 1).length > 0) return;
            }
            store.inboxDone(id);
          } catch (err) {
            failed.add(id);
            log.error({ inbox: id, tenant: m.tenant, list: m.list, err: (err as Error).message }, 'list mail could not be handled; kept and tried again with the next list mail or start');
          }
        }
      } while (again);
    })().finally(() => {
      running = undefined;
    });
  }


  return { kick, running: () => running };
}
