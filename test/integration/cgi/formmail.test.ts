import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { boxMissing, call, RecordingSubmitter, startCgiSuite, type CgiTestSuite } from '../../helpers/cgi.ts';

// Tests stop at the MailSubmitter boundary (a recording submitter): the
// durable queue is another service, wired in by main.ts.

const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const form = (fields: Array<[string, string]>) => new URLSearchParams(fields).toString();
const mailer = readFileSync(path.join(import.meta.dirname, '../../fixtures/cgi/mailer.js'));

/** Header block and decoded body of a queued message. */
function parse(raw: Buffer): { headers: string; body: string } {
  const text = raw.toString('utf8');
  const split = text.indexOf('\r\n\r\n');
  const body = text
    .slice(split + 4)
    .replace(/=\r\n/g, '')
    .replace(/(?:=[0-9A-F]{2})+/g, (m) => Buffer.from(m.replace(/=/g, ''), 'hex').toString('utf8'))
    .replace(/\r\n/g, '\n');
  return { headers: text.slice(0, split), body };
}

describe.skipIf(boxMissing)('FormMail', () => {
  let s: CgiTestSuite;
  const sink = new RecordingSubmitter();
  const post = (body: string, headers: Record<string, string> = FORM, host = 'example.test') =>
    call(s.http, host, '/cgi-bin/formmail', { method: 'POST', body, headers });

  beforeAll(async () => {
    s = await startCgiSuite({
      mail: sink,
      main: { cgi: { mailPerIpPerHour: 1000, mailPerHour: 1000, maxBody: '32KiB' } },
      tenants: {
        'example.test': { domains: ['example.test', 'www.example.test'], forms: { recipients: ['alice@example.net', 'bob@example.net'] }, cgi: true },
        'bare.test': { domains: ['bare.test'] },
      },
      files: { 'example.test/cgi-bin/mailer.js': mailer },
    });
  });
  afterAll(async () => s?.stop());

  it('mails the form to the first allowed recipient, fields in form order, from a site address', async () => {
    const before = sink.messages.length;
    const res = await post(
      form([
        ['name', 'Vera Visitor'],
        ['email', 'vera@visitor.test'],
        ['subject', 'Hello from the form – ünïcode'],
        ['message', 'line one\nline two'],
        ['zeta', 'last'],
      ]),
      { ...FORM, referer: 'http://elsewhere.test/forged.html' },
    );
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('Thank you');
    expect(sink.messages.length).toBe(before + 1);
    const msg = sink.messages.at(-1)!;
    expect(msg).toMatchObject({ from: 'forms@example.test', to: ['alice@example.net'], tenant: 'example.test' });
    const { headers, body } = parse(msg.raw);
    expect(headers).toMatch(/^From: example\.test forms <forms@example\.test>$/m);
    expect(headers).toMatch(/^To: alice@example\.net$/m);
    expect(headers).toMatch(/^Reply-To: vera@visitor\.test$/m);
    expect(headers).toMatch(/^Subject: =\?UTF-8\?B\?/m);
    const order = ['name: Vera Visitor', 'email: vera@visitor.test', 'subject: Hello', 'message: line one\n    line two', 'zeta: last'].map((l) => body.indexOf(l));
    expect(order.every((i) => i >= 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    expect(s.logs().some((l) => l.msg === 'form mail queued' && l.tenant === 'example.test')).toBe(true);
  });

  it('lets a recipient field pick among the allowed addresses only; anything else is refused and nothing sent', async () => {
    const before = sink.messages.length;
    expect((await post(form([['recipient', 'bob@example.net'], ['m', 'x']]))).status).toBe(200);
    expect(sink.messages.at(-1)!.to).toEqual(['bob@example.net']);
    const refused = await post(form([['recipient', 'victim@attacker.test'], ['m', 'x']]));
    expect(refused.status).toBe(400);
    expect(await refused.text()).toContain('nothing was sent');
    expect(sink.messages.length).toBe(before + 1);
    expect(s.logs().some((l) => l.msg === 'handler mail refused' && l.code === 'recipient')).toBe(true);
  });

  it('refuses CR/LF in any field that becomes a header, and sends nothing', async () => {
    const before = sink.messages.length;
    for (const [k, v] of [
      ['subject', 'hi\r\nBcc: victim@attacker.test'],
      ['email', 'vera@visitor.test\nBcc: victim@attacker.test'],
      ['recipient', 'alice@example.net\r\nCc: victim@attacker.test'],
    ] as const) {
      const res = await post(form([[k, v], ['m', 'x']]));
      expect(res.status).toBe(400);
    }
    expect(sink.messages.length).toBe(before);
  });

  it('the suite itself refuses header injection and foreign recipients whatever a handler asks', async () => {
    const before = sink.messages.length;
    const ask = async (m: unknown) => (await call(s.http, 'example.test', '/cgi-bin/mailer', { method: 'POST', body: JSON.stringify(m) })).json();
    expect(await ask({ subject: 'x\r\nBcc: v@attacker.test', text: 't' })).toMatchObject({ ok: false, code: 'header' });
    expect(await ask({ replyTo: 'a@b.test\nBcc: v@attacker.test', text: 't' })).toMatchObject({ ok: false, code: 'header' });
    expect(await ask({ to: ['alice@example.net', 'v@attacker.test'], text: 't' })).toMatchObject({ ok: false, code: 'recipient' });
    expect(await ask({ to: 'alice@example.net\r\n', text: 't' })).toMatchObject({ ok: false, code: 'header' });
    expect(await ask({ text: 't', headers: { Bcc: 'v@attacker.test' } })).toMatchObject({ ok: false, code: 'invalid' });
    expect(sink.messages.length).toBe(before);
    expect(await ask({ to: ['ALICE@example.net'], text: 'fine' })).toMatchObject({ ok: true, to: ['alice@example.net'] });
    expect(sink.messages.length).toBe(before + 1);
  });

  it('sets Reply-To only for a valid address', async () => {
    expect((await post(form([['email', 'not an address'], ['m', 'x']]))).status).toBe(200);
    expect(parse(sink.messages.at(-1)!.raw).headers).not.toMatch(/^Reply-To:/m);
  });

  it('quietly drops a submission that fills the honeypot field', async () => {
    const before = sink.messages.length;
    const res = await post(form([['homepage', 'http://spam.test'], ['m', 'buy']]));
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('Thank you');
    expect(sink.messages.length).toBe(before);
  });

  it('redirects with 303 only to a page of the same site', async () => {
    const ok = await post(form([['redirect', '/thanks.html'], ['m', 'x']]));
    expect(ok.status).toBe(303);
    // Relative: the browser keeps the scheme, host and port it used.
    expect(ok.headers.location).toBe('/thanks.html');
    const www = await post(form([['redirect', 'http://www.example.test/t'], ['m', 'x']]));
    expect(www.status).toBe(303);
    expect(www.headers.location).toBe('http://www.example.test/t');
    const port = await post(form([['redirect', 'https://www.example.test/t'], ['m', 'x']]), FORM, `example.test:${s.port}`);
    expect(port.headers.location).toBe(`http://www.example.test:${s.port}/t`);
    for (const target of ['http://attacker.test/', '//attacker.test/x', 'javascript:alert(1)', 'http://example.test@attacker.test/', '/\\attacker.test', '\\\\attacker.test', '/%2F%2Fattacker.test']) {
      const res = await post(form([['redirect', target], ['m', 'x']]));
      expect(res.status).toBe(200);
      expect(res.headers.location).toBeUndefined();
      expect(await res.text()).toContain('Thank you');
    }
  });

  it('answers GET with 405 and a short help text', async () => {
    const res = await call(s.http, 'example.test', '/cgi-bin/formmail');
    expect(res.status).toBe(405);
    expect(res.headers.allow).toBe('POST');
    expect(await res.text()).toContain('mails a form to the owner');
  });

  it('refuses malformed bodies with 400 and oversized ones with 413', async () => {
    const before = sink.messages.length;
    expect((await post('a=%zz&b=1')).status).toBe(400);
    expect((await post('a=%E0%A4&b=1')).status).toBe(400);
    const mp = (b: string) => ({ 'content-type': `multipart/form-data; boundary=${b}` });
    expect((await post('--XX\r\nContent-Disposition: form-data; name="a"\r\n\r\nno end', mp('XX'))).status).toBe(400);
    expect((await post('garbage', { 'content-type': 'multipart/form-data' })).status).toBe(400);
    expect((await post('{}', { 'content-type': 'application/json' })).status).toBe(415);
    expect((await post(`m=${'x'.repeat(40 * 1024)}`)).status).toBe(413);
    expect(sink.messages.length).toBe(before);
  });

  it('accepts multipart/form-data, naming uploaded files without attaching them', async () => {
    const body =
      '--B1\r\nContent-Disposition: form-data; name="name"\r\n\r\nMulti Part\r\n' +
      '--B1\r\nContent-Disposition: form-data; name="cv"; filename="cv.pdf"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4\r\n' +
      '--B1--\r\n';
    const res = await post(body, { 'content-type': 'multipart/form-data; boundary=B1' });
    expect(res.status).toBe(200);
    const { body: text } = parse(sink.messages.at(-1)!.raw);
    expect(text).toContain('name: Multi Part');
    expect(text).toContain('cv: (file "cv.pdf", 8 bytes, not attached)');
  });

  it('refuses a site without forms.recipients', async () => {
    const res = await post(form([['m', 'x']]), FORM, 'bare.test');
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('no form recipients');
  });

  it('stores each submission in state; `makewaves forms <tenant>` lists them', async () => {
    const res = await post(form([['subject', 'For the log'], ['m', 'logged text']]));
    expect(res.status).toBe(200);
    const last = s.state.forms.list('example.test').at(-1)!;
    expect(last).toMatchObject({ tenant: 'example.test', handler: 'formmail', recipients: ['alice@example.net'], subject: 'For the log', remote: '127.0.0.1' });
    expect(last.text).toContain('m: logged text');
    const bin = path.join(import.meta.dirname, '../../../bin/makewaves.js');
    const cli = spawnSync(process.execPath, [bin, 'forms', 'example.test', '-c', path.join(s.dir, 'config'), '--full'], { encoding: 'utf8' });
    expect(cli.status).toBe(0);
    expect(cli.stdout).toContain('"For the log"');
    expect(cli.stdout).toContain('    m: logged text');
    const unknown = spawnSync(process.execPath, [bin, 'forms', 'nobody.test', '-c', path.join(s.dir, 'config')], { encoding: 'utf8' });
    expect(unknown.status).toBe(1);
    expect(unknown.stderr).toContain('no tenant "nobody.test"');
  });

  it('answers 503 when the queue fails', async () => {
    sink.fail = true;
    try {
      const res = await post(form([['m', 'x']]));
      expect(res.status).toBe(503);
      expect(s.logs().some((l) => l.msg === 'form mail could not be queued')).toBe(true);
    } finally {
      sink.fail = false;
    }
  });
});

describe.skipIf(boxMissing)('FormMail limits and missing queue', () => {
  it('rate-limits per visitor IP and per tenant with 429', async () => {
    const sink = new RecordingSubmitter();
    const s = await startCgiSuite({
      mail: sink,
      main: { cgi: { mailPerIpPerHour: 2, mailPerHour: 3 } },
      tenants: { 'example.test': { domains: ['example.test'], forms: { recipients: ['alice@example.net'] } } },
    });
    try {
      // A visitor address per call: loopback has all of 127/8.
      const post = (i: number) =>
        new Promise<number>((resolve, reject) => {
          const u = new URL(s.http);
          const req = http.request(
            { host: u.hostname, port: u.port, path: '/cgi-bin/formmail', method: 'POST', localAddress: `127.0.0.${i + 1}`, headers: { host: 'example.test', ...FORM } },
            (res) => {
              res.resume();
              res.on('end', () => resolve(res.statusCode ?? 0));
            },
          );
          req.on('error', reject);
          req.end('m=hello');
        });
      expect([await post(0), await post(0), await post(0)]).toEqual([200, 200, 429]);
      expect(await post(1)).toBe(200); // another visitor: the tenant's third
      expect(await post(2)).toBe(429); // the tenant's hourly allowance is used up
      expect(sink.messages).toHaveLength(3);
    } finally {
      await s.stop();
    }
  });

  it('answers a clear 503 page when the suite has no mail queue', async () => {
    const s = await startCgiSuite({ tenants: { 'example.test': { domains: ['example.test'], forms: { recipients: ['alice@example.net'] } } } });
    try {
      const res = await call(s.http, 'example.test', '/cgi-bin/formmail', { method: 'POST', body: 'm=x', headers: FORM });
      expect(res.status).toBe(503);
      expect(await res.text()).toContain('Sending mail is not available on this server; nothing was sent.');
    } finally {
      await s.stop();
    }
  });
});
