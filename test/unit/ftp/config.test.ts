import { describe, expect, it } from 'vitest';
import { mainSchema } from '../../../src/core/config/schema.ts';

const base = { hostname: 'mx.test', http: { listen: '127.0.0.1:0' } };

describe('ftp config keys', () => {
  it('fills the defaults', () => {
    const c = mainSchema.parse({ ...base, ftp: { listen: '127.0.0.1:2121' } });
    expect(c.ftp).toMatchObject({
      idleTimeout: 300,
      maxConnections: 200,
      maxConnectionsPerIp: 10,
      lockout: { failures: 5, windowSeconds: 600, lockSeconds: 300 },
      quotaRescan: '17 * * * *',
      transferLog: { keepDays: 14 },
    });
    expect(c.ftp?.tls).toBeUndefined();
  });

  it.each([
    [{ passive: { address: 'ftp.example.test', ports: '30000-30049' } }, /not an IPv4 address/],
    [{ passive: { address: '::1', ports: '30000-30049' } }, /not an IPv4 address/],
    [{ passive: { address: '127.0.0.1', ports: '30049-30000' } }, /low port/],
    [{ passive: { address: '127.0.0.1', ports: '20-21' } }, /1024 or above/],
    [{ passive: { address: '127.0.0.1', ports: '30000-70000' } }, /65535/],
    [{ idleTimeout: 0 }, /./],
    [{ tls: { cert: 'a.pem' } }, /./],
    [{ lockout: { failures: 5, extra: 1 } }, /extra/],
  ])('refuses %j', (ftp, message) => {
    const r = mainSchema.safeParse({ ...base, ftp: { listen: '127.0.0.1:2121', ...ftp } });
    expect(r.success).toBe(false);
    expect(r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n')).toMatch(message);
  });
});
