import { generateKeyPairSync } from 'node:crypto';
import { dkimSign } from 'mailauth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/core/log.ts';
import { createInboundPool, type InboundPool } from '../../../src/mail/inbound-pool.ts';
import { checkInbound } from '../../../src/mail/mailauth.ts';
import { startDnsServer, type DnsServer } from '../../helpers/dnsserver.ts';

let dns: DnsServer;
let pool: InboundPool;
let message: Buffer;

beforeAll(async () => {
  dns = await startDnsServer();
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const record = `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;
  dns.zone.set('good.test', { txt: [['v=spf1 ip4:127.0.0.1 -all']] });
  dns.zone.set('_dmarc.good.test', { txt: [['v=DMARC1; p=reject']] });
  dns.zone.set('t1._domainkey.good.test', { txt: [[record.slice(0, 255), record.slice(255)]] });
  const raw = 'From: vera@good.test\r\nTo: info@a.test\r\nSubject: checked in a thread\r\nMessage-ID: <1@good.test>\r\n\r\nHello.\r\n';
  const signed = await dkimSign(raw, { signatureData: [{ signingDomain: 'good.test', selector: 't1', privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }) }] } as never);
  message = Buffer.from(signed.signatures + raw);
  pool = createInboundPool({ dns: { servers: [`127.0.0.1:${dns.port}`], timeout: 1 }, log: createLogger({ level: 'silent' }), timeout: 30 });
});
afterAll(async () => {
  await pool?.close();
  await dns?.close();
});

const options = { sender: 'vera@good.test', ip: '127.0.0.1', helo: 'good.test', hostname: 'mx.test' };

describe('inbound checks: DNS', () => {
  it('asks for the SPF, DKIM key and DMARC records at once, not one after the other', async () => {
    const resolver = (await import('../../../src/core/dns.ts')).suiteResolver({ servers: [`127.0.0.1:${dns.port}`], timeout: 1 });
    const asked: string[] = [];
    let releaseKey!: () => void;
    const keyHeld = new Promise<void>((r) => (releaseKey = r));
    const lookup = async (name: string, type: string) => {
      asked.push(`${type} ${name}`);
      // The DKIM key's answer is held back: mailauth, which asks it first, waits for it before asking anything else.
      if (name === 't1._domainkey.good.test') await keyHeld;
      return resolver.resolve(name, type) as Promise<never>;
    };
    const result = checkInbound(message, { ...options, resolver: lookup });
    expect(asked).toEqual(expect.arrayContaining(['TXT good.test', 'TXT t1._domainkey.good.test', 'TXT _dmarc.good.test']));
    releaseKey();
    expect(await result).toMatchObject({ spf: 'pass', dkim: ['pass'], dmarc: { result: 'pass' } });
    // Each name was asked of the resolver once for this message.
    expect(asked.filter((a) => a === 'TXT _dmarc.good.test')).toHaveLength(1);
  });
});

describe('inbound checks: DNS answers kept for a while', () => {
  it('asks a record once while it is kept, "none" too; a timeout is asked again; after maxAge it is asked again', async () => {
    const { cachedLookup, suiteResolver } = await import('../../../src/core/dns.ts');
    const resolver = suiteResolver({ servers: [`127.0.0.1:${dns.port}`], timeout: 0.2 });
    let clock = 0;
    const asked: string[] = [];
    const lookup = cachedLookup(
      (name, type) => {
        asked.push(name);
        return resolver.resolve(name, type);
      },
      { maxAgeMs: 60_000, maxEntries: 100, now: () => clock },
    );
    dns.zone.set('kept.test', { txt: [['v=spf1 -all']] });
    dns.zone.set('quiet.test', { silent: true });
    const first = (await lookup('kept.test', 'TXT')) as string[][];
    first[0]![0] = 'changed by its caller';
    expect(await lookup('KEPT.test', 'TXT')).toEqual([['v=spf1 -all']]);
    await expect(lookup('missing.test', 'TXT')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(lookup('missing.test', 'TXT')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(lookup('quiet.test', 'TXT')).rejects.toMatchObject({ code: 'ETIMEOUT' });
    await expect(lookup('quiet.test', 'TXT')).rejects.toMatchObject({ code: 'ETIMEOUT' });
    expect(asked).toEqual(['kept.test', 'missing.test', 'quiet.test', 'quiet.test']);
    dns.zone.set('kept.test', { txt: [['v=spf1 +all']] });
    clock = 60_000;
    expect(await lookup('kept.test', 'TXT')).toEqual([['v=spf1 +all']]);
  });
});

describe("inbound checks: the sender's public keys parsed once", () => {
  it('mailauth gets the same parsed key for the same record, and still verifies (and fails a message whose signed Subject: changed)', async () => {
    const { keepParsedPublicKeys, parsedKeyHits, MAILAUTH_INTERNALS } = await import('../../../src/mail/mailauth.ts');
    expect(MAILAUTH_INTERNALS.crypto).toHaveLength(2);
    const { createRequire } = await import('node:module');
    const crypto = createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto');
    keepParsedPublicKeys();
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const pem = Buffer.from(publicKey.export({ type: 'spki', format: 'pem' }));
    expect(crypto.createPublicKey({ key: pem, format: 'pem' })).toBe(crypto.createPublicKey({ key: Buffer.from(pem), format: 'pem' }));
    const resolver = (await import('../../../src/core/dns.ts')).suiteResolver({ servers: [`127.0.0.1:${dns.port}`], timeout: 1 });
    const lookup = (name: string, type: string) => resolver.resolve(name, type) as Promise<never>;
    const before = parsedKeyHits.count;
    for (let i = 0; i < 2; i++) expect(await checkInbound(message, { ...options, resolver: lookup })).toMatchObject({ dkim: ['pass'] });
    // mailauth still hands the key over in both shapes the cache takes: an upgrade that stops doing so fails here.
    expect(parsedKeyHits.count - before).toBeGreaterThanOrEqual(2);
    const changed = Buffer.from(message.toString('latin1').replace('checked in a thread', 'changed on the way'), 'latin1');
    expect(await checkInbound(changed, { ...options, resolver: lookup })).toMatchObject({ dkim: ['fail'] });
  });
});

describe('inbound checks in a worker thread', () => {
  it('finds what checkInbound() finds on the event loop (its own resolver asks the dns: servers)', async () => {
    const resolver = (await import('../../../src/core/dns.ts')).suiteResolver({ servers: [`127.0.0.1:${dns.port}`], timeout: 1 });
    const here = await checkInbound(message, { ...options, resolver: (name, type) => resolver.resolve(name, type) as Promise<never> });
    const there = await pool.check(message, { ...options, resolver: () => Promise.reject(new Error('not used')) });
    expect(there).toMatchObject({ spf: 'pass', dkim: ['pass'], dmarc: { result: 'pass', policy: 'reject' }, aligned: 'dmarc', fromDomain: 'good.test', temporary: false });
    expect(there).toEqual(here);
  });

  it("seals in the thread with the key sent once, a rotated key from its next message on; the caller's buffers stay whole", async () => {
    const key = (bits: number) => generateKeyPairSync('rsa', { modulusLength: bits }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const [k1, k2] = [key(2048), key(2048)];
    const prefix = Buffer.from('Received: from good.test ([127.0.0.1])\r\n\tby mx.test (makewaves) with ESMTP id Q1;\r\n\tMon, 7 Dec 2026 04:00:00 +0000\r\n');
    // A small Buffer is a slice of Node's shared pool: what the pool hands the thread must not take it away.
    const raw = Buffer.from(message);
    const neighbour = Buffer.from('next in the pool');
    const seal = (selector: string, privateKey: string) => ({ ...options, resolver: undefined as never, seal: { selector, privateKey, prefix } });
    const first = await Promise.all([pool.check(raw, seal('a1', k1)), pool.check(raw, seal('a1', k1)), pool.check(raw, seal('a1', k1))]);
    for (const a of first) expect(a.arcSet).toMatch(/^ARC-Seal: i=1; a=rsa-sha256; t=\d+; cv=none; d=mx.test;\r\n s=a1; b=/);
    expect(raw.equals(message)).toBe(true);
    expect(prefix.toString()).toMatch(/^Received: from good.test/);
    expect(neighbour.toString()).toBe('next in the pool');
    const rotated = await Promise.all([pool.check(raw, seal('a2', k2)), pool.check(raw, seal('a2', k2))]);
    for (const a of rotated) expect(a.arcSet).toMatch(/ s=a2; b=/);
    // Not a key: no set from the thread (the event loop then seals the message itself); the checks' results still come.
    const broken = await pool.check(raw, seal('a3', 'not a key'));
    expect(broken).toMatchObject({ dkim: ['pass'] });
    expect(broken.arcSet).toBeUndefined();
  });

  it('a check the thread never answers is rejected when the thread is ended (the message then counts as not authenticated)', async () => {
    dns.zone.set('slow.test', { silent: true });
    // Asked, never answered: the thread would wait on the silent DNS server.
    const rejected = expect(pool.check(message, { ...options, sender: 'vera@slow.test', helo: 'slow.test', resolver: undefined as never })).rejects.toThrow('inbound checks thread stopped');
    await pool.close();
    await rejected;
  });

  it('checks many messages at once, and starts a new thread after close()', async () => {
    const all = await Promise.all(Array.from({ length: 20 }, () => pool.check(message, { ...options, resolver: undefined as never })));
    expect(new Set(all.map((a) => a.aligned))).toEqual(new Set(['dmarc']));
    await pool.close();
    expect((await pool.check(message, { ...options, resolver: undefined as never })).dkim).toEqual(['pass']);
  });
});
