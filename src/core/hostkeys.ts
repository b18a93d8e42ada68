import { createHash } from 'node:crypto';
import { closeSync, constants, existsSync, fstatSync, lstatSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ssh2 from 'ssh2';
import { makeDir } from '../lib/modes.ts';

/** The SFTP host keys, one per type, made once and kept: clients remember them. */
const TYPES = [
  { type: 'ed25519', file: 'ssh_host_ed25519_key' },
  { type: 'rsa', file: 'ssh_host_rsa_key' },
] as const;

/** Where the host keys live. */
export function hostKeyDir(dataDir: string): string {
  return path.join(dataDir, 'sftp');
}

/**
 * The host keys (OpenSSH private-key files), made on first use under
 * <data>/sftp/ (folder 0700, files 0600). A file that exists but does not
 * parse is an error, never silently replaced: clients would see a new host
 * key and warn of an attack.
 */
export function loadOrCreateHostKeys(dataDir: string): Buffer[] {
  const dir = hostKeyDir(dataDir);
  makeDir(dir, 0o700);
  return TYPES.map(({ type, file }) => {
    const full = path.join(dir, file);
    if (!lstatSync(full, { throwIfNoEntry: false })) {
      const pair = newHostKey(type);
      writeFileSync(full, pair.private, { mode: 0o600, flag: 'wx' });
      // 'wx' (O_EXCL) never opens what is there, a link included: an old public key (or a link put in its place) goes first.
      rmSync(`${full}.pub`, { force: true });
      writeFileSync(`${full}.pub`, `${pair.public}\n`, { mode: 0o600, flag: 'wx' });
    }
    const pem = readKeyFile(full);
    const parsed = ssh2.utils.parseKey(pem);
    if (parsed instanceof Error) throw new Error(`${full}: not a usable SSH host key (${parsed.message}); move it away to have a new one made`);
    return pem;
  });
}

/**
 * A host key file's bytes, if it is a regular file of one name: <data>/sftp
 * belongs to the service user, and a start as root reads it, so a link (or
 * a second name) there could have root read another key, such as the
 * system's own SSH host key, into the SFTP server. Throws otherwise.
 */
function readKeyFile(file: string): Buffer {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new Error(`${file} is a symbolic link; refused (move it away to have a new key made)`);
    throw err;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.nlink !== 1) throw new Error(`${file} is not a regular file of one name; refused (move it away to have a new key made)`);
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * A new key pair in OpenSSH's formats. ssh2's generator strips leading zero
 * bytes from an ed25519 public key, so about one key in 200 comes out
 * malformed; such a key is thrown away and another made. Each key kept is
 * proved by parsing it and checking a signature made with it.
 */
export function newHostKey(type: 'ed25519' | 'rsa'): { private: string; public: string } {
  const probe = Buffer.from('makewaves host key check');
  for (let attempt = 1; ; attempt++) {
    const pair = type === 'rsa' ? ssh2.utils.generateKeyPairSync('rsa', { bits: 3072 }) : ssh2.utils.generateKeyPairSync('ed25519');
    const parsed = ssh2.utils.parseKey(pair.private);
    if (!(parsed instanceof Error) && parsed.verify(probe, parsed.sign(probe))) return pair;
    if (attempt === 10) throw new Error(`could not make a usable ${type} host key in 10 tries (${parsed instanceof Error ? parsed.message : 'signature check failed'})`);
  }
}

/** `SHA256:...` fingerprints of the host keys that exist, as `ssh-keygen -lf` prints them. */
export function hostKeyFingerprints(dataDir: string): Array<{ type: string; file: string; fingerprint: string }> {
  const out: Array<{ type: string; file: string; fingerprint: string }> = [];
  for (const { file } of TYPES) {
    const full = path.join(hostKeyDir(dataDir), file);
    if (!existsSync(full)) continue;
    const parsed = ssh2.utils.parseKey(readFileSync(full));
    if (parsed instanceof Error) continue;
    out.push({ type: parsed.type, file: full, fingerprint: fingerprint(parsed.getPublicSSH()) });
  }
  return out;
}

/** OpenSSH's SHA256 fingerprint of a public key blob. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}
