import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MailSink, startRelaySuite, stopRelaySuite } from '../../helpers/mailsink.ts';
import { waitFor, type TestSuite } from '../../helpers/suite.ts';
import { headersOf, mailTo, msg, sendMail, web } from './helpers.ts';

let sink: MailSink;
let t: TestSuite;
let port: number;

beforeAll(async () => {
  ({ sink, t, port } = await startRelaySuite({
    smtp: { maxMessageBytes: 20_000 },
    tenants: {
      'a.test': {
        domains: ['a.test'],
        mail: { lists: { pub: { owner: 'o@remote.test', posting: 'open', archive: true, webUrl: 'http://a.test' }, priv: { owner: 'o@remote.test', posting: 'open' } } },
      },
    },
  }));
  t.suite.state.lists.addMember('a.test', 'pub', 'reader@remote.test', 'single', Date.now());
  t.suite.state.lists.addMember('a.test', 'priv', 'reader@remote.test', 'single', Date.now());
});
afterAll(() => stopRelaySuite(t, sink));

describe('archive pages', () => {
  it('shows months, threads and posts as escaped text with addresses obfuscated; a hostile HTML post never runs', async () => {
    const before = sink.messages.length;
    const hostile =
      'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nHi <script>alert(document.cookie)</script> write to secret@hidden.test\r\n' +
      '--b\r\nContent-Type: text/html\r\n\r\n<img src=x onerror=alert(1)>\r\n--b--\r\n';
    await sendMail(port, 'evil@remote.test', 'pub@a.test', `From: evil@remote.test\r\nTo: pub@a.test\r\nSubject: <b>bold</b> topic\r\nMIME-Version: 1.0\r\n${hostile}`);
    const copy = await mailTo(sink, 'reader@remote.test', /topic/, before);
    expect(headersOf(copy).get('list-archive')).toEqual(['<http://a.test/lists/pub/archive/>']);
    await sendMail(port, 'ann@remote.test', 'pub@a.test', msg('ann@remote.test', 'pub@a.test', 'Re: <b>bold</b> topic', 'a reply\r\n'));
    await mailTo(sink, 'reader@remote.test', /Re: /, before);
    await waitFor(() => t.suite.state.lists.inboxIds().length === 0, 5_000, 'an empty inbox');

    const month = new Date().toISOString().slice(0, 7);
    const index = await web(t, 'a.test', '/lists/pub/archive/');
    expect(index.status).toBe(200);
    expect(index.body.toString()).toContain(`<a href="/lists/pub/archive/${month}/">${month}</a> (2)`);

    const threads = (await web(t, 'a.test', `/lists/pub/archive/${month}/`)).body.toString();
    // One thread: the reply sits under the first post.
    expect(threads.match(/<li>/g)).toHaveLength(1);
    expect(threads).toContain('&lt;b&gt;bold&lt;/b&gt; topic');
    expect(threads).not.toContain('<b>bold</b>');
    expect(threads).not.toContain('evil@remote.test');
    expect(threads).toContain('evil (at) r…');

    const id = /href="\/lists\/pub\/archive\/\d{4}-\d\d\/(\d+)"/.exec(threads)![1]!;
    const post = await web(t, 'a.test', `/lists/pub/archive/${month}/${id}`);
    const html = post.body.toString();
    expect(post.status).toBe(200);
    expect(html).toContain('Hi &lt;script&gt;alert(document.cookie)&lt;/script&gt; write to secret (at) h…');
    expect(html).not.toMatch(/<script|<img|onerror|secret@hidden\.test|hidden\.test/);
    expect(post.headers['content-security-policy']).toContain("default-src 'none'");
  });

  it('has no archive for a list without archive: true, nor for junk paths', async () => {
    const month = new Date().toISOString().slice(0, 7);
    expect((await web(t, 'a.test', '/lists/priv/archive/')).status).toBe(404);
    expect((await web(t, 'a.test', `/lists/pub/archive/${month}/999999`)).status).toBe(404);
    // An encoded slash is refused by the HTTP service's path parsing before any list code runs.
    expect((await web(t, 'a.test', '/lists/pub/archive/..%2f/')).status).toBe(400);
    expect((await web(t, 'a.test', '/lists/pub/archive/x/1/2')).status).toBe(404);
    expect((await web(t, 'a.test', '/lists/pub/archive/2000-01/')).status).toBe(404);
    expect((await web(t, 'a.test', '/lists/pub/archive/', 'POST', 'x')).status).toBe(405);
  });
});

describe('limits and reload', () => {
  it('refuses a post over smtp.maxMessageBytes with 552 and keeps nothing', async () => {
    await expect(sendMail(port, 'ann@remote.test', 'pub@a.test', msg('ann@remote.test', 'pub@a.test', 'big', `${'x'.repeat(78)}\r\n`.repeat(400)))).rejects.toThrow(/552 5\.3\.4/);
    expect(t.suite.state.lists.inboxIds()).toEqual([]);
  });

  it('a list removed from the config loses its addresses and pages at the next reload', async () => {
    t.writeTenant('a.test', { domains: ['a.test'], mail: { lists: { priv: { owner: 'o@remote.test', posting: 'open' } } } });
    await waitFor(() => !t.suite.registry().route('pub@a.test').ok, 5_000, 'the reload');
    await expect(sendMail(port, 'ann@remote.test', 'pub@a.test', msg('ann@remote.test', 'pub@a.test', 'gone'))).rejects.toThrow(/550 5\.1\.1/);
    expect((await web(t, 'a.test', '/lists/pub/')).status).toBe(404);
    expect((await web(t, 'a.test', '/lists/priv/')).status).toBe(200);
  });
});
