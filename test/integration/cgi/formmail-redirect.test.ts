import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boxMissing } from '../../helpers/cgi.ts';
import { startSink, type MailSink } from '../../helpers/mailsink.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';

// FormMail's redirect after a sent form keeps the scheme, host and port the
// visitor used: a browser behind :8080 or on HTTPS lands on the page, not on
// a connection error (after which a retry would send the form twice).
// Driven with curl following the redirect, as a browser would.

const execFileP = promisify(execFile);
let t: TestSuite;
let sink: MailSink;

beforeAll(async () => {
  sink = await startSink();
  t = await startTestSuite({
    main: {
      smtp: { listen: ['127.0.0.1:0'], relay: sink.url },
      http: { tls: { listen: ['127.0.0.1:0'], certs: '../certs', selfSigned: true } },
    },
    tenants: { 'example.test': { domains: ['example.test', 'www.example.test'], forms: { recipients: ['alice@example.net'] } } },
    files: { 'example.test/thanks.html': 'thanks for writing' },
  });
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

/** POSTs a form with curl, following redirects; returns the final URL, its status and body. */
async function submit(base: string, redirect: string): Promise<{ url: string; code: string; body: string }> {
  const port = new URL(base).port;
  const scheme = new URL(base).protocol;
  const { stdout } = await execFileP('curl', [
    '-sS', '-k', '-L', '--max-redirs', '3',
    '--resolve', `example.test:${port}:127.0.0.1`,
    '--resolve', `www.example.test:${port}:127.0.0.1`,
    '--data', new URLSearchParams({ message: 'hello', redirect }).toString(),
    '-w', '\n%{url_effective} %{http_code}',
    `${scheme}//example.test:${port}/cgi-bin/formmail`,
  ]);
  const nl = stdout.lastIndexOf('\n');
  const [url, code] = stdout.slice(nl + 1).split(' ');
  return { url: url!, code: code!, body: stdout.slice(0, nl) };
}

describe.skipIf(boxMissing)('FormMail redirect keeps what the visitor used', () => {
  const bases = () => ({ http: t.suite.urls.http!.find((u) => u.startsWith('http:'))!, https: t.suite.urls.http!.find((u) => u.startsWith('https:'))! });

  it.each(['http', 'https'] as const)('over %s on a non-default port, to a path of the same site', async (kind) => {
    const base = bases()[kind];
    const port = new URL(base).port;
    expect(port).not.toMatch(/^(80|443)$/);
    const res = await submit(base, '/thanks.html');
    expect(res).toEqual({ url: `${kind}://example.test:${port}/thanks.html`, code: '200', body: 'thanks for writing' });
  });

  it.each(['http', 'https'] as const)('over %s, to another of the tenant\'s domains', async (kind) => {
    const base = bases()[kind];
    const port = new URL(base).port;
    const res = await submit(base, 'http://www.example.test/thanks.html');
    expect(res).toEqual({ url: `${kind}://www.example.test:${port}/thanks.html`, code: '200', body: 'thanks for writing' });
  });
});
