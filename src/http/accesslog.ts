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
  /**
   * The request line when no request was parsed (the parser refused it):
   * written instead of method, url and version; "-" when there is none.
   */
  request?: string;
}

// RFC 9112 §3: method SP request-target SP HTTP-version, visible ASCII only.
const REQUEST_LINE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ [\x21-\x7e]+ HTTP\/\d\.\d$/;

/**
 * The request line at the start of `raw` (bytes the parser was given) when
 * it is a well-formed one, else "-": what the access log shows for a
 * request refused before it was parsed.
 */
export function requestLineOf(raw: Buffer | undefined): string {
  if (!raw) return '-';
  let end = raw.indexOf(0x0a);
  if (end === -1 || end > 8192) return '-';
  if (end > 0 && raw[end - 1] === 0x0d) end--;
  const line = raw.toString('latin1', 0, end);
  return REQUEST_LINE.test(line) ? line : '-';
}

/** One line of the Combined Log Format, which GoAccess and AWStats read as is. */
export function combinedLine(r: AccessRecord, nowMs = Date.now()): string {
  return (
    `${r.remote} - - ${clfTime(nowMs)} "${r.request !== undefined ? escapeField(r.request) : `${escapeField(r.method)} ${escapeField(r.url)} HTTP/${r.httpVersion}`}" ` +
    `${r.status} ${r.bytes > 0 ? r.bytes : '-'} "${r.referer === undefined ? '-' : escapeField(r.referer)}" ` +
    `"${r.userAgent === undefined ? '-' : escapeField(r.userAgent)}"\n`
  );
}
