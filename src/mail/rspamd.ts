import http from 'node:http';
import type { ErrorCode } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { stripFields } from './fields.ts';

/** What scoring needs of `spam:` in makewaves.yaml. */
export interface ScoringSettings {
  /** Base URL of rspamd's normal worker (`http://127.0.0.1:11333`). */
  rspamd: string;
  reject: number;
  tag: number;
  /** Seconds to wait for rspamd's answer. */
  timeout: number;
  /** Sent as `Settings-ID` (rspamd picks a settings profile by it). */
  settingsId?: string | undefined;
}

/** The envelope and session of one message, sent as rspamd's request headers. */
export interface ScanEnvelope {
  ip: string;
  helo: string;
  /** The envelope sender ("" for the null sender). */
  from: string;
  rcpts: readonly string[];
  queueId: string;
  /** The client's name from its reverse lookup, when known. */
  hostname?: string | undefined;
}

/** rspamd's verdict (the /checkv2 JSON answer, the parts we use). */
export interface Verdict {
  score: number;
  /** rspamd's own action ("reject", "add header", "no action"…). */
  action: string;
  /** True when a pre-filter decided without scoring (GTUBE, a settings rule). */
  skipped: boolean;
  /** Symbol → its score, highest first. */
  symbols: Array<[string, number]>;
}

/** What the suite does with a verdict: refuse it in the session, tag and forward it, or forward it as it is. */
export type SpamAction = 'reject' | 'tag' | 'accept';

/**
 * The action for `v` under our thresholds: `reject` from a score of
 * `reject` up (or a pre-filter's reject without scoring, as rspamd gives
 * the GTUBE test string), `tag` from `tag` up, else `accept`.
 */
export function spamAction(v: Verdict, s: Pick<ScoringSettings, 'reject' | 'tag'>): SpamAction {
  if (v.score >= s.reject || (v.skipped && v.action === 'reject')) return 'reject';
  if (v.score >= s.tag) return 'tag';
  return 'accept';
}

/** A connection per scan (rspamd closes each after its answer): none is kept, so none is reused half-closed. */
const scanAgent = new http.Agent({ keepAlive: false, maxSockets: 64 });

/** rspamd's answer is a few KiB; past this it is not read further and counts as a failure. */
export const MAX_ANSWER_BYTES = 256 * 1024;
/** Symbols named in X-Spam-Symbols (the highest scores), and the longest name kept. */
export const MAX_SYMBOLS = 30;
const MAX_SYMBOL_NAME = 64;

/** Header values rspamd gets from the client: one line of printable ASCII. */
const safe = (v: string) => v.replace(/[^\x20-\x7e]/g, '?');

/**
 * Asks rspamd's normal worker to score `raw` (POST /checkv2, RFC 5322
 * message as the body, the envelope in the request headers rspamd's
 * protocol defines: IP, Helo, From, one Rcpt per recipient, Queue-Id,
 * Hostname, Settings-ID). Rejects on a refused connection, a timeout, a
 * non-200 answer or an answer that is not rspamd's JSON.
 */
export function scoreMessage(raw: Buffer, env: ScanEnvelope, s: ScoringSettings): Promise<Verdict> {
  const url = new URL('/checkv2', s.rspamd);
  const headers: http.OutgoingHttpHeaders = {
    'Content-Length': raw.length,
    IP: env.ip.replace(/^::ffff:/, ''),
    Helo: safe(env.helo),
    From: safe(env.from),
    Rcpt: env.rcpts.map(safe),
    'Queue-Id': env.queueId,
  };
  if (env.hostname) headers.Hostname = safe(env.hostname);
  if (s.settingsId) headers['Settings-ID'] = s.settingsId;
  return new Promise<Verdict>((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers, agent: scanAgent, signal: AbortSignal.timeout(s.timeout * 1000) }, (res) => {
      const chunks: Buffer[] = [];
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        if (bytes <= MAX_ANSWER_BYTES) return void chunks.push(c);
        req.destroy();
        reject(new Error(`rspamd's answer is larger than ${MAX_ANSWER_BYTES} bytes`));
      });
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) return reject(new Error(`rspamd answered HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
        try {
          resolve(parseVerdict(text));
        } catch (err) {
          reject(err as Error);
        }
      });
    });
    req.on('error', reject);
    req.end(raw);
  });
}

/** A score as rspamd gives it: a finite number (JSON's `1e400` parses to Infinity, which no threshold judges sensibly). */
const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** rspamd's /checkv2 JSON as a verdict; throws when it is not one (a score that is not a finite number, its own or a symbol's, included). */
export function parseVerdict(text: string): Verdict {
  const j = JSON.parse(text) as { score?: unknown; action?: unknown; is_skipped?: unknown; symbols?: Record<string, { score?: unknown }> };
  if (!finite(j.score) || typeof j.action !== 'string') throw new Error(`not an rspamd verdict: ${text.slice(0, 200)}`);
  const bad = Object.entries(j.symbols ?? {}).find(([, sym]) => sym?.score !== undefined && !finite(sym.score));
  if (bad) throw new Error(`not an rspamd verdict: the score of ${bad[0].slice(0, MAX_SYMBOL_NAME)} is not a finite number`);
  const symbols = Object.entries(j.symbols ?? {})
    .map(([name, sym]): [string, number] => [name, finite(sym?.score) ? sym.score : 0])
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  return { score: j.score, action: j.action, skipped: j.is_skipped === true, symbols };
}

/**
 * The fields a tagged message gets on top (CRLF, folded): X-Spam,
 * X-Spam-Score, X-Spam-Symbols: the {@link MAX_SYMBOLS} highest, each name
 * cut to 64 characters of [A-Za-z0-9_.-], then how many more there were.
 */
export function spamFields(v: Verdict): string {
  const symbols = v.symbols.slice(0, MAX_SYMBOLS).map(([name, score]) => `${name.replace(/[^A-Za-z0-9_.-]/g, '?').slice(0, MAX_SYMBOL_NAME)}(${score.toFixed(2)})`);
  if (v.symbols.length > MAX_SYMBOLS) symbols.push(`and ${v.symbols.length - MAX_SYMBOLS} more`);
  const list = symbols.length > 0 ? symbols.join(',\r\n\t') : 'none';
  return `X-Spam: Yes\r\nX-Spam-Score: ${v.score.toFixed(2)}\r\nX-Spam-Symbols: ${list}\r\n`;
}

/**
 * `raw` without the fields a spam filter's verdict is read from
 * (`X-Spam` and every `X-Spam-…`): a sender must not be able to write its
 * own verdict. The rest of the header section is left byte for byte.
 */
export function stripSpamFields(raw: Buffer): { raw: Buffer; removed: number } {
  return stripFields(raw, (name) => /^x-spam(-\S*)?$/.test(name), /(^|\r\n)x-spam(-[^:\s]*)?\s*:/i);
}

/** `spam:` of makewaves.yaml as scoring reads it. */
export type SpamSettings = ScoringSettings & { onFailure: 'accept' | 'tempfail' };

/** What became of a message at scoring: the message to pass on (tagged or not), or the refusal to answer with. */
export type ContentOutcome = { raw: Buffer; refusal?: undefined } | { refusal: { code: ErrorCode; text: string }; raw?: undefined };

/**
 * Content scoring of one received message (`raw` as it would be passed
 * on) by rspamd: the sender's own X-Spam fields go in every case; from
 * `reject` up the message is refused, from `tag` up it gets our X-Spam
 * fields on top; rspamd down or too slow: passed on unscored, or refused
 * for now (451 4.7.1) with `onFailure: tempfail`. Each outcome is logged
 * with who sent what to whom, and counted by `count`.
 */
export async function checkContent(raw: Buffer, env: ScanEnvelope, s: SpamSettings, log: Logger, count: (action: SpamAction | 'failed') => void): Promise<ContentOutcome> {
  const who = { from: env.from, rcpts: env.rcpts, qid: env.queueId };
  const stripped = stripSpamFields(raw);
  if (stripped.removed > 0) log.info({ ...who, removed: stripped.removed }, "removed the sender's X-Spam fields");
  let verdict: Verdict;
  const t0 = performance.now();
  try {
    verdict = await scoreMessage(stripped.raw, env, s);
  } catch (err) {
    count('failed');
    const why = ['TimeoutError', 'AbortError'].includes((err as Error).name) ? `no answer within ${s.timeout} s` : (err as Error).message;
    if (s.onFailure === 'tempfail') {
      log.warn({ ...who, rspamd: s.rspamd, why }, 'message deferred: rspamd could not score it (spam.onFailure: tempfail)');
      return { refusal: { code: 'SCAN_TEMPFAIL', text: 'Cannot check this message for spam now, try again later' } };
    }
    log.warn({ ...who, rspamd: s.rspamd, why }, 'message accepted unscored: rspamd could not score it');
    return { raw: stripped.raw };
  }
  const action = spamAction(verdict, s);
  count(action);
  const detail = { ...who, score: verdict.score, symbols: verdict.symbols.slice(0, 20).map(([n, v]) => `${n}(${v})`), spamMs: Math.round((performance.now() - t0) * 100) / 100 };
  if (action === 'reject') {
    log.info({ ...detail, limit: s.reject }, 'message refused: rspamd scores it as spam');
    const score = verdict.skipped && verdict.score < s.reject ? `rspamd rejects it (${verdict.symbols[0]?.[0] ?? 'a pre-filter'})` : `score ${verdict.score.toFixed(2)}, limit ${s.reject}`;
    return { refusal: { code: 'SPAM', text: `Message refused: our content filter takes it for spam (${score})` } };
  }
  if (action === 'tag') {
    log.info({ ...detail, limit: s.tag }, 'message tagged as spam (X-Spam: Yes) and passed on');
    return { raw: Buffer.concat([Buffer.from(spamFields(verdict), 'latin1'), stripped.raw]) };
  }
  log.debug(detail, 'message scored: not spam');
  return { raw: stripped.raw };
}
