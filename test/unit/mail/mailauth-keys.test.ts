// First import: the adapter must load before mailauth's own modules, which take their reference to getPublicKey when they load.
import { checkInbound, keptKeyHits, MAILAUTH_INTERNALS } from '../../../src/mail/mailauth.ts';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { suiteResolver } from '../../../src/core/dns.ts';
import { startDnsServer, type DnsServer } from '../../helpers/dnsserver.ts';

let dns: DnsServer;
let lookup: (name: string, type: string) => Promise<never>;

const record = (key: KeyObject) => {
  const r = `v=DKIM1; k=rsa; p=${key.export({ type: 'spki', format: 'der' }).toString('base64')}`;
  return [[r.slice(0, 255), r.slice(255)]];
};

async function signed(privateKey: KeyObject, subject: string): Promise<Buffer> {
  const { dkimSign } = await import('mailauth');
  const raw = `From: vera@keys.test\r\nTo: info@a.test\r\nSubject: ${subject}\r\nMessage-ID: <1@keys.test>\r\n\r\nHello.\r\n`;
  const s = await dkimSign(raw, { signatureData: [{ signingDomain: 'keys.test', selector: 'k1', privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }) }] } as never);
  return Buffer.from(s.signatures + raw);
}

beforeAll(async () => {
  dns = await startDnsServer();
  dns.zone.set('keys.test', { txt: [['v=spf1 ip4:127.0.0.1 -all']] });
  const resolver = suiteResolver({ servers: [`127.0.0.1:${dns.port}`], timeout: 1 });
  lookup = (name, type) => resolver.resolve(name, type) as Promise<never>;
});
afterAll(async () => {
  await dns?.close();
});

const options = { sender: 'vera@keys.test', ip: '127.0.0.1', helo: 'keys.test', hostname: 'mx.test' };

describe("inbound checks: a sender's key record read once per record text", () => {
  it('the second message reuses the key made of the record; a changed record is read anew; a bad one fails every time', async () => {
    expect(MAILAUTH_INTERNALS.tools).toHaveLength(1);
    const first = generateKeyPairSync('rsa', { modulusLength: 2048 });
    dns.zone.set('k1._domainkey.keys.test', { txt: record(first.publicKey) });
    const message = await signed(first.privateKey, 'one');
    const before = keptKeyHits.count;
    expect(await checkInbound(message, { ...options, resolver: lookup })).toMatchObject({ dkim: ['pass'] });
    expect(await checkInbound(message, { ...options, resolver: lookup })).toMatchObject({ dkim: ['pass'] });
    // mailauth's DKIM check still reads keys through the adapter: an upgrade that stops doing so fails here.
    expect(keptKeyHits.count - before).toBe(1);

    // The sender rotates its key under the same selector: the record's new text is what counts, at once.
    const second = generateKeyPairSync('rsa', { modulusLength: 2048 });
    dns.zone.set('k1._domainkey.keys.test', { txt: record(second.publicKey) });
    expect(await checkInbound(message, { ...options, resolver: lookup })).toMatchObject({ dkim: ['fail'] });
    expect(await checkInbound(await signed(second.privateKey, 'two'), { ...options, resolver: lookup })).toMatchObject({ dkim: ['pass'] });

    dns.zone.set('k1._domainkey.keys.test', { txt: [['v=DKIM1; k=rsa; p=not*base64']] });
    for (let i = 0; i < 2; i++) expect((await checkInbound(message, { ...options, resolver: lookup })).dkim).toEqual(['neutral']);
  });
});
