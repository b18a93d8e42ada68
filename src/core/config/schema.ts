import { isIP } from 'node:net';
import { z } from 'zod';
import { isValidHostname } from '../../lib/hostname.ts';
import { parseListen } from '../../lib/listen.ts';
import { parseSize } from '../../lib/sizes.ts';
import { headerEntry } from './headers.ts';
import { parseRecipient } from '../recipient.ts';

/**
 * The config format is the suite's contract with operators (see README).
 * Every object is strict: an unknown key is a typo and is reported as one.
 * Types are inferred from these schemas; there are no parallel interfaces.
 */

const hostname = z
  .string()
  .refine((s) => isValidHostname(s.toLowerCase()), { error: (i) => `"${String(i.input)}" is not a valid host name` })
  .transform((s) => s.toLowerCase());

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
  // A domain of empty labels (a trailing dot, "..") is no domain SMTP names (RFC 5321 §4.1.2): `ops@mx.example.`
  // would pass the checks against this server's own name and loop.
  .refine((s) => !/@\.|\.\.|\.$/.test(s.slice(s.lastIndexOf('@'))), { error: (i) => `"${String(i.input)}" is not an e-mail address (an empty label in its domain)` })
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

/**
 * A forward's name (its local part): one an RCPT TO can name (the rules of
 * core/recipient.ts, which refuses routing characters such as "%" and "!"),
 * so that a forward written here can ever receive mail; at most 64 octets
 * (RFC 5321 §4.5.3.1.1).
 */
const forwardLocal = z
  .string()
  .max(64, 'a local part is at most 64 characters (RFC 5321 section 4.5.3.1.1)')
  .superRefine((k, ctx) => {
    const parsed = parseRecipient(`${k}@forward.invalid`);
    if (!parsed.ok) ctx.addIssue({ code: 'custom', message: `"${k}" can never receive mail: ${parsed.detail}` });
    else if (parsed.local !== k.toLowerCase()) ctx.addIssue({ code: 'custom', message: `"${k}" is read as "${parsed.local}" in an address` });
  });
/** PASV replies (RFC 959 §4.1.2) can only carry an IPv4 address. */
const ipv4 = z.string().refine((s) => isIP(s) === 4, { error: (i) => `"${String(i.input)}" is not an IPv4 address (PASV can only advertise one)` });

/** The resolver for everything the suite looks up (`IP` or `IP:port`, `[IPv6]:port`); absent: the system's (/etc/resolv.conf). */
const dnsSettings = z.strictObject({
  servers: z.array(z.string().regex(/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]|[0-9a-fA-F:]+)(:\d{1,5})?$/, 'must be an IP address, optionally with :port')).min(1),
  /** Seconds to wait for one answer. */
  timeout: z.number().positive().max(60).default(5),
});

/** Login throttling when `ftp.lockout` says nothing (the panel uses it too when there is no `ftp:`). */
export const LOCKOUT_DEFAULTS = { failures: 5, accountFailures: 50, addressFailures: 50, windowSeconds: 600, lockSeconds: 300 } as const;

/**
 * What to do with inbound mail by its authentication (SPF, DKIM, DMARC),
 * per tenant (`mail.checks` in a tenant file) over the suite's defaults
 * (`smtp.checks`). Quarantine (DMARC p=quarantine) is always accepted and tagged.
 */
const checkPolicy = {
  /** A DMARC failure where the From: domain publishes p=reject: `refuse` (550 5.7.1 in the session) or `tag` (accepted, marked in Authentication-Results). */
  dmarcReject: z.enum(['refuse', 'tag']),
  /** An SPF hard fail (`-all`) of the envelope sender when the From: domain has no DMARC policy: `tag` (accepted) or `refuse` (550 5.7.23). */
  spfFail: z.enum(['tag', 'refuse']),
  /** A check that could not finish for a DNS timeout or temporary error: `accept` (tagged temperror) or `defer` (451 4.7.0, the sender retries). Never a permanent refusal. */
  temporary: z.enum(['accept', 'defer']),
};

export const mainSchema = z.strictObject({
  hostname,
  /** DNS servers for every lookup the suite makes (MX for delivery, and `makewaves dns --check`); absent: the system's. */
  dns: dnsSettings.optional(),
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
    /** Seconds a cached file is trusted before it is checked against the disk again (0: every hit). */
    cacheRevalidate: z.number().min(0).max(60).default(1),
    /** Seconds a client may take to send its request headers (slow-loris guard), and an HTTPS client to finish its TLS handshake. */
    headersTimeout: z.number().positive().max(600).default(10),
    /** Seconds a client may take to send a whole request, body included. */
    requestTimeout: z.number().positive().max(3600).default(30),
    /** Seconds an upstream may stay silent before the proxy answers 504. */
    proxyTimeout: z.number().positive().max(3600).default(30),
    /**
     * Connections open at once from one client (an IPv4 address; an IPv6 /64), on every HTTP and HTTPS
     * listener together; the next one's first request is answered 503. 0: no cap. A reload applies it to new connections.
     */
    maxConnectionsPerIp: z.number().int().min(0).max(100_000).default(256),
    /** HTTPS: certificates chosen by SNI from `certs` (`<domain>.crt` + `<domain>.key`); also used by SMTP STARTTLS and FTPS. */
    tls: z
      .strictObject({
        listen: listenList,
        certs: z.string().default('../certs'),
        /** Write a self-signed certificate for each tenant that has none (first tries and the bundled examples only). */
        selfSigned: z.boolean().default(false),
      })
      .optional(),
  }),
  smtp: z
    .strictObject({
      listen: listenList,
      maxMessageBytes: size.default(10 * 1024 * 1024),
      /** Smarthost for all outbound mail (`smtp://host:port`, `smtps://user:pass@host:465`); absent: deliver to each domain's MX. */
      relay: z
        .string()
        .url()
        .refine((u) => /^smtps?:$/.test(new URL(u).protocol), 'must be an smtp:// or smtps:// URL')
        .optional(),
      /** Simultaneous SMTP sessions in all (the next one gets 421). */
      maxConnections: z.number().int().min(1).max(100_000).default(200),
      /** Simultaneous SMTP sessions from one client address. */
      maxConnectionsPerIp: z.number().int().min(1).max(100_000).default(20),
      /** Recipients per message; the next RCPT gets 452 4.5.3 (RFC 5321 §4.5.3.1.8 asks for at least 100). */
      maxRecipients: z.number().int().min(1).max(10_000).default(100),
      /** Seconds a session may stay silent before it is closed (RFC 5321 §4.5.3.2.7 suggests 5 minutes). */
      idleTimeout: z.number().positive().max(3600).default(300),
      /** Look up the client's host name (PTR) for each connection; off by default (it costs a DNS query per session). */
      reverseLookup: z.boolean().default(false),
      /** Domain of the SRS addresses written into forwarded mail's envelope sender; defaults to `hostname`. */
      srsDomain: hostname.optional(),
      /** Days an SRS address stays valid for bounces coming back (the day stamp wraps at 1024). */
      srsMaxAgeDays: z.number().int().min(1).max(1000).default(21),
      /** Seconds a sender waits while a forwarded message is offered to the next hop (a refusal there becomes its 5xx, no bounce); 0: queue at once. */
      waitForNextHop: z.number().min(0).max(300).default(15),
      /** Bounces (DSNs) sent to one domain per hour; more are logged and not sent (forged senders must not make us a spam cannon). */
      bouncesPerDomainPerHour: z.number().int().min(0).max(100_000).default(20),
      /** Deprecated: the old name of the top-level `dns` (same keys); `makewaves check` says so. */
      dns: dnsSettings.optional(),
      /** Inbound checks at receipt (SPF, DKIM, DMARC, ARC; one Authentication-Results field) and ARC sealing of what is forwarded; the policy keys are the tenants' defaults. */
      checks: z
        .strictObject({
          enabled: z.boolean().default(true),
          /** ARC-seal (RFC 8617) forwarded mail and list posts with the suite's own key (needs `enabled`). */
          arcSeal: z.boolean().default(true),
          dmarcReject: checkPolicy.dmarcReject.default('refuse'),
          spfFail: checkPolicy.spfFail.default('tag'),
          temporary: checkPolicy.temporary.default('accept'),
          /** Seconds the checks of one message may take (a DNS server that never answers); then every result is temperror and `temporary` decides. */
          timeout: z.number().min(1).max(600).default(30),
        })
        .prefault({}),
      /** Outbound queue: Postfix-like backoff that doubles from minBackoff to maxBackoff (seconds), bounce after lifetime. */
      queue: z
        .strictObject({
          minBackoff: z.number().positive().default(300),
          maxBackoff: z.number().positive().default(4000),
          lifetime: z.number().positive().default(5 * 24 * 3600),
          /** Messages delivered at the same time. */
          concurrency: z.number().int().min(1).max(1000).default(20),
          /** TCP port of remote MX hosts (25; other values only make sense in tests). */
          mxPort: z.number().int().min(1).max(65535).default(25),
        })
        .default({ minBackoff: 300, maxBackoff: 4000, lifetime: 5 * 24 * 3600, concurrency: 20, mxPort: 25 }),
    })
    .optional(),
  /**
   * The operator's own mail settings (the tenants' are in their files).
   * `postmaster`: the mailbox that takes postmaster@ and abuse@ of every
   * hosted domain whose tenant has no forward of that name, of `hostname`
   * (and `smtp.srsDomain`), and `<postmaster>` with no domain (RFC 5321
   * §4.5.1, RFC 2142). Read per session: a reload applies it.
   */
  mail: z
    .strictObject({
      postmaster: emailAddress.optional(),
    })
    .optional(),
  /** Spam defence before forwarding. */
  spam: z
    .strictObject({
      /**
       * DNS blocklists asked at connect (`zen.spamhaus.org`, or `{ zone, url }`): a client listed in one
       * (an A record in 127.0.0.0/8 for its reversed address) is refused with 554 and the list's URL.
       */
      dnsbl: z
        .array(z.union([hostname.transform((zone) => ({ zone, url: undefined as string | undefined })), z.strictObject({ zone: hostname, url: z.string().url().optional() })]))
        .max(20)
        .default([]),
      /**
       * Content scoring by rspamd's HTTP protocol (its normal worker, `http://127.0.0.1:11333`), during DATA after
       * the inbound checks: from a score of `reject` up → 550 5.7.1 in the session; from `tag` up → X-Spam headers.
       */
      rspamd: z
        .string()
        .url()
        .refine((u) => new URL(u).protocol === 'http:', 'must be an http:// URL (rspamd\'s normal worker)')
        .optional(),
      reject: z.number().positive().max(1000).default(15),
      tag: z.number().positive().max(1000).default(6),
      /** rspamd down, too slow or answering nonsense: `accept` the message unscored (logged), or `tempfail` (451 4.7.1). */
      onFailure: z.enum(['accept', 'tempfail']).default('accept'),
      /** Seconds to wait for rspamd's verdict. */
      timeout: z.number().positive().max(120).default(10),
      /** Sent to rspamd as `Settings-ID`: the settings profile it applies. */
      settingsId: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be an rspamd settings id (letters, digits, _ . -)').optional(),
    })
    .refine((s) => s.tag < s.reject, { message: 'spam.tag must be below spam.reject', path: ['tag'] })
    .optional(),
  admin: z
    .strictObject({
      /** Loopback only: /metrics and /healthz are for the operator, not the world. */
      listen: listen.refine((s) => /^(127\.\d+\.\d+\.\d+|\[::1\]|localhost):/.test(s), 'must be a loopback address (127.0.0.1:PORT or [::1]:PORT)'),
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
          /** Failed logins for one account from one address (fail2ban's model: the attacker's address is locked, not the account). */
          failures: z.number().int().min(1).max(1000).default(5),
          /** Failed logins for one account from all addresses together: a ceiling many addresses must reach. */
          accountFailures: z.number().int().min(1).max(100_000).default(50),
          /** Failed logins from one address for all accounts together (one address guessing at many accounts). */
          addressFailures: z.number().int().min(1).max(100_000).default(50),
          windowSeconds: z.number().positive().default(600),
          lockSeconds: z.number().positive().default(300),
        })
        .default(LOCKOUT_DEFAULTS),
      /** Explicit FTPS (AUTH TLS, RFC 4217) with one certificate; `required` refuses logins before AUTH TLS. */
      /** Without cert/key, FTPS uses the default certificate of the suite's store (http.tls.certs). */
      tls: z
        .strictObject({ cert: z.string().optional(), key: z.string().optional(), required: z.boolean().default(false) })
        .refine((t) => (t.cert === undefined) === (t.key === undefined), 'give both cert and key, or neither (then the store\'s default certificate is used)')
        .optional(),
      /** node-cron schedule of the quota rescan that corrects drift (UTC). */
      quotaRescan: z.string().default('17 * * * *'),
      transferLog: z
        .strictObject({
          /** Rotated daily; this many days of old logs are kept. */
          keepDays: z.number().int().min(1).max(3650).default(14),
        })
        .default({ keepDays: 14 }),
    })
    .optional(),
  /** Form handlers (/cgi-bin/<name>): sandbox limits and the mail they may send. */
  cgi: z
    .strictObject({
      /** Seconds a handler may run (wall time) before it is killed and the visitor gets 504. */
      timeout: z.number().positive().max(300).default(5),
      /** Memory of one handler process (V8 heap limit and resident-size cap); over it: killed, 502. */
      memory: size.refine((n) => n >= 32 * 1024 * 1024, 'must be at least 32MiB').default(128 * 1024 * 1024),
      /** Largest request body passed on stdin; larger: 413. */
      maxBody: size.default(1024 * 1024),
      /** Largest single file a handler may write in its scratch folder. */
      scratchFileMax: size.default(16 * 1024 * 1024),
      /** Largest response a handler may print; larger: killed, 502. */
      maxOutput: size.default(4 * 1024 * 1024),
      /** Handler processes running at once for one tenant (further requests wait in its queue). */
      perTenant: z.number().int().min(1).max(64).default(4),
      /** Handler processes alive at once across all tenants; beyond it: 503. */
      total: z.number().int().min(1).max(1024).default(16),
      /** Requests of one tenant that may wait for a free process; beyond it: 503. */
      queue: z.number().int().min(0).max(10_000).default(32),
      /** Requests one warm process serves before it is replaced by a fresh one. */
      requestsPerProcess: z.number().int().min(1).default(1000),
      /** Seconds an idle warm process is kept. */
      idleTimeout: z.number().positive().max(86_400).default(60),
      /**
       * Started as root: each tenant's handlers and scripts run as a uid (and gid) of its own from
       * this range ("first-last"), given once and kept in state. Without root, all run as one.
       */
      uids: z
        .string()
        .regex(/^\d{1,10}-\d{1,10}$/, 'must be a range of uids such as 200000-299999')
        .refine((s) => {
          const [a, b] = s.split('-').map(Number) as [number, number];
          return a >= 1000 && a <= b && b < 4294967294;
        }, 'must be first-last with 1000 <= first <= last < 4294967294 (no system accounts, no nobody)')
        .default('200000-299999'),
      /** Processes and threads one tenant's handlers may have at once, all its boxes together (RLIMIT_NPROC of its uid, started as root; a warm JS handler process uses 7 to 12). */
      tenantProcesses: z.number().int().min(4).max(4096).default(256),
      /** Unprivileged user handlers run as when the suite runs as root. */
      user: z.string().regex(/^[a-z_][a-z0-9_-]*\$?$/i, 'must be a user name').default('nobody'),
      /**
       * No longer has any effect (kept so existing files still load): every
       * handler runs in a bubblewrap box, which always has its own network;
       * where no box can be made, no handler runs.
       */
      requireNetworkIsolation: z.boolean().default(true),
      /** Mails one tenant's handlers may send per hour. */
      mailPerHour: z.number().int().min(0).default(60),
      /** Mails handlers may send per hour on behalf of one visitor IP address. */
      mailPerIpPerHour: z.number().int().min(0).default(5),
    })
    .prefault({}),
  /**
   * SFTP (SSH-2, the sftp subsystem only) for the tenants' FTP accounts: the
   * same jail, quota, atomic uploads, lockout and transfer log as FTP, so it
   * needs `ftp:` too. Host keys are made once under <data>/sftp/.
   */
  sftp: z
    .strictObject({
      listen,
      /** Seconds without a request before a session is closed. */
      idleTimeout: z.number().positive().max(86_400).default(300),
      /** Seconds a connection has to log in, whatever it sends meanwhile (OpenSSH's LoginGraceTime). */
      loginGrace: z.number().positive().max(600).default(30),
      /** SSH connections open at once in all (logged in or not: file descriptors are shared with every service). */
      maxConnections: z.number().int().min(1).max(100_000).default(200),
      /** SSH connections open at once from one IP address, and SFTP sessions of one account. */
      maxConnectionsPerIp: z.number().int().min(1).max(10_000).default(10),
      maxSessionsPerAccount: z.number().int().min(1).max(10_000).default(10),
      /** Files and folders one session may hold open at once. */
      maxHandles: z.number().int().min(1).max(10_000).default(64),
    })
    .optional(),
  /**
   * ACME (RFC 8555): certificates for every tenant domain that has no certificate file of its own, answered
   * by HTTP-01 on the HTTP listener or TLS-ALPN-01 on the HTTPS one, written into the store of http.tls,
   * renewed in the CA's ARI window (RFC 9773) or else at two thirds of their lifetime.
   */
  acme: z
    .strictObject({
      /** The CA's directory URL (Let's Encrypt production or staging, or a test CA). */
      directory: z
        .string()
        .url()
        .refine((u) => new URL(u).protocol === 'https:', 'must be an https:// URL'),
      /** Contact address for the ACME account (expiry notices, policy changes). */
      email: emailAddress,
      /** Extra trust for the ACME server's own TLS (test CAs): a PEM file, relative to this file. */
      ca: z.string().optional(),
      /** Orders in flight at once (many tenants do not stampede the CA). */
      concurrency: z.number().int().min(1).max(50).default(2),
      /** After a failed order: the first retry waits this long, each next one twice as long, up to maxRetrySeconds. */
      retrySeconds: z.number().positive().max(86_400).default(300),
      maxRetrySeconds: z.number().positive().max(7 * 86_400).default(86_400),
      /**
       * Challenge types to answer, in order of preference (the CA offers which it accepts): http-01 on the HTTP
       * listener, tls-alpn-01 (RFC 8737) on the HTTPS listener, which the CA must reach on port 443.
       */
      challenges: z
        .array(z.enum(['http-01', 'tls-alpn-01']))
        .min(1)
        .refine((a) => new Set(a).size === a.length, 'must not name a challenge type twice')
        .default(['http-01']),
      /** After a rate-limit reply (urn:ietf:params:acme:error:rateLimited): the refused domain waits at least this long, and at least its Retry-After. */
      rateLimitFloorSeconds: z.number().positive().max(7 * 86_400).default(3600),
    })
    .optional(),
  /**
   * The customers' control panel, served by the HTTP service on `host`
   * (HTTPS only, except to loopback clients). Customers log in with one of
   * their tenant's FTP accounts.
   */
  panel: z
    .strictObject({
      host: hostname,
      /**
       * Operator accounts, `name: hash` (`makewaves hash-password` writes the
       * hash): they log in to the panel with the name alone and see every
       * tenant. A name has no "@", so it never looks like an FTP login.
       */
      admins: z.preprocess(
        // `admins: []` (the empty list an earlier release documented) is no account, as `{}` is.
        (v) => (Array.isArray(v) && v.length === 0 ? {} : v),
        z
          .record(z.string(), z.string().regex(/^\$scrypt\$/, 'must be a hash written by `makewaves hash-password` ($scrypt$...)'))
          .superRefine((admins, ctx) => {
            for (const name of Object.keys(admins)) {
              if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(name)) {
                ctx.addIssue({ code: 'custom', path: [name], message: 'an operator name is lower-case letters, digits, ".", "_" or "-" (no "@": that is an FTP login)' });
              }
            }
          }),
      ).default({}),
      /** Minutes a session may stay unused before it has to log in again. */
      idleMinutes: z.number().int().min(1).max(24 * 60).default(30),
      /** Largest file a customer may upload from the browser (default 100MiB); a larger one is refused before it is read. */
      maxUpload: size.optional(),
      /** What one customer may do through the panel (the operator's CLI is not bound by these). */
      limits: z
        .strictObject({
          /** Targets one forward may have. */
          forwardTargets: z.number().int().min(1).max(1000).default(10),
          /** Forwards a tenant may have in all. */
          forwards: z.number().int().min(1).max(100_000).default(100),
          /** Files and folders a zip of a site may hold. */
          zipEntries: z.number().int().min(1).max(1_000_000).default(10_000),
          /** Addresses a tenant's form handlers may mail (`forms.recipients`). */
          formsRecipients: z.number().int().min(1).max(10_000).default(20),
          /** Members a list may have for the panel to add one more (members who joined by confirming are not refused). */
          listMembers: z.number().int().min(1).max(1_000_000).default(1000),
        })
        .prefault({}),
    })
    .optional(),
  /** Unix account the suite runs as after binding its listeners, when started as root (`makewaves init` prepares <data> and <sites> for it). */
  user: z.string().regex(/^[a-z_][a-z0-9_-]*\$?$/i, 'must be a user name').optional(),
  /** Its group; defaults to the user's primary group. */
  group: z.string().regex(/^[a-z_][a-z0-9_-]*\$?$/i, 'must be a group name').optional(),
});

const tenantName = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'must be lower-case letters, digits, ".", "_" or "-"');

const proxyEntry = z.strictObject({
  path: z.string().regex(/^\/(?:[A-Za-z0-9._~!$&'()*+,;=:@%-]+\/)*$/, 'must be a URL path that starts and ends with "/"'),
  to: z
    .string()
    .url()
    .refine((u) => /^https?:$/.test(new URL(u).protocol), 'must be an http:// or https:// URL'),
});

/** One authorized_keys line: key type, base64 blob, optional comment (no options). */
const sshPublicKey = z
  .string()
  .regex(/^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,2}( [\x20-\x7e]*)?$/, 'must be a public key line as in authorized_keys: "ssh-ed25519 AAAA... comment"');

export const tenantSchema = z.strictObject({
  domains: z.array(hostname).min(1, 'a tenant needs at least one domain'),
  quota: size.optional(),
  ftp: z
    .array(
      z.strictObject({
        user: tenantName,
        password: z.string().regex(/^\$scrypt\$/, 'must be a hash written by `makewaves passwd` ($scrypt$...)'),
        /** Public keys that may log in over SFTP, as in authorized_keys (`ssh-ed25519 AAAA... comment`). */
        keys: z.array(sshPublicKey).default([]),
      }),
    )
    .default([]),
  mail: z
    .strictObject({
      forward: z.record(forwardLocal, z.union([emailAddress.transform((a) => [a]), z.array(emailAddress).min(1)])).default({}),
      catchAll: emailAddress.optional(),
      /** This tenant's policy for inbound authentication failures; each key absent takes `smtp.checks` of makewaves.yaml. */
      checks: z
        .strictObject({
          dmarcReject: checkPolicy.dmarcReject.optional(),
          spfFail: checkPolicy.spfFail.optional(),
          temporary: checkPolicy.temporary.optional(),
        })
        .optional(),
      lists: z
        .record(
          tenantName,
          z.strictObject({
            owner: emailAddress,
            posting: z.enum(['open', 'members', 'moderated']).default('members'),
            /** With `posting: members`: a non-member's post is held for the owner, or refused with a notice to the poster. */
            nonMembers: z.enum(['hold', 'reject']).default('hold'),
            /** One line shown on the list's web page and in its help message. */
            description: z.string().max(200).regex(/^[^\x00-\x1f\x7f]*$/, 'must be one line without control characters').default(''),
            /** Put in front of each post's Subject (e.g. "[news]"), once. */
            subjectPrefix: z.string().max(40).regex(/^[\x20-\x7e]*$/, 'must be printable ASCII').optional(),
            /** Where replies go: to the poster (the post's own Reply-To/From) or to the list. */
            replyTo: z.enum(['poster', 'list']).default('poster'),
            /**
             * From becomes "Poster via <list>" <list@domain>, Reply-To the poster (merged with the post's own), X-Original-From the
             * original (DMARC mitigation, as Mailman does): `dmarc` for posters whose domain publishes DMARC p=reject or
             * p=quarantine, `always` for every post, `never`.
             */
            fromMunging: z.enum(['never', 'dmarc', 'always']).default('dmarc'),
            /** Base URL of the tenant's site for the list's web pages and signed unsubscribe links; default https://<first domain>. */
            webUrl: z
              .string()
              .url()
              .refine((u) => /^https?:$/.test(new URL(u).protocol) && new URL(u).pathname === '/', 'must be an http:// or https:// origin without a path')
              .optional(),
            /** `true`: posts are kept and shown on /lists/<name>/archive/ (as escaped text, addresses obfuscated) to anyone. */
            archive: z.boolean().default(false),
            /** Bounce score (hard +1, soft +0.5, at most once a day) at which a member's delivery is disabled. */
            bounceThreshold: z.number().positive().max(100).default(5),
          }),
        )
        .default({}),
    })
    .optional(),
  forms: z
    .strictObject({
      recipients: z.array(emailAddress).default([]),
      /** A form field real visitors leave empty (hidden by CSS); a submission that fills it is dropped quietly. */
      honeypot: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be a form field name').default('homepage'),
    })
    .optional(),
  cgi: z.boolean().default(false),
  proxy: z.array(proxyEntry).default([]),
  /** Response headers by path (see headers.ts): first matching entry wins per field; defaults for the fields no entry sets. */
  headers: z.array(headerEntry).max(500).default([]),
  /** HTTPS for this tenant: redirect plain HTTP (308) and send HSTS (max-age in seconds; 0 = none). */
  https: z.strictObject({ redirect: z.boolean().default(false), hsts: z.number().int().min(0).max(63_072_000).default(0) }).optional(),
  /** This tenant's own certificate files (relative to this file), instead of the store's `<domain>.crt`. */
  tls: z.strictObject({ cert: z.string(), key: z.string() }).optional(),
  /**
   * A suspended tenant keeps its files, mail routes and accounts, but HTTP answers 503 on every path,
   * FTP refuses its logins and mail for its domains gets 450 4.2.1 at RCPT (senders retry; nothing is lost).
   * `true`, or `{ reason, since }` as `makewaves tenant suspend` writes it; the reason is for operators only.
   */
  suspended: z
    .union([
      z.boolean(),
      z.strictObject({
        reason: z.string().max(500).default(''),
        since: z.string().optional(),
      }),
    ])
    .default(false),
});

export type MainConfig = z.infer<typeof mainSchema>;
export type TenantConfig = z.infer<typeof tenantSchema>;
