/** Log folder for requests that matched no tenant (tenant ids never start with "_"). */
export const DEFAULT_SITE = '_default';

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n: number) => (n < 10 ? `0${n}` : String(n));

let stampSecond = -1;
let stamp = '';
/** `[10/Oct/2000:13:55:36 +0000]`, computed once per second. */
function clfTime(nowMs: number): string {
  const s = Math.floor(nowMs / 1000);
  if (s !== stampSecond) {
    const d = new Date(s * 1000);
    stamp = `[${pad(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000]`;
    stampSecond = s;
  }
  return stamp;
}

/** Escapes like Apache's mod_log_config: `"` and `\` backslashed, control and non-ASCII bytes as \xNN. */
export function escapeField(value: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/["\\\x00-\x1f\x7f-\uffff]/.test(value)) return value;
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    if (byte === 0x22) out += '\\"';
    else if (byte === 0x5c) out += '\\\\';
    else if (byte < 0x20 || byte >= 0x7f) out += `\\x${byte.toString(16).padStart(2, '0')}`;
    else out += String.fromCharCode(byte);
  }
  return out;
}

export interface AccessRecord {
  remote: string;
  method: string;
  url: string;
  httpVersion: string;
  status: number;
  bytes: number;
  referer: string | undefined;
  userAgent: string | undefined;
}

/** One line of the Combined Log Format, which GoAccess and AWStats read as is. */
export function combinedLine(r: AccessRecord, nowMs = Date.now()): string {
  return (
    `${r.remote} - - ${clfTime(nowMs)} "${escapeField(r.method)} ${escapeField(r.url)} HTTP/${r.httpVersion}" ` +
    `${r.status} ${r.bytes > 0 ? r.bytes : '-'} "${r.referer === undefined ? '-' : escapeField(r.referer)}" ` +
    `"${r.userAgent === undefined ? '-' : escapeField(r.userAgent)}"\n`
  );
}
