import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CertStore } from '../../../src/core/certs.ts';
import { createLogger } from '../../../src/core/log.ts';
import { registryOf } from '../../helpers/registry.ts';
import { tempDirs } from '../../helpers/tmp.ts';

const tmp = tempDirs('makewaves-certs-links-');
const log = createLogger({ level: 'silent' });
const SERVICE = 40_323;

/** A key and certificate for `cn` in `dir` (openssl), the key 0600. */
function pair(dir: string, cn: string): { key: string; cert: string } {
  const key = path.join(dir, `${cn}.key`);
  const cert = path.join(dir, `${cn}.crt`);
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${cn}`], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  chmodSync(key, 0o600);
  return { key, cert };
}

const root = process.getuid?.() === 0;
// The bundled config keeps the store in <data>/certs, the service user's: a start as root reads it before the drop,
// and what it reads stays in the server the service user then runs (and can get into).
describe.skipIf(!root)(root ? 'the certificate store read as root' : 'the certificate store read as root (skipped: needs root)', () => {
  it('takes no key through a link in a store the service user owns: a root-only key elsewhere is never read', () => {
    const dir = tmp();
    const rootOnly = path.join(dir, 'private');
    mkdirSync(rootOnly, { mode: 0o700 });
    const victim = pair(rootOnly, 'other');
    const store = path.join(dir, 'data', 'certs');
    mkdirSync(store, { recursive: true });
    chownSync(path.join(dir, 'data'), SERVICE, SERVICE);
    chownSync(store, SERVICE, SERVICE);
    symlinkSync(victim.key, path.join(store, 'a.test.key'));
    symlinkSync(victim.cert, path.join(store, 'a.test.crt'));
    symlinkSync(victim.key, path.join(store, 'default.key'));
    symlinkSync(victim.cert, path.join(store, 'default.crt'));
    const certs = new CertStore(store, log);
    expect(certs.contextFor('a.test', registryOf({ a: { domains: ['a.test'] } }))).toBeUndefined();
    expect(certs.defaultPair()).toBeUndefined();
  });

  it('reads its own files there as before, and follows links in a store only root may change (the operator\'s)', () => {
    const dir = tmp();
    const store = path.join(dir, 'data', 'certs');
    mkdirSync(store, { recursive: true });
    chownSync(path.join(dir, 'data'), SERVICE, SERVICE);
    chownSync(store, SERVICE, SERVICE);
    const own = pair(store, 'a.test');
    chownSync(own.key, SERVICE, SERVICE);
    chownSync(own.cert, SERVICE, SERVICE);
    expect(new CertStore(store, log).contextFor('a.test', registryOf({ a: { domains: ['a.test'] } }))).toBeDefined();
    const rootStore = path.join(dir, 'etc-certs');
    mkdirSync(rootStore, { mode: 0o755 });
    const live = path.join(dir, 'live');
    mkdirSync(live, { mode: 0o700 });
    const real = pair(live, 'default');
    symlinkSync(real.key, path.join(rootStore, 'default.key'));
    symlinkSync(real.cert, path.join(rootStore, 'default.crt'));
    expect(new CertStore(rootStore, log).defaultPair()).toBeDefined();
  });
});
