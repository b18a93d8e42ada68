import tls, { type SecureContext } from 'node:tls';
import { ACME_CHALLENGE_PATH, type AcmeChallenges } from '../core/contracts.ts';
import type { Logger } from '../core/log.ts';
import type { Challenge, ChallengeType } from './client.ts';

/**
 * The pending challenges of the orders under way and how they are answered:
 * HTTP-01 through the HTTP service (by token, for its Host), TLS-ALPN-01
 * through its HTTPS listener (by server name; present only when that type
 * is configured).
 */
export function createChallengeAnswers(log: Logger, types: ChallengeType[]): { challenges: AcmeChallenges; create(c: Challenge): void; remove(c: Challenge): void } {
  const pending = new Map<string, Extract<Challenge, { type: 'http-01' }>>();
  const pendingAlpn = new Map<string, { token: string; context: SecureContext }>();
  const challenges: AcmeChallenges = {
    answer(req, res) {
      const url = req.url ?? '';
      if (!url.startsWith(ACME_CHALLENGE_PATH) || (req.method !== 'GET' && req.method !== 'HEAD')) return undefined;
      const c = pending.get(url.slice(ACME_CHALLENGE_PATH.length));
      const host = (req.headers.host ?? '').toLowerCase().replace(/:\d+$/, '').replace(/\.$/, '');
      if (!c || c.domain !== host) return undefined;
      const body = Buffer.from(c.keyAuthorization);
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length, 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
      log.info({ domain: c.domain, remote: req.socket.remoteAddress, challenge: 'http-01' }, 'ACME challenge answered');
      return { status: 200, bytes: req.method === 'HEAD' ? 0 : body.length };
    },
    ...(types.includes('tls-alpn-01')
      ? {
          tlsAlpn: {
            context: (servername: string) => pendingAlpn.get(servername.toLowerCase().replace(/\.$/, ''))?.context,
            answered: (domain: string, remote: string | undefined) => log.info({ domain, remote, challenge: 'tls-alpn-01' }, 'ACME challenge answered'),
          },
        }
      : {}),
  };
  return {
    challenges,
    create(c) {
      if (c.type === 'http-01') pending.set(c.token, c);
      else pendingAlpn.set(c.domain, { token: c.token, context: tls.createSecureContext({ cert: c.cert, key: c.key, minVersion: 'TLSv1.2' }) });
    },
    remove(c) {
      if (c.type === 'http-01') pending.delete(c.token);
      else if (pendingAlpn.get(c.domain)?.token === c.token) pendingAlpn.delete(c.domain);
    },
  };
}
