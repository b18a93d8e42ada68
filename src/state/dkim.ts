import { createPrivateKey, createPublicKey, generateKeyPair, randomBytes, type KeyObject } from 'node:crypto';
import { closeSync, constants, fchownSync, fsyncSync, linkSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { isValidHostname } from '../lib/hostname.ts';
import { makeDir } from '../lib/modes.ts';
import type { Statement } from 'better-sqlite3';
import type { Db, Migration } from './db.ts';

export const dkimMigrations: Migration[] = [
  {
    id: 'dkim-1',
    // One row per DKIM key: `retired_at` is set when a rotation replaced it (it no
    // longer signs), `unpublish_at` is when its DNS record may go (the grace period
    // for mail signed with it that is still on its way).
    sql: `CREATE TABLE dkim_keys (
            domain       TEXT NOT NULL,
            selector     TEXT NOT NULL,
            algorithm    TEXT NOT NULL,
            file         TEXT NOT NULL,
            created_at   INTEGER NOT NULL,
            retired_at   INTEGER,
            unpublish_at INTEGER,
            PRIMARY KEY (domain, selector)
          ) WITHOUT ROWID;`,
  },
  {
    id: 'dkim-2',
    // The suite's ARC sealing key (RFC 8617) lives beside the DKIM keys: same files, same
    // DNS form (`<selector>._domainkey.<hostname>`), but it never signs as DKIM.
    sql: `ALTER TABLE dkim_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'dkim';`,
  },
];

/** What a key signs: DKIM-Signature fields, or ARC sets (ARC-Message-Signature and ARC-Seal). */
export type KeyPurpose = 'dkim' | 'arc';

export type DkimAlgorithm = 'rsa' | 'ed25519';

/** One DKIM key of a domain, as recorded (the private key stays in its file). */
export interface DkimKey {
  domain: string;
  /** The selector: its public key is published at `<selector>._domainkey.<domain>`. */
  selector: string;
  algorithm: DkimAlgorithm;
  /** DKIM signing, or ARC sealing (the suite's own key, RSA only: RFC 8617 §4.1.1 allows nothing else yet). */
  purpose: KeyPurpose;
  /** The private key file (PEM, mode 0600), absolute. */
  file: string;
  /** Epoch milliseconds. */
  createdAt: number;
  /** Set once a rotation replaced it: it signs no more mail. */
  retiredAt: number | null;
  /** When its DNS record may be removed (retired keys only). */
  unpublishAt: number | null;
}

interface Row {
  domain: string;
  selector: string;
  algorithm: DkimAlgorithm;
  purpose: KeyPurpose;
  file: string;
  created_at: number;
  retired_at: number | null;
  unpublish_at: number | null;
}

const toKey = (r: Row): DkimKey => ({
  domain: r.domain,
  selector: r.selector,
  algorithm: r.algorithm,
  purpose: r.purpose,
  file: r.file,
  createdAt: r.created_at,
  retiredAt: r.retired_at,
  unpublishAt: r.unpublish_at,
});

const generate = promisify(generateKeyPair);

/** A new private key in PEM (PKCS#8): RSA 2048 bits (RFC 8301's floor is 1024) or Ed25519 (RFC 8463). */
async function newPrivateKey(algorithm: DkimAlgorithm): Promise<string> {
  const pair =
    algorithm === 'rsa'
      ? await generate('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
      : await generate('ed25519', { publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  return pair.privateKey;
}

/** The `p=` value of a key's DNS record: the SubjectPublicKeyInfo for RSA (RFC 6376 §3.6.1), the bare 32 bytes for Ed25519 (RFC 8463 §4.2). */
export function dkimPublicValue(privatePem: string | KeyObject, algorithm: DkimAlgorithm): string {
  const pub = createPublicKey(typeof privatePem === 'string' ? createPrivateKey(privatePem) : privatePem);
  const der = pub.export({ type: 'spki', format: 'der' });
  return (algorithm === 'ed25519' ? der.subarray(der.length - 32) : der).toString('base64');
}

/** The TXT record text of a key (before splitting into strings of at most 255 characters). */
export function dkimRecord(privatePem: string | KeyObject, algorithm: DkimAlgorithm): string {
  return `v=DKIM1; k=${algorithm}; p=${dkimPublicValue(privatePem, algorithm)}`;
}

/** A domain name fit for a file name and a `d=` tag: a valid host name, lower case; throws otherwise. */
function domainName(domain: string): string {
  const d = domain.toLowerCase().replace(/\.$/, '');
  if (!isValidHostname(d)) throw new Error(`"${domain}" is not a domain name`);
  return d;
}

/** `mw20261206`: the date of the key's making, in UTC. */
function selectorBase(now: number): string {
  return `mw${new Date(now).toISOString().slice(0, 10).replaceAll('-', '')}`;
}

/**
 * DKIM keys per domain: the private keys under `<data>/dkim/<domain>/<selector>.key`
 * (folders 0700, files 0600), their selectors and lifetimes in the state
 * database, shared by the running server (which signs) and the CLI (which
 * rotates and prints DNS records): a rotation made by the CLI is used by the
 * server's next message.
 *
 * Each domain has one signing pair: an RSA key (selector `mw<date>r`) and an
 * Ed25519 key (`mw<date>e`), made together at first need or by {@link rotate}.
 */
export class DkimKeys {
  private readonly dir: string;
  private readonly pending = new Map<string, Promise<DkimKey[]>>();
  /** Per key file: its PEM text and, once asked for, the parsed key: the one cache of keys for the signer, the sealer and `makewaves dns`. */
  private readonly keyCache = new Map<string, { pem: string; parsed?: KeyObject }>();
  private signingQuery: Statement | undefined;

  constructor(
    private readonly db: Db,
    dataDir: string,
  ) {
    this.dir = path.join(dataDir, 'dkim');
  }

  /** Every key recorded for `domain` (or for all domains), newest first. */
  list(domain?: string): DkimKey[] {
    const rows = domain
      ? (this.db.prepare('SELECT * FROM dkim_keys WHERE domain = ? ORDER BY created_at DESC, algorithm DESC, selector').all(domainName(domain)) as Row[])
      : (this.db.prepare('SELECT * FROM dkim_keys ORDER BY domain, created_at DESC, algorithm DESC, selector').all() as Row[]);
    return rows.map(toKey);
  }

  /** The keys that sign `domain`'s mail now (none when it has none yet). */
  signing(domain: string, purpose: KeyPurpose = 'dkim'): DkimKey[] {
    // Asked for every message signed: prepared once.
    this.signingQuery ??= this.db.prepare('SELECT * FROM dkim_keys WHERE domain = ? AND purpose = ? AND retired_at IS NULL ORDER BY algorithm DESC');
    const rows = this.signingQuery.all(domainName(domain), purpose) as Row[];
    return rows.map(toKey);
  }

  /** The keys of `purpose` whose records must be in DNS at `now`: the signing ones and retired ones within their grace period. */
  published(domain: string, now = Date.now(), purpose: KeyPurpose = 'dkim'): DkimKey[] {
    return this.list(domain).filter((k) => k.purpose === purpose && (k.retiredAt === null || (k.unpublishAt ?? 0) > now));
  }

  /**
   * The suite's ARC sealing key under `domain` (its host name), made (RSA
   * 2048, selector `mw<date>a`) and recorded first if there is none: the
   * first forwarded message or `makewaves dns` makes it.
   */
  async ensureArc(domain: string, now = Date.now()): Promise<DkimKey> {
    const d = domainName(domain);
    const have = this.signing(d, 'arc');
    if (have.length > 0) return have[0]!;
    const key = `arc:${d}`;
    const running = this.pending.get(key);
    if (running) return (await running)[0]!;
    const made = this.make(d, now, false, 0, 'arc').finally(() => this.pending.delete(key));
    this.pending.set(key, made);
    return (await made)[0]!;
  }

  /** The signing keys of `domain`, made (and recorded) first if it has none: the first message or `makewaves dns` makes them. */
  async ensure(domain: string, now = Date.now()): Promise<DkimKey[]> {
    const d = domainName(domain);
    const have = this.signing(d);
    if (have.length > 0) return have;
    const running = this.pending.get(d);
    if (running) return running;
    const made = this.make(d, now, false).finally(() => this.pending.delete(d));
    this.pending.set(d, made);
    return made;
  }

  /**
   * Makes a new signing pair for `domain` (or, for `arc`, a new ARC sealing
   * key under the host name) and retires the current one: it stays
   * published for `graceDays` (mail signed or sealed with it may still be
   * queued or read). Returns the new keys.
   */
  async rotate(domain: string, graceDays: number, now = Date.now(), purpose: KeyPurpose = 'dkim'): Promise<{ made: DkimKey[]; retired: DkimKey[] }> {
    const d = domainName(domain);
    const retired = this.signing(d, purpose);
    const made = await this.make(d, now, true, graceDays, purpose);
    return { made, retired: retired.map((k) => ({ ...k, retiredAt: now, unpublishAt: now + graceDays * 86_400_000 })) };
  }

  /** The private key of `key` (PEM), read once per file. */
  privateKey(key: DkimKey): string {
    return this.cached(key).pem;
  }

  /** The private key of `key` parsed, once per file (signing with PEM text would parse it for every signature). */
  signingKey(key: DkimKey): KeyObject {
    const c = this.cached(key);
    c.parsed ??= createPrivateKey(c.pem);
    return c.parsed;
  }

  private cached(key: DkimKey): { pem: string; parsed?: KeyObject } {
    let c = this.keyCache.get(key.file);
    if (!c) {
      c = { pem: readFileSync(key.file, 'utf8') };
      this.keyCache.set(key.file, c);
    }
    return c;
  }

  /** The TXT record text of `key`. */
  record(key: DkimKey): string {
    return dkimRecord(this.signingKey(key), key.algorithm);
  }

  private async make(domain: string, now: number, retire: boolean, graceDays = 0, purpose: KeyPurpose = 'dkim'): Promise<DkimKey[]> {
    // A DKIM pair (RSA `…r`, Ed25519 `…e`), or one RSA ARC key (`…a`).
    const kinds: ReadonlyArray<readonly [DkimAlgorithm, string]> = purpose === 'arc' ? [['rsa', 'a']] : [['rsa', 'r'], ['ed25519', 'e']];
    const pems = await Promise.all(kinds.map(([alg]) => newPrivateKey(alg)));
    const folder = path.join(this.dir, domain);
    // Made by root (the CLI run by the operator): the server runs as the owner of <data> and must read them. Each
    // folder and file is handed over on what was opened: <data> is the owner's, who could swap a name for a link
    // between a write and a chown by name.
    const owner = process.getuid?.() === 0 ? statSync(path.dirname(this.dir)) : undefined;
    makeDir(this.dir, 0o700, { owner });
    makeDir(folder, 0o700, { owner });
    const tmp = pems.map((pem) => writeTemp(folder, pem, owner));
    const taken = new Set(this.list(domain).map((k) => k.selector));
    const base = selectorBase(now);
    let keys: DkimKey[] = [];
    try {
      // A second pair made the same day: mw20261206n2r, n3… A file another process
      // just claimed (its row not yet recorded) is never overwritten: link() refuses.
      for (let n = 1; keys.length === 0; n++) {
        const stem = n === 1 ? base : `${base}n${n}`;
        if (kinds.some(([, suffix]) => taken.has(`${stem}${suffix}`))) continue;
        const files = kinds.map(([, suffix]) => path.join(folder, `${stem}${suffix}.key`));
        const claimed: string[] = [];
        for (let i = 0; i < files.length && claim(tmp[i]!, files[i]!); i++) claimed.push(files[i]!);
        if (claimed.length < files.length) {
          for (const f of claimed) rmSync(f, { force: true });
          continue;
        }
        keys = kinds.map(([algorithm, suffix], i) => ({ domain, selector: `${stem}${suffix}`, algorithm, purpose, file: files[i]!, createdAt: now, retiredAt: null, unpublishAt: null }));
      }
    } finally {
      for (const t of tmp) rmSync(t, { force: true });
    }
    // The new names are on disk before any row points at them.
    const dirFd = openSync(folder, 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
    const insert = this.db.prepare('INSERT INTO dkim_keys (domain, selector, algorithm, purpose, file, created_at) VALUES (?, ?, ?, ?, ?, ?)');
    let won = true;
    try {
      this.db.transaction(() => {
        // Another process (the CLI, or the server) may have made this domain's first keys meanwhile: theirs stand.
        if (!retire && this.signing(domain, purpose).length > 0) {
          won = false;
          return;
        }
        if (retire) {
          this.db.prepare('UPDATE dkim_keys SET retired_at = ?, unpublish_at = ? WHERE domain = ? AND purpose = ? AND retired_at IS NULL').run(now, now + graceDays * 86_400_000, domain, purpose);
        }
        for (const k of keys) insert.run(k.domain, k.selector, k.algorithm, k.purpose, k.file, k.createdAt);
      }).immediate();
    } catch (err) {
      for (const k of keys) rmSync(k.file, { force: true });
      throw err;
    }
    if (!won) {
      for (const k of keys) rmSync(k.file, { force: true });
      return this.signing(domain, purpose);
    }
    return keys;
  }
}

/** Writes a private key to a new temporary file in `folder`: mode 0600 and its owner (root handing it over) from the start, fsync'd. */
function writeTemp(folder: string, pem: string, owner?: { uid: number; gid: number }): string {
  const tmp = path.join(folder, `.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    if (owner) fchownSync(fd, owner.uid, owner.gid);
    writeSync(fd, pem);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return tmp;
}

/** Gives the temporary file its final name unless that name exists (false then). */
function claim(tmp: string, file: string): boolean {
  try {
    linkSync(tmp, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}
