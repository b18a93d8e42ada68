import { describe, expect, it } from 'vitest';
import { HandlerMail } from '../../../src/cgi/mail.ts';
import { createLogger } from '../../../src/core/log.ts';
import { RecordingSubmitter } from '../../helpers/cgi.ts';
import { registryOf } from '../../helpers/registry.ts';

const tenant = registryOf({ 'example.test': { domains: ['example.test'], forms: { recipients: ['alice@example.net'] } } }).tenants.get('example.test')!;
const message = { text: 'hello' };

describe("handler mail's hourly limit per visitor", () => {
  it('counts an IPv6 visitor by its /64 and an IPv4-mapped one as its IPv4 address', async () => {
    const sink = new RecordingSubmitter();
    const mail = new HandlerMail(sink, { perTenantPerHour: 100, perIpPerHour: 2 }, createLogger({ level: 'silent' }));
    const from = (remote: string) => mail.send({ tenant, remote, handler: 'formmail' }, message);
    expect(await from('2001:db8:1:2::1')).toMatchObject({ ok: true });
    expect(await from('2001:db8:1:2::2')).toMatchObject({ ok: true });
    // A third address of the same /64: the same visitor, over its allowance.
    expect(await from('2001:db8:1:2:ffff::3')).toMatchObject({ ok: false, code: 'rate' });
    // Another /64 is another visitor.
    expect(await from('2001:db8:1:3::1')).toMatchObject({ ok: true });
    expect(await from('192.0.2.7')).toMatchObject({ ok: true });
    expect(await from('::ffff:192.0.2.7')).toMatchObject({ ok: true });
    expect(await from('192.0.2.7')).toMatchObject({ ok: false, code: 'rate' });
    expect(sink.messages).toHaveLength(5);
  });
});
