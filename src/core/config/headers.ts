import { z } from 'zod';

/**
 * A tenant's response headers (`headers:` in its file): a list of entries,
 * each a path pattern and the fields it sets. For each field the first
 * entry whose pattern matches the path decides; the defaults below act as
 * a last entry matching every path.
 */

/** RFC 9110 §5.6.2: a field name is a token. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** RFC 9110 §5.5: visible ASCII, spaces and tabs inside; no CR, LF, NUL or other controls. */
const FIELD_VALUE = /^(?:[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)?$/;

/** Fields that frame the message or belong to one connection (RFC 9110 §7.6.1, RFC 9113 §8.2.2), or that the server sets from the answer itself. */
const FORBIDDEN: Record<string, string> = {
  connection: 'a hop-by-hop field (it belongs to one connection)',
  'keep-alive': 'a hop-by-hop field (it belongs to one connection)',
  te: 'a hop-by-hop field (it belongs to one connection)',
  trailer: 'a hop-by-hop field (it belongs to one connection)',
  upgrade: 'a hop-by-hop field (it belongs to one connection)',
  'transfer-encoding': 'it frames the message; the server sets it',
  'content-length': 'it frames the message; the server sets it',
  host: 'a request field',
  'content-encoding': 'it describes the bytes sent; the server sets it when it compresses',
  'content-range': 'it describes the bytes sent; the server sets it for range requests',
  'strict-transport-security': 'it is set by `https.hsts` in the tenant file',
};

/** Why a tenant may not set this field, or undefined when it may. */
export function forbiddenHeader(name: string): string | undefined {
  if (name.startsWith(':')) return 'a pseudo-header of HTTP/2 (the server sets those)';
  if (!TOKEN.test(name)) return 'not a field name (letters, digits and !#$%&\'*+.^_`|~- only)';
  const lower = name.toLowerCase();
  if (lower.startsWith('proxy-')) return 'a hop-by-hop field (it belongs to one connection)';
  return FORBIDDEN[lower];
}

/** The fields a tenant that sets nothing gets (each can be changed, or dropped with ""). */
export const DEFAULT_HEADERS: Readonly<Record<string, string>> = {
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'strict-origin-when-cross-origin',
};

const fieldSet = z
  .record(z.string(), z.union([z.string(), z.number()]).transform(String))
  .superRefine((set, ctx) => {
    const seen = new Map<string, string>();
    for (const [name, value] of Object.entries(set)) {
      const why = forbiddenHeader(name);
      if (why) ctx.addIssue({ code: 'custom', path: [name], message: `"${name}" cannot be set: ${why}` });
      else if (!FIELD_VALUE.test(value) || value.length > 8192) {
        ctx.addIssue({
          code: 'custom',
          path: [name],
          message: 'the value must be one line of printable ASCII without leading or trailing spaces, 8192 characters at most (no CR, LF or other control characters)',
        });
      }
      const lower = name.toLowerCase();
      const other = seen.get(lower);
      if (other !== undefined) ctx.addIssue({ code: 'custom', path: [name], message: `"${name}" is also set as "${other}" (field names ignore case)` });
      seen.set(lower, name);
    }
    if (seen.size === 0) ctx.addIssue({ code: 'custom', message: 'sets no field' });
  });

export const headerEntry = z.strictObject({
  /** A path on the site; `*` stands for any run of characters, "/" included (`/assets/*`, `*.pdf`). */
  match: z
    .string()
    .max(1024)
    .regex(/^[/*][^\x00-\x20\x7f?#]*$/, 'must be a path pattern that starts with "/" or "*", without spaces, "?" or "#" (`*` matches anything, "/" included)'),
  /** Field name → value; "" sends no such field (drops a default). */
  set: fieldSet,
  /** Replace the value a handler or a proxied backend sent for these fields (by default theirs wins). */
  override: z.boolean().default(false),
  /** Also on error answers (4xx, 5xx); by default, as nginx's add_header, only on 2xx and 3xx. */
  always: z.boolean().default(false),
  /** Apply this entry to answers of proxied paths too. */
  proxied: z.boolean().default(true),
});

export type HeaderEntry = z.infer<typeof headerEntry>;
