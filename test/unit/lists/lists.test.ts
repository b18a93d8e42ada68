import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../../src/core/config/load.ts';
import { tenantSchema } from '../../../src/core/config/schema.ts';
import { verpDecode, verpEncode } from '../../../src/core/listaddr.ts';
import type { RcptRoute } from '../../../src/core/registry.ts';
import { registryOf } from '../../helpers/registry.ts';
import { composeNotice, decodeWords, displayName, firstAddress, headerText, isAutomatic, phrase, plainText, splitMessage } from '../../../src/lists/message.ts';
import { esc } from '../../../src/lists/pages.ts';

const reg = registryOf({
  'a.test': {
    domains: ['a.test', 'www.a.test'],
    mail: { forward: { info: 'x@remote.test' }, catchAll: 'catch@remote.test', lists: { news: { owner: 'owner@remote.test' }, own: { owner: 'info@a.test' } } },
  },
});

function show(r: RcptRoute): string {
  if (!r.ok) return r.reason;
  return r.kind === 'list' ? `list ${r.list} ${r.role} ${r.param}`.trim() : `forward ${r.targets.join(',')}`;
}

describe('list addresses in the registry', () => {
  it.each([
    ['news@a.test', 'list news post'],
    ['NEWS@www.a.test', 'list news post'],
    ['news-request@a.test', 'list news request'],
    ['news-subscribe@a.test', 'list news subscribe'],
    ['news-unsubscribe@a.test', 'list news unsubscribe'],
    ['news-confirm+0123abcd@a.test', 'list news confirm 0123abcd'],
    ['news-bounces+bob=x.test@a.test', 'list news bounces bob=x.test'],
    ['news-bounces@a.test', 'list news bounces'],
    ['news-confirm@a.test', 'list news confirm'],
    ['news-owner@a.test', 'forward owner@remote.test'],
    // An owner on a hosted domain is expanded like any forward.
    ['own-owner@a.test', 'forward x@remote.test'],
    // Not list addresses: the catch-all decides.
    ['news+tag@a.test', 'forward catch@remote.test'],
    ['news-request+x@a.test', 'forward catch@remote.test'],
    ['news-nothing@a.test', 'forward catch@remote.test'],
    ['news@other.test', 'relay-denied'],
  ])('%s → %s', (addr, want) => {
    expect(show(reg.route(addr))).toBe(want);
  });

  it('listConfig finds only lists the tenant has, never prototype keys', () => {
    const t = reg.tenants.get('a.test')!;
    expect(reg.listConfig(t, 'news')?.posting).toBe('members');
    expect(reg.listConfig(t, 'constructor')).toBeUndefined();
    expect(reg.listConfig(t, 'nope')).toBeUndefined();
  });
});

describe('list config', () => {
  function problems(tenant: string): string[] {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'cfg-'));
    try {
      mkdirSync(path.join(dir, 'tenants'));
      writeFileSync(path.join(dir, 'makewaves.yaml'), 'hostname: mx.test\nhttp:\n  listen: ["127.0.0.1:0"]\n');
      writeFileSync(path.join(dir, 'tenants', 'a.test.yaml'), tenant);
      loadConfig(dir);
      return [];
    } catch (err) {
      if (err instanceof ConfigError) return [...err.problems];
      throw err;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('fills the defaults', () => {
    const c = tenantSchema.parse({ domains: ['a.test'], mail: { lists: { news: { owner: 'o@x.test' } } } }).mail!.lists.news!;
    expect(c).toEqual({ owner: 'o@x.test', posting: 'members', nonMembers: 'hold', description: '', replyTo: 'poster', fromMunging: 'dmarc', archive: false, bounceThreshold: 5 });
  });

  it('refuses a forward or another list that shadows a list address, bad values and unknown keys', () => {
    const bad = problems('domains: [a.test]\nmail:\n  lists:\n    news: { owner: o@x.test, fromMunging: sometimes, webUrl: "http://a.test/path", typo: 1 }\n');
    expect(bad.some((l) => /fromMunging/.test(l))).toBe(true);
    expect(bad.some((l) => /webUrl/.test(l))).toBe(true);
    expect(bad.some((l) => /typo: unknown key/.test(l))).toBe(true);
    expect(problems('domains: [a.test]\nmail:\n  forward:\n    News-Request: x@y.test\n  lists:\n    news: { owner: o@x.test }\n')).toEqual([
      expect.stringMatching(/mail\.forward\.News-Request: "News-Request" is an address of the mailing list "news"/),
    ]);
    expect(problems('domains: [a.test]\nmail:\n  lists:\n    news: { owner: o@x.test }\n    news-confirm: { owner: o@x.test }\n')).toEqual([
      expect.stringMatching(/mail\.lists\.news-confirm: its address "news-confirm" is also an address of list "news"/),
    ]);
  });
});

describe('VERP', () => {
  it.each(['bob@x.test', 'bob+tag@sub.x.test', 'a=b@x.test'])('round-trips %s', (a) => {
    expect(verpDecode(verpEncode(a))).toBe(a);
  });
  it.each(['', 'nobody', 'bob=', '=x.test', 'bob=x', 'bob=x..test/'])('refuses %j', (p) => {
    expect(verpDecode(p)).toBeUndefined();
  });
});

describe('message handling', () => {
  const raw = Buffer.from('From: "Ann \\"A\\" Example" <Ann@Remote.test>\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n folded\r\nX-Other: 1\r\n\r\nbody\r\n');

  it('splits header fields (folded kept raw) from the body', () => {
    const m = splitMessage(raw);
    expect(m.fields.map((f) => f.name)).toEqual(['from', 'subject', 'x-other']);
    expect(m.fields[1]!.raw).toBe('Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n folded\r\n');
    expect(m.body.toString()).toBe('body\r\n');
    expect(splitMessage(Buffer.from('\r\nonly body')).fields).toEqual([]);
    expect(splitMessage(Buffer.from('Subject: no body\r\n')).body.length).toBe(0);
  });

  it('finds the poster and the display name; decodes encoded words', () => {
    const from = '"Ann \\"A\\" Example" <Ann@Remote.test>';
    expect(firstAddress(from)).toBe('ann@remote.test');
    expect(firstAddress('plain@x.test (comment)')).toBe('plain@x.test');
    expect(firstAddress('no address here')).toBeUndefined();
    expect(firstAddress('<a@b@c>')).toBeUndefined();
    expect(displayName(from)).toBe('Ann "A" Example');
    expect(decodeWords('=?UTF-8?B?R3LDvMOfZQ==?= =?ISO-8859-1?Q?=E9t=E9?=')).toBe('Grüßeété');
  });

  it('encodes header text: ASCII as is, controls removed, other text as encoded words', () => {
    expect(headerText('plain')).toBe('plain');
    expect(headerText('a\r\nBcc: x')).toBe('a  Bcc: x');
    expect(decodeWords(headerText('Grüße aus Köln'))).toBe('Grüße aus Köln');
    expect(phrase('Ann "A"')).toBe('"Ann \\"A\\""');
  });

  it('tells automatic mail apart', () => {
    const f = (h: string) => splitMessage(Buffer.from(`${h}\r\n\r\n`)).fields;
    expect(isAutomatic('', f('Subject: x'))).toBe('null envelope sender');
    expect(isAutomatic('a@b.test', f('Auto-Submitted: auto-replied'))).toMatch(/Auto-Submitted/);
    expect(isAutomatic('a@b.test', f('Auto-Submitted: no'))).toBeUndefined();
    expect(isAutomatic('a@b.test', f('Precedence: bulk'))).toMatch(/Precedence/);
    expect(isAutomatic('a@b.test', f('X-Autoreply: yes'))).toBe('auto-responder header');
    expect(isAutomatic('a@b.test', f('Subject: hi'))).toBeUndefined();
  });

  it('reads the text of plain, quoted-printable, base64 and multipart mail', () => {
    const t = (s: string) => plainText(splitMessage(Buffer.from(s)));
    expect(t('Subject: x\r\n\r\nsubscribe\r\n')).toBe('subscribe\r\n');
    expect(t('Content-Transfer-Encoding: quoted-printable\r\n\r\nsub=\r\nscribe =C3=A9\r\n')).toBe('subscribe é\r\n');
    expect(t(`Content-Transfer-Encoding: base64\r\n\r\n${Buffer.from('help').toString('base64')}\r\n`)).toBe('help');
    expect(t('Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nunsubscribe\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b--\r\n')).toBe('unsubscribe\r\n');
    expect(t('Content-Type: text/html\r\n\r\n<p>x</p>')).toBe('');
  });

  it('composes a notice with CRLF lines, RFC 3834 marking and safe headers', () => {
    const n = composeNotice({ from: 'l-request@a.test', to: 'x@y.test', subject: 'Grüße', text: 'line 1\nline 2', domain: 'a.test', now: 0, headers: ['Reply-To: r@a.test'] }).toString();
    expect(n).toMatch(/^From: l-request@a\.test\r\nTo: x@y\.test\r\nSubject: =\?UTF-8\?B\?[^?]+\?=\r\nDate: Thu, 01 Jan 1970 00:00:00 \+0000\r\nMessage-ID: <[^>]+@a\.test>\r\n/);
    expect(n).toContain('\r\nAuto-Submitted: auto-replied\r\nReply-To: r@a.test\r\n\r\nline 1\r\nline 2\r\n');
    expect(n).not.toMatch(/[^\r]\n/);
  });

  it('escapes HTML', () => {
    expect(esc(`<a href="x" onclick='y'>&`)).toBe('&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;');
  });
});
