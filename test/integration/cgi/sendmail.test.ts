import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findExecutable } from '../../../src/lib/box.ts';
import { boxMissing, call, RecordingSubmitter, startCgiSuite, type CgiTestSuite } from '../../helpers/cgi.ts';

// A classic CGI script mails through /usr/sbin/sendmail -t inside its box:
// the message goes over the box's mail channel to the suite, which sends
// it only to the tenant's forms.recipients, as cgi.mail() does.

const PERL = `#!/usr/bin/perl
my $to = $ENV{QUERY_STRING} eq 'stranger' ? "evil\\@elsewhere.test" : "owner\\@a.test";
open(my $m, '|-', '/usr/sbin/sendmail -t -oi') or die "no sendmail: $!";
print $m "To: $to\\nFrom: Visitor <visitor\\@example.net>\\nSubject: Hello from Perl\\n\\nA line from the form.\\n";
close($m);
print "Content-Type: text/plain\\r\\n\\r\\nsendmail exit " . ($? >> 8) . "\\n";
`;
const SH = '#!/bin/sh\nprintf "To: owner@a.test\\nSubject: from sh\\n\\nhi\\n" | /usr/sbin/sendmail -t\nprintf "Content-Type: text/plain\\r\\n\\r\\nok %s\\n" "$?"\n';
// Text that reads as an RFC 2047 encoded word: a mail reader would decode it to a line break and a Bcc: line.
const WORDS = '#!/bin/sh\nprintf "To: owner@a.test\\nSubject: =?utf-8?q?hi=0D=0ABcc:_evil@elsewhere.test?=\\n\\nhi\\n" | /usr/sbin/sendmail -t\nprintf "Content-Type: text/plain\\r\\n\\r\\nok %s\\n" "$?"\n';
const WHICH = '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n"\nhead -c 4 /usr/sbin/sendmail | od -An -c | tr -d " \\n"\n';
const ARGS = '#!/bin/sh\nprintf "Subject: x\\n\\nhi\\n" | /usr/sbin/sendmail evil@elsewhere.test\nprintf "Content-Type: text/plain\\r\\n\\r\\nexit %s\\n" "$?"\n';

let s: CgiTestSuite;
const sink = new RecordingSubmitter();
beforeAll(async () => {
  s = await startCgiSuite({
    mail: sink,
    tenants: { 'a.test': { domains: ['a.test'], cgi: true, forms: { recipients: ['owner@a.test'] } } },
    files: { 'a.test/cgi-bin/contact.pl': PERL, 'a.test/cgi-bin/mail.sh': SH, 'a.test/cgi-bin/args.sh': ARGS, 'a.test/cgi-bin/which.sh': WHICH, 'a.test/cgi-bin/words.sh': WORDS },
  });
});
afterAll(async () => {
  await s?.stop();
});

describe.skipIf(boxMissing)('sendmail -t inside the box', () => {
  it('a Perl script piping to /usr/sbin/sendmail -t mails the tenant\'s recipient through the queue', async () => {
    const res = await call(s.http, 'a.test', '/cgi-bin/contact.pl');
    expect([res.status, (await res.text()).trim()]).toEqual([200, 'sendmail exit 0']);
    expect(sink.messages).toHaveLength(1);
    const raw = sink.messages[0]!.raw.toString();
    expect(sink.messages[0]!.to).toEqual(['owner@a.test']);
    expect(raw).toMatch(/^Subject: Hello from Perl/m);
    expect(raw).toMatch(/^Reply-To: visitor@example.net/m);
    expect(raw).toContain('A line from the form.');
  });

  it('a shell script does the same', async () => {
    const before = sink.messages.length;
    const res = await call(s.http, 'a.test', '/cgi-bin/mail.sh');
    expect([res.status, (await res.text()).trim()]).toEqual([200, 'ok 0']);
    expect(sink.messages.length).toBe(before + 1);
    expect(sink.messages.at(-1)!.raw.toString()).toMatch(/^Subject: from sh/m);
  });

  it('sends nothing to an address that is not one of forms.recipients, and says so in the log', async () => {
    const before = sink.messages.length;
    const res = await call(s.http, 'a.test', '/cgi-bin/contact.pl?stranger');
    expect(res.status).toBe(200);
    await res.text();
    expect(sink.messages.length).toBe(before);
    expect(s.logs().some((l) => String(l.why ?? l.message ?? '').includes('evil@elsewhere.test is not one of'))).toBe(true);
  });

  it('sends a subject that looks like an encoded word as the text it is, encoded itself: no reader decodes it into a line break', async () => {
    const before = sink.messages.length;
    const res = await call(s.http, 'a.test', '/cgi-bin/words.sh');
    expect((await res.text()).trim()).toBe('ok 0');
    expect(sink.messages.length).toBe(before + 1);
    const subject = /^Subject: (.*(?:\r\n .*)*)/m.exec(sink.messages.at(-1)!.raw.toString())![1]!;
    expect(subject).not.toContain('=?utf-8?q?');
    const words = [...subject.matchAll(/=\?UTF-8\?B\?([^?]*)\?=/g)].map((m) => Buffer.from(m[1]!, 'base64').toString('utf8'));
    expect(words.join('')).toBe('=?utf-8?q?hi=0D=0ABcc:_evil@elsewhere.test?=');
  });

  it('takes no recipients as arguments', async () => {
    const before = sink.messages.length;
    const res = await call(s.http, 'a.test', '/cgi-bin/args.sh');
    expect((await res.text()).trim()).toBe('exit 64');
    expect(sink.messages.length).toBe(before);
  });
});

describe.skipIf(boxMissing)('the example tenant\'s Perl contact form (sites/example.test/cgi-bin/contact.pl)', () => {
  it('shows its form, and mails a post to the site\'s recipient, then sends the visitor to the thank-you page', async () => {
    const { readFileSync } = await import('node:fs');
    const path = await import('node:path');
    const script = readFileSync(path.join(import.meta.dirname, '../../../sites/example.test/cgi-bin/contact.pl'));
    const box = new RecordingSubmitter();
    const t = await startCgiSuite({
      mail: box,
      tenants: { 'example.test': { domains: ['example.test'], cgi: true, forms: { recipients: ['alice@example.net'] } } },
      files: { 'example.test/cgi-bin/contact.pl': script },
    });
    try {
      const form = await call(t.http, 'example.test', '/cgi-bin/contact.pl');
      expect(form.status).toBe(200);
      expect(await form.text()).toContain('action="/cgi-bin/contact.pl"');
      const body = new URLSearchParams({ name: 'Vera\r\nBcc: x@evil.test', email: 'vera@visitor.test', message: 'Hello from the Perl form' }).toString();
      const res = await call(t.http, 'example.test', '/cgi-bin/contact.pl', { method: 'POST', body, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      expect([res.status, res.headers.location]).toEqual([302, '/thanks.html']);
      expect(box.messages).toHaveLength(1);
      expect(box.messages[0]!.to).toEqual(['alice@example.net']);
      const raw = box.messages[0]!.raw.toString();
      expect(raw).toMatch(/^Reply-To: vera@visitor.test/m);
      expect(raw).toContain('Hello from the Perl form');
      expect(raw).not.toMatch(/^Bcc:/m);
      // A robot filling in the honeypot: thanked, nothing sent.
      const bot = await call(t.http, 'example.test', '/cgi-bin/contact.pl', { method: 'POST', body: 'message=spam&homepage=http://spam.test', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      expect(bot.status).toBe(302);
      expect(box.messages).toHaveLength(1);
    } finally {
      await t.stop();
    }
  });
});

describe.skipIf(boxMissing)('which sendmail a box has', () => {
  // With box-init (built by cc) the persistent box's sendmail is box-init itself, one exec a mail; the tests above ran it.
  it('is box-init (an ELF program) in a persistent box, the shell script without one', async () => {
    const res = await call(s.http, 'a.test', '/cgi-bin/which.sh');
    expect((await res.text()).trim()).toBe(findExecutable('cc') ? '177ELF' : '#!/b');
  });
});
