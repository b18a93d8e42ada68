import { execFile, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import { generate } from 'selfsigned';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tlsProblems } from '../../../src/cli/commands/check.ts';
import { loadConfig } from '../../../src/core/config/load.ts';
import { rawRequest } from '../../helpers/http.ts';
import { startSink, smtpPort, type MailSink } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import nodemailer from 'nodemailer';
import { Client } from 'basic-ftp';
import { Readable } from 'node:stream';
import { hashPassword } from '../../../src/lib/password.ts';

const execFileP = promisify(execFile);
let t: TestSuite;
let httpsUrl: URL;
const certsDir = () => path.join(t.dir, 'certs');
const pem = (name: string) => readFileSync(path.join(certsDir(), `${name}.crt`));

/** One HTTPS GET that verifies the server's certificate against `ca` for `servername`. */
function get(servername: string, ca: Buffer, p = '/'): Promise<{ status: number; headers: Record<string, unknown>; body: string; subject: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: httpsUrl.hostname, port: httpsUrl.port, path: p, servername, ca, headers: { host: servername }, agent: false },
      (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, subject: String((res.socket as tls.TLSSocket).getPeerCertificate().subject?.CN ?? '') }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

async function makeCert(names: string[], opts: { notBefore?: Date; notAfter?: Date } = {}) {
  return generate([{ name: 'commonName', value: names[0]! }], {
    keyType: 'ec',
    algorithm: 'sha256',
    ...(opts.notBefore ? { notBeforeDate: opts.notBefore } : {}),
    ...(opts.notAfter ? { notAfterDate: opts.notAfter } : {}),
    extensions: [{ name: 'subjectAltName', altNames: names.map((value) => ({ type: 2 as const, value })) }],
  });
}

let sink: MailSink;

beforeAll(async () => {
  sink = await startSink();
  t = await startTestSuite({
    main: {
      http: { tls: { listen: ['127.0.0.1:0'], certs: '../certs', selfSigned: true } },
      smtp: { listen: ['127.0.0.1:0'], relay: sink.url },
      ftp: { tls: { required: true } },
    },
    tenants: {
      'a.test': { domains: ['a.test', 'www.a.test'], https: { redirect: true, hsts: 31536000 }, mail: { forward: { info: ['owner@elsewhere.test'] } } },
      'b.test': { domains: ['b.test'], ftp: [{ user: 'bo', password: await hashPassword('tls-only-secret') }] },
    },
    files: { 'a.test/index.html': 'site A', 'b.test/index.html': 'site B' },
  });
  httpsUrl = new URL(t.suite.urls.http!.find((u) => u.startsWith('https:'))!);
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

describe('HTTPS by SNI', () => {
  it('gives each tenant its own certificate, verified by the client', async () => {
    const a = await get('a.test', pem('a.test'));
    expect(a).toMatchObject({ status: 200, body: 'site A', subject: 'a.test' });
    const www = await get('www.a.test', pem('a.test'));
    expect(www.body).toBe('site A');
    const b = await get('b.test', pem('b.test'));
    expect(b).toMatchObject({ status: 200, body: 'site B', subject: 'b.test' });
    // a.test's certificate is not b.test's: verification with the wrong CA fails.
    await expect(get('b.test', pem('a.test'))).rejects.toThrow(/self[- ]signed|unable to verify|Hostname\/IP does not match/i);
  });

  it('redirects plain HTTP to HTTPS (308) and sends HSTS for a tenant that asks, and not for others', async () => {
    const r = await rawRequest(t.http, '/page.html?x=1', { host: 'A.test:8080' });
    expect(r.status).toBe(308);
    expect(r.headers.location).toBe(`https://a.test:${httpsUrl.port}/page.html?x=1`);
    // An absolute-form target chooses the tenant, and so the redirect's host: a different Host header cannot steer it.
    const forged = await rawRequest(t.http, 'http://a.test/x?y', { host: 'evil.test' });
    expect(forged.status).toBe(308);
    expect(forged.headers.location).toBe(`https://a.test:${httpsUrl.port}/x?y`);
    // The path follows the same rule as every other Location: one "/" first, no empty segments.
    const doubled = await rawRequest(t.http, '//evil.test//x?//y', { host: 'a.test' });
    expect(doubled.headers.location).toBe(`https://a.test:${httpsUrl.port}/evil.test/x?//y`);
    expect((await rawRequest(t.http, '/', { host: 'b.test' })).status).toBe(200);
    expect((await get('a.test', pem('a.test'))).headers['strict-transport-security']).toBe('max-age=31536000');
    expect((await get('b.test', pem('b.test'))).headers['strict-transport-security']).toBeUndefined();
  });

  it('refuses TLS older than 1.2', async () => {
    const err = await new Promise<Error | undefined>((resolve) => {
      const s = tls.connect({ host: httpsUrl.hostname, port: Number(httpsUrl.port), servername: 'a.test', maxVersion: 'TLSv1.1', minVersion: 'TLSv1', rejectUnauthorized: false });
      s.on('secureConnect', () => {
        s.destroy();
        resolve(undefined);
      });
      s.on('error', resolve);
    });
    expect(err).toBeInstanceOf(Error);
  });

  it('takes a renewed certificate without a restart', async () => {
    const fresh = await makeCert(['b.test']);
    writeFileSync(path.join(certsDir(), 'b.test.key'), fresh.private);
    writeFileSync(path.join(certsDir(), 'b.test.crt'), fresh.cert);
    expect(t.suite.reload()).toBe(true);
    const b = await get('b.test', Buffer.from(fresh.cert));
    expect(b.body).toBe('site B');
  });
});

describe('SNI and Host naming different tenants (RFC 9110 §15.5.20)', () => {
  /** curl over real TLS: the SNI is the URL's host (resolved to the suite), the Host header given apart. */
  async function curl(sni: string, host: string | undefined, extra: string[] = []) {
    const url = `https://${sni}:${httpsUrl.port}/`;
    const args = ['-sk', '--max-time', '10', '--http1.1', '--resolve', `${sni}:${httpsUrl.port}:127.0.0.1`, '-w', '\n%{http_code}', ...(host ? ['-H', `Host: ${host}`] : []), ...extra, url];
    const { stdout } = await execFileP('curl', args);
    const nl = stdout.lastIndexOf('\n');
    return { status: Number(stdout.slice(nl + 1)), body: stdout.slice(0, nl) };
  }

  const TABLE: Array<[string, string | undefined, number, string]> = [
    ['b.test', 'a.test', 421, 'This server does not host the site you asked for.'],
    ['a.test', 'b.test', 421, 'This server does not host the site you asked for.'],
    ['www.a.test', 'B.TEST.', 421, 'This server does not host the site you asked for.'],
    ['a.test', 'b.test:443', 421, 'This server does not host the site you asked for.'],
    ['a.test', 'www.a.test', 200, 'site A'], // one tenant, two of its names
    ['A.TEST', 'a.test', 200, 'site A'],
    ['b.test', undefined, 200, 'site B'],
    ['127.0.0.1', 'a.test', 200, 'site A'], // no SNI for an address
    ['nobody.test', 'a.test', 200, 'site A'], // the TLS name is no tenant's
    ['a.test', 'nobody.test', 404, 'Nothing is published at this address.'],
  ];
  it.each(TABLE)('SNI %s, Host %s → %i', async (sni, host, status, body) => {
    const r = await curl(sni, host);
    expect(r.status).toBe(status);
    expect(r.body).toContain(body);
  });

  it('refuses an absolute-form target that names another tenant than the SNI', async () => {
    const r = await curl('b.test', undefined, ['--request-target', `https://a.test:${httpsUrl.port}/`]);
    expect(r.status).toBe(421);
  });

  it('logs the refusal under the tenant of the Host', async () => {
    await curl('b.test', 'a.test');
    expect(t.logs().some((l) => l.msg === 'request refused' && l.why === 'TLS name b.test is another tenant than the Host')).toBe(true);
  });

  it('serves an h2c offer made over TLS as HTTP/1.1 (the offer is ignored)', async () => {
    const r = await curl('b.test', undefined, ['-H', 'Connection: Upgrade, HTTP2-Settings', '-H', 'Upgrade: h2c', '-H', 'HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA']);
    expect(r).toEqual({ status: 200, body: 'site B' });
  });
});

describe('SMTP STARTTLS from the same store', () => {
  it('offers STARTTLS with the default certificate, verified by the client, and accepts mail over it', async () => {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: smtpPort(t.suite),
      secure: false,
      requireTLS: true,
      tls: { ca: pem('default'), servername: 'mx.test' },
    });
    const info = await transport.sendMail({ from: 'sender@visitor.test', to: 'info@a.test', subject: 'over TLS', text: 'secret words' });
    expect(info.accepted).toEqual(['info@a.test']);
    transport.close();
    const msg = await waitFor(() => sink.messages.find((m) => m.raw.toString().includes('secret words')), 10_000, 'the relayed message');
    expect(msg.to).toEqual(['owner@elsewhere.test']);
    expect(msg.raw.toString()).toMatch(/^Received: from [^\n]*\r\n\tby mx\.test \(makewaves\) with ESMTPS id /m);
  });
});

describe('FTPS from the same store', () => {
  it('requires AUTH TLS before login and verifies with the default certificate', async () => {
    const u = new URL(t.ftp!);
    const plain = new Client();
    await expect(plain.access({ host: u.hostname, port: Number(u.port), user: 'bo@b.test', password: 'tls-only-secret' })).rejects.toThrow(/530|TLS/i);
    plain.close();
    const c = new Client();
    await c.access({ host: u.hostname, port: Number(u.port), user: 'bo@b.test', password: 'tls-only-secret', secure: true, secureOptions: { ca: pem('default'), servername: 'mx.test' } });
    await c.uploadFrom(Readable.from(['uploaded over FTPS']), 'ftps.txt');
    c.close();
    expect((await get('b.test', pem('b.test'), '/ftps.txt')).body).toBe('uploaded over FTPS');
  });
});

describe('FTPS with lftp (GnuTLS), which starts the data TLS after the 150', () => {
  // lftp, in its own process, sends its ClientHello the moment it reads the 234 to AUTH TLS. It used
  // to hang there about one session in five: the command reader consumed the ClientHello before
  // ftp-srv's handler wrapped the socket, some ticks after writing the 234. This test caught it.
  it('uploads, lists and downloads over FTPS with lftp and the default certificate', async () => {
    const u = new URL(t.ftp!);
    writeFileSync(path.join(t.dir, 'lftp-up.html'), 'uploaded by lftp over FTPS');
    const script = [
      'set ftp:ssl-force true',
      `set ssl:ca-file ${path.join(certsDir(), 'default.crt')}`,
      'set ssl:check-hostname no',
      'set net:max-retries 1',
      'set net:timeout 10',
      `put ${path.join(t.dir, 'lftp-up.html')} -o lftp-up.html`,
      'cls',
      `get lftp-up.html -o ${path.join(t.dir, 'lftp-back.html')}`,
      'quit',
    ].join('; ');
    // Not execFileSync: the suite under test runs in this process and must keep answering.
    const { stdout } = await execFileP('lftp', ['-u', 'bo@b.test,tls-only-secret', '-p', u.port, '-e', script, u.hostname], { timeout: 30_000 });
    expect(stdout.split('\n')).toContain('lftp-up.html');
    expect(readFileSync(path.join(t.dir, 'lftp-back.html'), 'utf8')).toBe('uploaded by lftp over FTPS');
    expect((await get('b.test', pem('b.test'), '/lftp-up.html')).body).toBe('uploaded by lftp over FTPS');
  });
});

describe('makewaves check on certificates', () => {
  it('reports expired, mismatched and wrong-name certificates', async () => {
    const expired = await makeCert(['b.test'], { notBefore: new Date(Date.now() - 3 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) });
    writeFileSync(path.join(certsDir(), 'b.test.key'), expired.private);
    writeFileSync(path.join(certsDir(), 'b.test.crt'), expired.cert);
    const other = await makeCert(['a.test', 'www.a.test']);
    writeFileSync(path.join(certsDir(), 'a.test.key'), other.private); // key of another certificate
    const wrongName = await makeCert(['elsewhere.test']);
    writeFileSync(path.join(certsDir(), 'www.a.test.key'), wrongName.private);
    writeFileSync(path.join(certsDir(), 'www.a.test.crt'), wrongName.cert);
    const { problems } = tlsProblems(loadConfig(t.configDir));
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/b\.test\.crt: expired on \d{4}-\d{2}-\d{2}/),
        expect.stringMatching(/a\.test\.key: does not match a\.test\.crt/),
        expect.stringMatching(/www\.a\.test\.crt: does not cover www\.a\.test/),
      ]),
    );
  });
});

describe('TLS renegotiation refused on every listener (TLS 1.2; TLS 1.3 has none)', () => {
  /**
   * openssl s_client over TLS 1.2: once the handshake is done, an "R" line
   * asks for a renegotiation (done on the next write), then `line` is sent.
   * Resolves with the server's answer to `line`, or 'closed' when the
   * server ended the connection instead.
   */
  function renegotiate(args: string[], line: string, answer: RegExp): Promise<string> {
    return new Promise((resolve, reject) => {
      const child = spawn('openssl', ['s_client', '-tls1_2', '-crlf', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      let step: 'handshake' | 'renegotiating' | 'answer' = 'handshake';
      const settle = (v: string) => {
        child.stdin.destroy();
        child.kill();
        resolve(v);
      };
      child.on('error', reject);
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        if (step === 'handshake' && /Verify return code: .*\n---\n/s.test(out)) {
          step = 'renegotiating';
          child.stdin.write('R\n');
        } else if (step === 'answer') {
          const m = out.slice(out.lastIndexOf('---\n')).match(answer);
          if (m) settle(m[0]);
        }
      });
      child.stderr.on('data', (c: Buffer) => {
        err += c.toString();
        if (step === 'renegotiating' && err.includes('RENEGOTIATING')) {
          step = 'answer';
          child.stdin.write(`${line}\n`);
        }
      });
      child.on('close', () => settle('closed'));
    });
  }
  const refusals = () => t.logs().filter((l) => l.msg === 'TLS renegotiation refused; connection closed');

  it('HTTPS closes a connection that asks to renegotiate, logging who asked; requests still work', async () => {
    const before = refusals().length;
    const r = await renegotiate(['-connect', `127.0.0.1:${httpsUrl.port}`, '-servername', 'a.test'], 'HEAD / HTTP/1.1\nHost: a.test\n', /HTTP\/1\.1 \d+/);
    expect(r).toBe('closed');
    const logged = await waitFor(() => refusals().slice(before).find((l) => l.svc === 'http'), 5_000, 'the refusal logged');
    expect(logged.remote).toBe('127.0.0.1');
    expect((await get('a.test', pem('a.test'))).body).toBe('site A');
  });

  it('SMTP closes a STARTTLS connection that asks to renegotiate, logging who asked; mail over TLS still works', async () => {
    const before = refusals().length;
    const r = await renegotiate(['-connect', `127.0.0.1:${smtpPort(t.suite)}`, '-starttls', 'smtp', '-servername', 'mx.test'], 'NOOP', /^250[ -].*$/m);
    expect(r).toBe('closed');
    const logged = await waitFor(() => refusals().slice(before).find((l) => l.svc === 'smtp'), 5_000, 'the refusal logged');
    expect(logged.remote).toBe('127.0.0.1');
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort(t.suite), secure: false, requireTLS: true, tls: { ca: pem('default'), servername: 'mx.test' } });
    const info = await transport.sendMail({ from: 'sender@visitor.test', to: 'info@a.test', subject: 'after a renegotiation', text: 'still fine' });
    expect(info.accepted).toEqual(['info@a.test']);
    transport.close();
  });
});
