import { X509Certificate, createPrivateKey } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { replaceFile } from '../lib/ownfile.ts';
import tls from 'node:tls';
import type { HealthProblem } from './contracts.ts';
import type { Logger } from './log.ts';
import type { Registry } from './registry.ts';

/** Name of the certificate used when no other fits (for the suite's own host name, say). */
export const DEFAULT_CERT = 'default';

interface Entry {
  context: tls.SecureContext;
  mtimeMs: number;
  checkedAt: number;
}

/** The files a certificate name stands for: `<dir>/<name>.crt` and `<dir>/<name>.key`. */
export function certFiles(dir: string, name: string): { cert: string; key: string } {
  return { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
}

/**
 * One certificate store for every protocol (HTTPS by SNI, SMTP STARTTLS,
 * FTPS): a folder of `<domain>.crt` / `<domain>.key` PEM files. For a server
 * name it tries the name itself, then the domains of the tenant that owns it
 * (one certificate can cover `www.` and the bare name), then `default`.
 * Files are checked for changes at most every `recheckMs`, so a renewed
 * certificate is used without a restart.
 */
export class CertStore {
  private readonly cache = new Map<string, Entry | null>();

  constructor(
    readonly dir: string,
    private readonly log: Logger,
    private readonly recheckMs = 5_000,
  ) {}

  /** A TLS context for `servername` (SNI), or undefined when the store has nothing that fits. */
  contextFor(servername: string | undefined, registry: Registry): tls.SecureContext | undefined {
    const names: string[] = [];
    if (servername) {
      const host = servername.toLowerCase().replace(/\.$/, '');
      const tenant = registry.tenantForHost(host);
      if (tenant?.tlsFiles) {
        const own = this.load(`tenant:${tenant.id}`, tenant.tlsFiles);
        if (own) return own;
      }
      names.push(host);
      if (tenant) names.push(...tenant.domains.filter((d) => d !== host));
    }
    names.push(DEFAULT_CERT);
    for (const name of names) {
      const ctx = this.load(name, certFiles(this.dir, name));
      if (ctx) return ctx;
    }
    return undefined;
  }

  /** The PEM pair of the default certificate, for listeners that need one up front (no SNI). */
  defaultPair(): { cert: Buffer; key: Buffer } | undefined {
    const files = certFiles(this.dir, DEFAULT_CERT);
    try {
      return { cert: readPem(files.cert), key: readPem(files.key) };
    } catch {
      // No default pair (or unreadable): SMTP turns STARTTLS off and logs why at start; FTPS without its own files refuses to start; `check` names the file.
      return undefined;
    }
  }

  private load(name: string, files: { cert: string; key: string }, now = Date.now()): tls.SecureContext | undefined {
    const cached = this.cache.get(name);
    if (cached && now - cached.checkedAt < this.recheckMs) return cached.context;
    if (cached === null && now - (this.missAt.get(name) ?? 0) < this.recheckMs) return undefined;
    let mtimeMs: number;
    try {
      mtimeMs = Math.max(statSync(files.cert).mtimeMs, statSync(files.key).mtimeMs);
    } catch {
      // No pair for this name (yet): remembered as a miss, looked for again after recheckMs.
      this.cache.set(name, null);
      this.missAt.set(name, now);
      return undefined;
    }
    if (cached && cached.mtimeMs === mtimeMs) {
      cached.checkedAt = now;
      return cached.context;
    }
    try {
      const context = tls.createSecureContext({ cert: readPem(files.cert), key: readPem(files.key), minVersion: 'TLSv1.2' });
      this.cache.set(name, { context, mtimeMs, checkedAt: now });
      if (cached) this.log.info({ cert: name }, 'certificate reloaded');
      return context;
    } catch (err) {
      this.log.error({ cert: name, err: (err as Error).message }, 'certificate cannot be used');
      this.cache.set(name, null);
      this.missAt.set(name, now);
      return undefined;
    }
  }

  private readonly missAt = new Map<string, number>();

  /** Forgets everything loaded (after a config reload). */
  reset(): void {
    this.cache.clear();
    this.missAt.clear();
  }

  /**
   * Writes a self-signed certificate (EC P-256, sha256, one year) for every
   * tenant that has none, covering all its domains, and a `default` one for
   * `hostname`. For the bundled examples and first tries, not for production.
   */
  async ensureSelfSigned(registry: Registry, hostname: string): Promise<string[]> {
    // The data folder exists by now with the mode the suite chose; the key folder itself private.
    mkdirSync(path.dirname(this.dir), { recursive: true, mode: 0o750 });
    refuseForeignLink(this.dir);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const made: string[] = [];
    const wanted: Array<[string, string[]]> = [[DEFAULT_CERT, [hostname, ...(registry.userdir ? [registry.userdir] : []), ...(registry.panelHost ? [registry.panelHost] : [])]]];
    for (const t of registry.tenants.values()) wanted.push([t.domains[0]!, [...t.domains]]);
    for (const [name, domains] of wanted) {
      if (domains.some((d) => this.has(d)) || (name === DEFAULT_CERT && this.has(DEFAULT_CERT))) continue;
      // Loaded at first need: selfsigned brings node-forge, a tenth of a second to load that most starts never use.
      const { generate } = await import('selfsigned');
      const pems = await generate([{ name: 'commonName', value: domains[0]! }], {
        keyType: 'ec',
        curve: 'P-256',
        algorithm: 'sha256',
        notAfterDate: new Date(Date.now() + 365 * 86_400_000),
        extensions: [
          { name: 'basicConstraints', cA: false },
          { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
          { name: 'extKeyUsage', serverAuth: true },
          { name: 'subjectAltName', altNames: domains.map((value) => ({ type: 2 as const, value })) },
        ],
      });
      const files = certFiles(this.dir, name);
      // Key first, then the certificate by rename: a reader never pairs a new cert with an old key.
      // Never through a link: the store may be under <data>, the service user's, written by a start as root.
      replaceFile(files.key, pems.private, 0o600);
      replaceFile(files.cert, pems.cert, 0o640);
      made.push(name);
    }
    if (made.length > 0) this.reset();
    return made;
  }

  private has(name: string): boolean {
    try {
      return statSync(certFiles(this.dir, name).cert).isFile();
    } catch {
      // Missing or unreadable: there is no certificate by that name to use.
      return false;
    }
  }
}

/**
 * What is wrong with a certificate for `names`: unreadable, expired or not
 * yet valid, a key that does not match, a name it does not cover. Empty
 * when it is fine. Used by `makewaves check`.
 */
export function certificateProblems(certFile: string, keyFile: string, names: readonly string[], now = new Date()): string[] {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(readFileSync(certFile));
  } catch (err) {
    return [`${certFile}: not a readable PEM certificate (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`];
  }
  const problems: string[] = [];
  if (new Date(cert.validTo) < now) problems.push(`${certFile}: expired on ${new Date(cert.validTo).toISOString().slice(0, 10)}`);
  if (new Date(cert.validFrom) > now) problems.push(`${certFile}: not valid before ${new Date(cert.validFrom).toISOString().slice(0, 10)}`);
  try {
    if (!cert.checkPrivateKey(createPrivateKey(readFileSync(keyFile)))) problems.push(`${keyFile}: does not match ${path.basename(certFile)}`);
  } catch (err) {
    problems.push(`${keyFile}: not a readable private key (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  for (const n of names) if (!cert.checkHost(n)) problems.push(`${certFile}: does not cover ${n}`);
  return problems;
}

/**
 * The certificates the suite may present that expire within `withinDays`
 * (or already have): every `*.crt` of the store and the tenants' own files.
 * Parsed once per file version (mtime), so it is cheap to call per request.
 */
export function certificateExpiry(withinDays: number): (dir: string | undefined, registry: Registry, now?: number) => HealthProblem[] {
  const seen = new Map<string, { mtimeMs: number; validTo: number }>();
  return (dir, registry, now = Date.now()) => {
    const files = new Set<string>();
    if (dir) {
      try {
        for (const n of readdirSync(dir)) if (n.endsWith('.crt')) files.add(path.join(dir, n));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    for (const t of registry.tenants.values()) if (t.tlsFiles) files.add(t.tlsFiles.cert);
    const problems: HealthProblem[] = [];
    for (const file of files) {
      let st;
      try {
        st = statSync(file);
      } catch {
        continue; // A missing file is `makewaves check`'s to name; nothing is presented from it.
      }
      let entry = seen.get(file);
      if (!entry || entry.mtimeMs !== st.mtimeMs) {
        try {
          entry = { mtimeMs: st.mtimeMs, validTo: new Date(new X509Certificate(readFileSync(file)).validTo).getTime() };
        } catch (err) {
          problems.push({ key: `cert:${file}`, severity: 'degraded', message: `${file}: not a readable certificate (${(err as Error).message})` });
          continue;
        }
        seen.set(file, entry);
      }
      const days = (entry.validTo - now) / 86_400_000;
      if (days < withinDays) {
        const when = new Date(entry.validTo).toISOString().slice(0, 10);
        problems.push({
          key: `cert:${file}`,
          severity: 'degraded',
          message: days < 0 ? `${file}: certificate expired on ${when}` : `${file}: certificate expires on ${when}, in ${Math.floor(days)} days`,
        });
      }
    }
    return problems;
  };
}

/**
 * Refuses (throws) a store folder that is a symbolic link in a folder some
 * user other than root may change, when running as root: the bundled config
 * keeps the store in <data>/certs, and <data> is the service user's once a
 * start as root has handed it over, so a link it put there would have root
 * write keys and certificates into any folder, over files of those names.
 * A link the operator made (in a folder only root may change) is followed.
 */
function refuseForeignLink(dir: string): void {
  if (process.getuid?.() !== 0 || !lstatSync(dir, { throwIfNoEntry: false })?.isSymbolicLink()) return;
  const parent = statSync(path.dirname(dir));
  if (parent.uid !== 0 || (parent.mode & 0o022) !== 0) {
    throw new Error(`${dir} is a symbolic link in a folder uid ${parent.uid} may change; refused (move it away and restart)`);
  }
}

/** Whether a folder some user other than root owns or may change. */
function foreign(st: { uid: number; mode: number }): boolean {
  return st.uid !== 0 || (st.mode & 0o022) !== 0;
}

/**
 * Reads a certificate or key file. As root, in a folder another user owns
 * or may change (the bundled store, <data>/certs, is the service user's),
 * never through a link: the folder is opened (with O_NOFOLLOW when the
 * folder above it is another user's too) and the file through it with
 * O_NOFOLLOW, a second hard link refused; else the service user's link had
 * root read a key only root may read into the server it then runs. In a
 * folder only root may change (the operator's: links to Let's Encrypt's
 * files, say) a link is followed as before; as any other user, as it is.
 */
function readPem(file: string): Buffer {
  if (process.getuid?.() !== 0) return readFileSync(file);
  const dir = path.dirname(file);
  const dfd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | (foreign(statSync(path.dirname(dir))) ? constants.O_NOFOLLOW : 0));
  try {
    const where = fstatSync(dfd);
    const theirs = foreign(where);
    let fd: number;
    try {
      fd = openSync(`/proc/self/fd/${dfd}/${path.basename(file)}`, constants.O_RDONLY | constants.O_NONBLOCK | (theirs ? constants.O_NOFOLLOW : 0));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new Error(`${file} is a symbolic link in a folder uid ${where.uid} may change; refused`);
      throw err;
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new Error(`${file} is not a regular file`);
      if (theirs && st.nlink !== 1) throw new Error(`${file} has ${st.nlink} names (a hard link) in a folder uid ${where.uid} may change; refused`);
      return readFileSync(fd);
    } finally {
      closeSync(fd);
    }
  } finally {
    closeSync(dfd);
  }
}
