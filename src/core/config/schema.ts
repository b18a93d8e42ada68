import { isIP } from 'node:net';
import { z } from 'zod';
import { isValidHostname } from '../../lib/hostname.ts';
import { parseListen } from '../../lib/listen.ts';
import { parseSize } from '../../lib/sizes.ts';

/**
 * The config format is the suite's contract with operators (see README).
 * Every object is strict: an unknown key is a typo and is reported as one.
 * Types are inferred from these schemas; there are no parallel interfaces.
 */

const hostname = z
  .string()
  .transform((s) => s.toLowerCase())
  .refine(isValidHostname, { error: (i) => `"${String(i.input)}" is not a valid host name` });

const listen = z.string().refine((s) => parseListen(s) !== undefined, {
  error: (i) => `"${String(i.input)}" is not a listen address (host:port, [v6]:port)`,
});

const listenList = z.union([listen.transform((s) => [s]), z.array(listen).min(1)]);

/** A byte size: a number of bytes or a string like `512KiB`, `10MB`. */
export const size = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const n = parseSize(v);
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a size (examples: 1048576, 512KiB, 10MB)` });
    return z.NEVER;
  }
  return n;
});

const emailAddress = z
  .string()
  .regex(/^[^\s@<>()",;:\\]+@[^\s@<>()",;:\\]+\.[^\s@<>()",;:\\]+$/, { error: (i) => `"${String(i.input)}" is not an e-mail address` })
  .transform((s) => s.toLowerCase());

const portRange = z
  .string()
  .regex(/^\d{1,5}-\d{1,5}$/, 'must be a port range like "30000-30049"')
  .refine(
    (r) => {
      const [lo, hi] = r.split('-').map(Number) as [number, number];
      return lo >= 1024 && lo <= hi && hi <= 65535;
    },
    { error: (i) => `"${String(i.input)}" must go from a low port (1024 or above) to a higher one (65535 at most)` },
  );

/** PASV replies (RFC 959 §4.1.2) can only carry an IPv4 address. */
const ipv4 = z.string().refine((s) => isIP(s) === 4, { error: (i) => `"${String(i.input)}" is not an IPv4 address (PASV can only advertise one)` });

export const mainSchema = z.strictObject({
  hostname,
  data: z.string().default('../data'),
  sites: z.string().default('../sites'),
  http: z.strictObject({
    listen: listenList,
    userdir: hostname.optional(),
    accessLog: z
      .strictObject({
        /** Rotated daily; this many days of old logs are kept. */
        keepDays: z.number().int().min(1).max(3650).default(14),
      })
      .default({ keepDays: 14 }),
    /** Files up to this size are held in memory (revalidated on every hit). */
    cacheFileMax: size.default(256 * 1024),
    /** Total memory for the static-file cache. */
    cacheTotal: size.default(64 * 1024 * 1024),
    /** Seconds an upstream may stay silent before the proxy answers 504. */
    proxyTimeout: z.number().positive().max(3600).default(30),
  }),
  smtp: z
    .strictObject({
      listen: listenList,
      maxMessageBytes: size.default(10 * 1024 * 1024),
      relay: z.string().url().optional(),
    })
    .optional(),
  ftp: z
    .strictObject({
      listen,
      /** Absent: passive data ports are ephemeral and the control connection's own address is advertised. */
      passive: z.strictObject({ address: ipv4, ports: portRange }).optional(),
      /** Seconds without a command (or, during a transfer, without data) before a session is closed. */
      idleTimeout: z.number().positive().max(86_400).default(300),
      /** Sessions open at once, in total and from one IP address. */
      maxConnections: z.number().int().min(1).max(100_000).default(200),
      maxConnectionsPerIp: z.number().int().min(1).max(10_000).default(10),
      /** Login throttling: `failures` failed logins for one user or one IP within `windowSeconds` lock it for `lockSeconds`. */
      lockout: z
        .strictObject({
          failures: z.number().int().min(1).max(1000).default(5),
          windowSeconds: z.number().positive().default(600),
          lockSeconds: z.number().positive().default(300),
        })
        .default({ failures: 5, windowSeconds: 600, lockSeconds: 300 }),
      /** Explicit FTPS (AUTH TLS, RFC 4217) with one certificate; `required` refuses logins before AUTH TLS. */
      tls: z.strictObject({ cert: z.string(), key: z.string(), required: z.boolean().default(false) }).optional(),
      /** node-cron schedule of the quota rescan that corrects drift (UTC). */
      quotaRescan: z.string().default('17 * * * *'),
    })
    .optional(),
});

const tenantName = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'must be lower-case letters, digits, ".", "_" or "-"');

const proxyEntry = z.strictObject({
  path: z.string().regex(/^\/(?:[A-Za-z0-9._~!$&'()*+,;=:@%-]+\/)*$/, 'must be a URL path that starts and ends with "/"'),
  to: z
    .string()
    .url()
    .refine((u) => /^https?:$/.test(new URL(u).protocol), 'must be an http:// or https:// URL'),
});

export const tenantSchema = z.strictObject({
  domains: z.array(hostname).min(1, 'a tenant needs at least one domain'),
  quota: size.optional(),
  ftp: z
    .array(
      z.strictObject({
        user: tenantName,
        password: z.string().regex(/^\$scrypt\$/, 'must be a hash written by `makewaves passwd` ($scrypt$...)'),
      }),
    )
    .default([]),
  mail: z
    .strictObject({
      forward: z.record(z.string(), z.union([emailAddress.transform((a) => [a]), z.array(emailAddress).min(1)])).default({}),
      catchAll: emailAddress.optional(),
      lists: z
        .record(
          tenantName,
          z.strictObject({
            owner: emailAddress,
            posting: z.enum(['open', 'members', 'moderated']).default('members'),
          }),
        )
        .default({}),
    })
    .optional(),
  forms: z.strictObject({ recipients: z.array(emailAddress).default([]) }).optional(),
  cgi: z.boolean().default(false),
  proxy: z.array(proxyEntry).default([]),
});

export type MainConfig = z.infer<typeof mainSchema>;
export type TenantConfig = z.infer<typeof tenantSchema>;
