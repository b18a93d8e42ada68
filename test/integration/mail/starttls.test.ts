import { connect } from 'node:net';
import { connect as connectTls, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import { starttlsSubject } from '../../helpers/tls.ts';

let t: TestSuite;
let smtpUrl: URL;

beforeAll(async () => {
  t = await startTestSuite({
    tenants: {
      'one.test': { domains: ['one.test', 'www.one.test'] },
      'two.test': { domains: ['two.test'] },
    },
    // The suite's certificate store (self-signed certificates for each tenant and a default one): STARTTLS is offered from it.
    main: { http: { tls: { listen: ['127.0.0.1:0'], certs: '../certs', selfSigned: true } }, smtp: { listen: ['127.0.0.1:0'] } },
  });
  smtpUrl = new URL(t.suite.urls.smtp![0]!);
});
afterAll(async () => {
  await t?.stop();
});

/** The subject of the certificate the SMTP listener presents after STARTTLS, asked for `servername` (none: no SNI). */
function subjectFor(servername: string | undefined): Promise<string> {
  return starttlsSubject('smtp', smtpUrl.href, servername);
}

describe('SMTP STARTTLS chooses its certificate by SNI, from the store HTTPS uses', () => {
  it.each([
    ['one.test', 'CN = one.test'],
    ['www.one.test', 'CN = one.test'],
    ['two.test', 'CN = two.test'],
    ['unknown.test', 'CN = mx.test'],
    [undefined, 'CN = mx.test'],
  ])('SNI %s → %s', async (servername, subject) => {
    expect(await subjectFor(servername)).toBe(subject);
  });

  it("follows a reload: a domain added to a tenant gets the tenant's certificate", async () => {
    expect(await subjectFor('alias.test')).toBe('CN = mx.test');
    t.writeTenant('one.test', { domains: ['one.test', 'www.one.test', 'alias.test'] });
    await waitFor(() => t.suite.registry().tenantForHost('alias.test'), 5_000, 'the reload');
    expect(await subjectFor('alias.test')).toBe('CN = one.test');
  });
});

describe('SMTP refuses TLS renegotiation after STARTTLS (TLS 1.2; TLS 1.3 has none)', () => {
  /** Connects, says EHLO and STARTTLS, and returns the TLS socket (TLS 1.2 at most). */
  async function startTls(): Promise<TLSSocket> {
    const raw = connect(Number(smtpUrl.port), smtpUrl.hostname);
    let buf = '';
    const replyTo = (line?: string) =>
      new Promise<string>((resolve, reject) => {
        const onData = (d: Buffer) => {
          buf += d.toString();
          // A reply ends with a line whose code is followed by a space.
          const m = /(^|\r\n)(\d{3}) [^\r\n]*\r\n$/.exec(buf);
          if (!m) return;
          raw.off('data', onData);
          const all = buf;
          buf = '';
          resolve(all);
        };
        raw.on('data', onData);
        raw.once('error', reject);
        if (line) raw.write(`${line}\r\n`);
      });
    expect(await replyTo()).toMatch(/^220 /);
    expect(await replyTo('EHLO client.test')).toMatch(/250[ -]STARTTLS/);
    expect(await replyTo('STARTTLS')).toMatch(/^220 /);
    const secure = connectTls({ socket: raw, rejectUnauthorized: false, servername: 'one.test', maxVersion: 'TLSv1.2' });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    return secure;
  }

  it('the connection is closed and the refusal logged with who', async () => {
    const secure = await startTls();
    secure.on('error', () => undefined); // the server's close may reach the client as a reset: what matters is that it is closed
    const result = await new Promise<'renegotiated' | 'refused' | 'closed'>((resolve) => {
      secure.once('end', () => resolve('closed'));
      secure.once('close', () => resolve('closed'));
      const started = secure.renegotiate({ rejectUnauthorized: false }, (err) => resolve(err ? 'refused' : 'renegotiated'));
      if (!started) resolve('refused');
    });
    expect(result).not.toBe('renegotiated');
    const line = await waitFor(() => t.logs().find((l) => l.msg === 'TLS renegotiation refused; connection closed' && l.svc === 'smtp'), 5_000, 'the log line');
    expect(line).toMatchObject({ why: 'renegotiation', remote: '127.0.0.1' });
    secure.destroy();
  });
});
