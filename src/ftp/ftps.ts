import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { CertStore } from '../core/certs.ts';
import type { FtpContext, FtpTls } from './context.ts';
import { TlsAcceptor } from './tls.ts';

/**
 * FTPS as configured: the certificate of `ftp.tls` (files relative to the
 * config folder `configDir`), else the store's default; undefined without
 * `ftp.tls`. Read at start, so a missing file is a start failure naming it
 * (and startAll rolls back).
 */
export function loadFtpTls(ctx: FtpContext, configDir: string, certs: CertStore | undefined): FtpTls | undefined {
  const tlsCfg = ctx.cfg.tls;
  if (!tlsCfg) return undefined;
  const read = (what: string, file: string) => {
    const full = path.resolve(configDir, file);
    try {
      return readFileSync(full);
    } catch (err) {
      throw new Error(`ftp cannot start: tls.${what} ${full} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
    }
  };
  const ownFiles = Boolean(tlsCfg.cert && tlsCfg.key);
  const pair = ownFiles ? { cert: read('cert', tlsCfg.cert!), key: read('key', tlsCfg.key!) } : certs?.defaultPair();
  if (!pair) {
    throw new Error(`ftp cannot start: ftp.tls names no cert/key and the certificate store has no default certificate (http.tls.certs/default.crt)`);
  }
  // RFC 4217 clients send SNI: the certificate is chosen by name from the store HTTPS uses. A name the
  // store only answers with its default gets the certificate of ftp.tls when one is named there.
  const sni = certs
    ? (name: string) => {
        const ctxFor = certs.contextFor(name, ctx.registry());
        return ownFiles && ctxFor === certs.contextFor(undefined, ctx.registry()) ? undefined : ctxFor;
      }
    : undefined;
  return { pair, newAcceptor: () => new TlsAcceptor(pair, sni) };
}
