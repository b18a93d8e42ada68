import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsServer, type DnsServer } from '../../helpers/dnsserver.ts';
import { type MailSink, startRelaySuite, stopRelaySuite } from '../../helpers/mailsink.ts';
import { rawRequest } from '../../helpers/http.ts';
import { waitFor, type TestSuite } from '../../helpers/suite.ts';
import { headersOf, logged, mailTo, msg, sendMail, subjectOf, tokenOf, web } from './helpers.ts';

let sink: MailSink;
let t: TestSuite;
let port: number;
let dns: DnsServer;
const OWNER = 'owner@remote.test';

beforeAll(async () => {
  // The members' domain lets 127.0.0.1 send its mail (SPF): their posts are authenticated, as `posting: members` needs.
  dns = await startDnsServer();
  dns.zone.set('remote.test', { txt: [['v=spf1 ip4:127.0.0.1 -all']] });
  ({ sink, t, port } = await startRelaySuite({
    // A second HTTP listener on an IPv6 socket bound to 127.0.0.1's mapped address: it sees this client as ::ffff:127.0.0.1, as a dual-stack [::] listener does.
    main: { dns: { servers: [`127.0.0.1:${dns.port}`], timeout: 1 }, http: { listen: ['127.0.0.1:0', '[::ffff:127.0.0.1]:0'] } },
    tenants: {
      'a.test': {
        domains: ['a.test', 'www.a.test'],
        mail: {
          forward: { info: ['alice@remote.test'] },
          lists: {
            news: { owner: OWNER, posting: 'members', subjectPrefix: '[news]', description: 'News of A', webUrl: 'http://a.test' },
            mod: { owner: OWNER, posting: 'moderated', fromMunging: 'always' },
            strict: { owner: OWNER, posting: 'members', nonMembers: 'reject' },
          },
        },
      },
      'b.test': { domains: ['b.test'], mail: { forward: {} } },
    },
    files: { 'a.test/lists/other/index.html': 'tenant page', 'b.test/lists/news/index.html': 'b page' },
  }));
});
afterAll(async () => {
  await stopRelaySuite(t, sink);
  await dns?.close();
});

const members = (list: string) => t.suite.state.lists.members('a.test', list).map((m) => m.address);

/** Subscribes `address` the way a person does: a mail to -request, then a reply to the confirmation. */
async function subscribe(address: string, list = 'news', mode = ''): Promise<void> {
  const before = sink.messages.length;
  await sendMail(port, address, `${list}-request@a.test`, msg(address, `${list}-request@a.test`, `subscribe${mode ? ` ${mode}` : ''}`));
  const c = await mailTo(sink, address, /^confirm [0-9a-f]{32}$/, before);
  const replyTo = headersOf(c).get('reply-to')![0]!;
  expect(replyTo).toBe(`${list}-confirm+${tokenOf(c)}@a.test`);
  await sendMail(port, address, replyTo, msg(address, replyTo, `Re: ${subjectOf(c)}`, '> quoted text\r\n'));
  await mailTo(sink, address, /^Welcome to /, before);
  expect(members(list)).toContain(address);
}

describe('list addresses at RCPT time', () => {
  it('accepts every list address, refuses look-alikes with 550 5.1.1', async () => {
    for (const a of ['news@a.test', 'news-request@www.a.test', 'news-owner@a.test', 'news-subscribe@a.test', 'news-unsubscribe@a.test', 'news-confirm+abc@a.test', 'news-bounces+x=y.test@a.test']) {
      expect(await sendMail(port, 'x@elsewhere.test', a, msg('x@elsewhere.test', a, 'noop'))).toMatch(/^250 /);
    }
    await expect(sendMail(port, 'x@elsewhere.test', 'news-nothing@a.test', msg('x@elsewhere.test', 'n@a.test', 'x'))).rejects.toThrow(/550 5\.1\.1/);
    await expect(sendMail(port, 'x@elsewhere.test', 'news-request+x@a.test', msg('x@elsewhere.test', 'n@a.test', 'x'))).rejects.toThrow(/550 5\.1\.1/);
    await expect(sendMail(port, 'x@elsewhere.test', 'news@b.test', msg('x@elsewhere.test', 'n@b.test', 'x'))).rejects.toThrow(/550 5\.1\.1/);
  });

  it('forwards news-owner to the owner', async () => {
    const before = sink.messages.length;
    await sendMail(port, 'x@elsewhere.test', 'news-owner@a.test', msg('x@elsewhere.test', 'news-owner@a.test', 'to the owner'));
    const m = await mailTo(sink, OWNER, /^to the owner$/, before);
    expect(m.from).toMatch(/^SRS0=/);
  });
});

describe('subscribe, confirm, post', () => {
  it('subscribes two people by mail, each confirming, and both get a post with the list headers', async () => {
    await subscribe('ann@remote.test');
    await subscribe('bob@remote.test');
    const before = sink.messages.length;
    expect(await sendMail(port, 'ann@remote.test', 'news@a.test', msg('Ann <ann@remote.test>', 'news@a.test', 'first post', 'body text\r\n', 'Approved: secret\r\n'))).toMatch(/^250 /);
    for (const who of ['ann@remote.test', 'bob@remote.test']) {
      const m = await mailTo(sink, who, /first post/, before);
      expect(m.to).toEqual([who]);
      // VERP: the member's own address in the envelope sender.
      expect(m.from).toBe(`news-bounces+${who.replace('@', '=')}@a.test`);
      const h = headersOf(m);
      expect(h.get('subject')).toEqual(['[news] first post']);
      expect(h.get('list-id')).toEqual(['"News of A" <news.a.test>']);
      expect(h.get('list-post')).toEqual(['<mailto:news@a.test>']);
      expect(h.get('list-help')).toEqual(['<mailto:news-request@a.test?subject=help>']);
      expect(h.get('list-subscribe')).toEqual(['<mailto:news-request@a.test?subject=subscribe>, <http://a.test/lists/news/>']);
      expect(h.get('list-unsubscribe')![0]).toMatch(/^<mailto:news-request@a\.test\?subject=unsubscribe>, <http:\/\/a\.test\/lists\/news\/unsubscribe\/[A-Za-z0-9_-]+\/[A-Za-z0-9_-]{22}>$/);
      expect(h.get('list-unsubscribe-post')).toEqual(['List-Unsubscribe=One-Click']);
      expect(h.get('precedence')).toEqual(['list']);
      expect(h.has('approved')).toBe(false);
      expect(h.get('from')).toEqual(['Ann <ann@remote.test>']);
      expect(m.raw.toString().endsWith('\r\n\r\nbody text\r\n')).toBe(true);
    }
    // Each member's unsubscribe URL is their own.
    const urls = ['ann@remote.test', 'bob@remote.test'].map((w) => headersOf(sink.messages.slice(before).find((m) => m.to[0] === w)!).get('list-unsubscribe')![0]);
    expect(urls[0]).not.toBe(urls[1]);
  });

  it('subscribes through the web form: GET of the confirm link changes nothing, POST confirms', async () => {
    const page = await web(t, 'a.test', '/lists/news/');
    expect(page.status).toBe(200);
    expect(page.body.toString()).toContain('<form method="post"');
    expect(page.headers['set-cookie']).toBeUndefined();
    const before = sink.messages.length;
    const r = await web(t, 'www.a.test', '/lists/news/', 'POST', 'email=Cat%40Remote.test&action=subscribe');
    expect(r.status).toBe(200);
    expect(r.body.toString()).toContain('Check your mail');
    const c = await mailTo(sink, 'cat@remote.test', /^confirm /, before);
    const link = /http:\/\/a\.test(\/lists\/news\/confirm\/[0-9a-f]{32})/.exec(c.raw.toString())![1]!;
    const get = await web(t, 'a.test', link);
    expect(get.status).toBe(200);
    expect(get.body.toString()).toContain('<button>Confirm</button>');
    expect(members('news')).not.toContain('cat@remote.test');
    const post = await web(t, 'a.test', link, 'POST', '');
    expect(post.status).toBe(200);
    expect(members('news')).toContain('cat@remote.test');
    await mailTo(sink, 'cat@remote.test', /^Welcome/, before);
    // Used once: the same link is dead now.
    expect((await web(t, 'a.test', link, 'POST', '')).status).toBe(404);
  });

  it('a digest member gets no single posts but a multipart/digest', async () => {
    await subscribe('dan@remote.test', 'news', 'digest');
    expect(t.suite.state.lists.member('a.test', 'news', 'dan@remote.test')!.mode).toBe('digest');
    const before = sink.messages.length;
    await sendMail(port, 'ann@remote.test', 'news@a.test', msg('ann@remote.test', 'news@a.test', 'for the digest', 'digest body\r\n'));
    await mailTo(sink, 'bob@remote.test', /for the digest/, before);
    expect(sink.messages.slice(before).some((m) => m.to.includes('dan@remote.test'))).toBe(false);
    await t.suite.lists!.sendDigests();
    const dg = await mailTo(sink, 'dan@remote.test', /news digest/, before);
    const h = headersOf(dg);
    expect(h.get('content-type')![0]).toMatch(/^multipart\/digest; boundary="digest-[0-9a-f]+"$/);
    expect(h.get('list-id')).toEqual(['<news.a.test>']);
    expect(dg.from).toBe('news-bounces+dan=remote.test@a.test');
    expect(dg.raw.toString()).toContain('Subject: [news] for the digest');
    expect(dg.raw.toString()).toContain('digest body');
  });
});

describe('posting policy', () => {
  it('holds a non-member post (Approved: does not help), the owner approves by reply, members get it', async () => {
    const before = sink.messages.length;
    const held = t.suite.state.lists.heldOf('a.test', 'news').length;
    await sendMail(port, 'eve@elsewhere.test', 'news@a.test', msg('eve@elsewhere.test', 'news@a.test', 'from outside', 'x\r\n', 'Approved: letmein\r\n'));
    const req = await mailTo(sink, OWNER, /^confirm [0-9a-f]{32}$/, before);
    expect(req.raw.toString()).toContain('eve@elsewhere.test is not a member');
    expect(t.suite.state.lists.heldOf('a.test', 'news')).toHaveLength(held + 1);
    // Not yet sent on (a copy of an earlier test's post may still arrive for ann: only this post counts).
    expect(sink.messages.slice(before).some((m) => m.to.includes('ann@remote.test') && m.raw.toString().includes('from outside'))).toBe(false);
    const replyTo = headersOf(req).get('reply-to')![0]!;
    await sendMail(port, OWNER, replyTo, msg(OWNER, replyTo, `Re: ${subjectOf(req)}`));
    const got = await mailTo(sink, 'ann@remote.test', /from outside/, before);
    expect(headersOf(got).has('approved')).toBe(false);
    expect(t.suite.state.lists.heldOf('a.test', 'news')).toHaveLength(held);
  });

  it('moderated: every post is held; the owner rejects on the web page, which shows the post as escaped text', async () => {
    await subscribe('ann@remote.test', 'mod');
    const before = sink.messages.length;
    await sendMail(port, 'ann@remote.test', 'mod@a.test', msg('ann@remote.test', 'mod@a.test', 'held one', '<script>alert(1)</script>\r\n'));
    const req = await mailTo(sink, OWNER, /^confirm /, before);
    const link = /http[s]?:\/\/a\.test(\/lists\/mod\/moderate\/[0-9a-f]{32})/.exec(req.raw.toString())![1]!;
    const view = await web(t, 'a.test', link);
    expect(view.status).toBe(200);
    expect(view.body.toString()).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(view.body.toString()).not.toContain('<script>');
    expect(view.headers['content-security-policy']).toContain("default-src 'none'");
    const r = await web(t, 'a.test', link, 'POST', 'action=reject');
    expect(r.status).toBe(200);
    await mailTo(sink, 'ann@remote.test', /was not accepted/, before);
    expect(t.suite.state.lists.heldOf('a.test', 'mod')).toHaveLength(0);
    expect(sink.messages.slice(before).some((m) => /held one/.test(subjectOf(m)))).toBe(false);
    expect((await web(t, 'a.test', link, 'POST', 'action=approve')).status).toBe(404);
  });

  it('moderated with fromMunging: an approved post comes From "X via mod" with Reply-To the poster', async () => {
    const before = sink.messages.length;
    await sendMail(port, 'ann@remote.test', 'mod@a.test', msg('Ann Example <ann@remote.test>', 'mod@a.test', 'munged'));
    const req = await mailTo(sink, OWNER, /^confirm /, before);
    await sendMail(port, OWNER, 'mod-request@a.test', msg(OWNER, 'mod-request@a.test', 'whatever', `confirm ${tokenOf(req)}\r\n`));
    const m = await mailTo(sink, 'ann@remote.test', /munged/, before);
    expect(headersOf(m).get('from')).toEqual(['"Ann Example via mod" <mod@a.test>']);
    expect(headersOf(m).get('reply-to')).toEqual(['Ann Example <ann@remote.test>']);
  });

  it('nonMembers: reject refuses the post with a notice and holds nothing', async () => {
    const before = sink.messages.length;
    await sendMail(port, 'eve@elsewhere.test', 'strict@a.test', msg('eve@elsewhere.test', 'strict@a.test', 'no'));
    await mailTo(sink, 'eve@elsewhere.test', /was not accepted/, before);
    expect(t.suite.state.lists.heldOf('a.test', 'strict')).toHaveLength(0);
  });

  it('drops a loop (our own List-Id), an auto-reply and a bounce to the posting address', async () => {
    await logged(t, 'post distributed');
    const n = t.logs().length;
    await sendMail(port, 'ann@remote.test', 'news@a.test', msg('ann@remote.test', 'news@a.test', 'looped', 'x\r\n', 'List-Id: News of A <news.a.test>\r\n'));
    await sendMail(port, 'ann@remote.test', 'news@a.test', msg('ann@remote.test', 'news@a.test', 'Out of office', 'x\r\n', 'Auto-Submitted: auto-replied\r\n'));
    await sendMail(port, '', 'news@a.test', msg('MAILER-DAEMON@remote.test', 'news@a.test', 'Undelivered'));
    await waitFor(() => t.logs().slice(n).some((l) => l.msg === "post dropped: it already carries this list's List-Id (a loop)"), 5_000, 'loop log');
    await waitFor(() => t.logs().slice(n).filter((l) => l.msg === 'post dropped: automatic mail (bounce or auto-reply) to the posting address').length === 2, 5_000, 'auto logs');
    await waitFor(() => t.suite.state.lists.inboxIds().length === 0, 5_000, 'an empty list inbox');
    expect(t.logs().slice(n).some((l) => l.msg === 'post distributed')).toBe(false);
  });
});

describe('unsubscribe', () => {
  it('by mail: unsubscribe, then "confirm TOKEN" to -request', async () => {
    await subscribe('fay@remote.test');
    const before = sink.messages.length;
    await sendMail(port, 'fay@remote.test', 'news-unsubscribe@a.test', msg('fay@remote.test', 'news-unsubscribe@a.test', 'bye'));
    const c = await mailTo(sink, 'fay@remote.test', /^confirm /, before);
    expect(members('news')).toContain('fay@remote.test');
    await sendMail(port, 'fay@remote.test', 'news-request@a.test', msg('fay@remote.test', 'news-request@a.test', `Re: confirm ${tokenOf(c)}`));
    await mailTo(sink, 'fay@remote.test', /You have left/, before);
    expect(members('news')).not.toContain('fay@remote.test');
  });

  it('by the web form and the confirm page', async () => {
    await subscribe('gus@remote.test');
    const before = sink.messages.length;
    expect((await web(t, 'a.test', '/lists/news/', 'POST', 'email=gus%40remote.test&action=unsubscribe')).status).toBe(200);
    const c = await mailTo(sink, 'gus@remote.test', /^confirm /, before);
    expect((await web(t, 'a.test', `/lists/news/confirm/${tokenOf(c)}`)).body.toString()).toContain('unsubscribe <b>gus@remote.test</b>');
    expect((await web(t, 'a.test', `/lists/news/confirm/${tokenOf(c)}`, 'POST', '')).status).toBe(200);
    expect(members('news')).not.toContain('gus@remote.test');
  });

  it('one-click (RFC 8058): a POST to the member URL from the post unsubscribes at once; a tampered URL is refused', async () => {
    await subscribe('hal@remote.test');
    const before = sink.messages.length;
    await sendMail(port, 'ann@remote.test', 'news@a.test', msg('ann@remote.test', 'news@a.test', 'click'));
    const m = await mailTo(sink, 'hal@remote.test', /click/, before);
    const url = /<http:\/\/a\.test(\/lists\/news\/unsubscribe\/[^>]+)>/.exec(headersOf(m).get('list-unsubscribe')![0]!)![1]!;
    const [, , , , b64, sig] = url.split('/');
    // Another member's address with hal's signature.
    const forged = `/lists/news/unsubscribe/${Buffer.from('ann@remote.test').toString('base64url')}/${sig}`;
    expect((await web(t, 'a.test', forged, 'POST', 'List-Unsubscribe=One-Click')).status).toBe(403);
    expect((await web(t, 'a.test', `/lists/news/unsubscribe/${b64}/${'A'.repeat(22)}`, 'POST', 'List-Unsubscribe=One-Click')).status).toBe(403);
    expect(members('news')).toContain('ann@remote.test');
    // GET shows a button only.
    expect((await web(t, 'a.test', url)).status).toBe(200);
    expect(members('news')).toContain('hal@remote.test');
    expect((await web(t, 'a.test', url, 'POST', 'something=else')).status).toBe(400);
    const r = await web(t, 'a.test', url, 'POST', 'List-Unsubscribe=One-Click');
    expect(r.status).toBe(200);
    expect(r.headers['set-cookie']).toBeUndefined();
    expect(members('news')).not.toContain('hal@remote.test');
  });
});

describe('bad input', () => {
  it('a subscribe request for someone else: only they get the confirmation; nothing happens without it', async () => {
    const before = sink.messages.length;
    await sendMail(port, 'mallory@elsewhere.test', 'news-request@a.test', msg('victim@remote.test', 'news-request@a.test', 'subscribe'));
    await mailTo(sink, 'victim@remote.test', /^confirm /, before);
    expect(sink.messages.slice(before).some((m) => m.to.includes('mallory@elsewhere.test'))).toBe(false);
    expect(members('news')).not.toContain('victim@remote.test');
    // Asking again within a day sends nothing more (no mail bomb through the list).
    const n = sink.messages.length;
    expect((await web(t, 'a.test', '/lists/news/', 'POST', 'email=victim%40remote.test&action=subscribe')).status).toBe(200);
    await logged(t, 'subscribe request ignored: a confirmation was sent to this address less than a day ago', { address: 'victim@remote.test' });
    expect(sink.messages.slice(n).some((m) => m.to.includes('victim@remote.test'))).toBe(false);
  });

  it('forged, reused, expired and other-list tokens are refused and change nothing', async () => {
    const n0 = t.logs().length;
    const forged = 'f'.repeat(32);
    await sendMail(port, 'mallory@elsewhere.test', `news-confirm+${forged}@a.test`, msg('mallory@elsewhere.test', 'x@a.test', 'Re: confirm'));
    expect((await web(t, 'a.test', `/lists/news/confirm/${forged}`, 'POST', '')).status).toBe(404);
    expect((await web(t, 'a.test', `/lists/news/confirm/<script>`)).status).toBe(404);
    await waitFor(() => t.logs().slice(n0).filter((l) => l.msg === 'confirmation refused: unknown, used or expired token').length >= 2, 5_000, 'refusals');

    // Expired: the token's time runs out (moved in state, as a week passing would).
    const before = sink.messages.length;
    await sendMail(port, 'ivy@remote.test', 'news-subscribe@a.test', msg('ivy@remote.test', 'news-subscribe@a.test', 'join'));
    const c = await mailTo(sink, 'ivy@remote.test', /^confirm /, before);
    t.suite.state.db.prepare(`UPDATE list_tokens SET expires_at = 1 WHERE address = 'ivy@remote.test'`).run();
    expect((await web(t, 'a.test', `/lists/news/confirm/${tokenOf(c)}`, 'POST', '')).status).toBe(404);
    // A token of one list does nothing on another.
    t.suite.state.db.prepare(`DELETE FROM list_tokens WHERE address = 'ivy@remote.test'`).run();
    const b2 = sink.messages.length;
    await sendMail(port, 'ivy@remote.test', 'strict-subscribe@a.test', msg('ivy@remote.test', 'strict-subscribe@a.test', 'join'));
    const c2 = await mailTo(sink, 'ivy@remote.test', /^confirm /, b2);
    expect((await web(t, 'a.test', `/lists/news/confirm/${tokenOf(c2)}`, 'POST', '')).status).toBe(404);
    expect(members('news')).not.toContain('ivy@remote.test');
    expect(members('strict')).not.toContain('ivy@remote.test');
    // Used: the first confirmation works, the second is refused.
    expect((await web(t, 'a.test', `/lists/strict/confirm/${tokenOf(c2)}`, 'POST', '')).status).toBe(200);
    expect((await web(t, 'a.test', `/lists/strict/confirm/${tokenOf(c2)}`, 'POST', '')).status).toBe(404);
    expect(members('strict')).toContain('ivy@remote.test');
  });

  it('answers help with the commands', async () => {
    const before = sink.messages.length;
    await sendMail(port, 'q@remote.test', 'news-request@a.test', msg('q@remote.test', 'news-request@a.test', 'help'));
    const h = await mailTo(sink, 'q@remote.test', /^Help for news@a\.test$/, before);
    expect(h.raw.toString()).toContain('subscribe digest');
    expect(headersOf(h).get('auto-submitted')).toEqual(['auto-replied']);
  });

  it('command mail with junk, and auto-replies to -request, are ignored with a log line', async () => {
    const n = t.logs().length;
    await sendMail(port, 'x@elsewhere.test', 'news-request@a.test', msg('x@elsewhere.test', 'news-request@a.test', 'buy now', 'cheap stuff\r\n'));
    await sendMail(port, '', 'news-request@a.test', msg('MAILER-DAEMON@elsewhere.test', 'news-request@a.test', 'subscribe'));
    await waitFor(() => t.logs().slice(n).some((l) => l.msg === 'request ignored: no command in the subject or the first lines'), 5_000, 'junk log');
    await waitFor(() => t.logs().slice(n).some((l) => l.msg === 'command mail ignored' && l.why === 'null envelope sender'), 5_000, 'auto log');
  });

  it('limits form requests per client address and hour (429), so the form cannot mail addresses in bulk', async () => {
    // Earlier tests made some form requests from 127.0.0.1 already; ten in the hour are allowed in all.
    let status = 200;
    for (let i = 0; i < 12 && status !== 429; i++) {
      status = (await web(t, 'a.test', '/lists/strict/', 'POST', `email=bulk${i}%40remote.test&action=subscribe`)).status;
    }
    expect(status).toBe(429);
    const before = sink.messages.length;
    const r = await web(t, 'a.test', '/lists/strict/', 'POST', 'email=one-more%40remote.test&action=subscribe');
    expect(r.status).toBe(429);
    expect(r.headers['retry-after']).toBe('3600');
    await logged(t, 'list form refused: too many requests from this address this hour');
    // The same client through the listener that sees it as ::ffff:127.0.0.1 is the same client, with no budget of its own.
    const mapped = t.suite.urls.http!.find((u) => u.includes('[::ffff:'))!;
    const again = await rawRequest(mapped, '/lists/strict/', { Host: 'a.test', 'Content-Type': 'application/x-www-form-urlencoded' }, 'POST', 'email=mapped%40remote.test&action=subscribe');
    expect(again.status).toBe(429);
    await logged(t, 'list form refused: too many requests from this address this hour', { remote: '::ffff:127.0.0.1', clientKey: '127.0.0.1' });
    expect(sink.messages.slice(before).some((m) => m.to.includes('one-more@remote.test') || m.to.includes('mapped@remote.test'))).toBe(false);
  });

  it('list pages exist only for lists the tenant has', async () => {
    expect((await web(t, 'a.test', '/lists/other/')).body.toString()).toBe('tenant page');
    expect((await web(t, 'b.test', '/lists/news/')).body.toString()).toBe('b page');
    expect((await web(t, 'a.test', '/lists/news')).status).toBe(301);
    expect((await web(t, 'a.test', '/lists/news/nothing')).status).toBe(404);
    expect((await web(t, 'a.test', '/lists/news/', 'PUT', 'x')).status).toBe(405);
    expect((await web(t, 'a.test', '/lists/news/', 'POST', 'email=not-an-address&action=subscribe')).status).toBe(400);
  });
});

describe('bounces', () => {
  it('scores VERP bounces (hard +1, soft +0.5, once a day), disables at the threshold and tells the owner', async () => {
    await subscribe('joe@remote.test');
    const dsn = (status: string) =>
      `From: MAILER-DAEMON@remote.test\r\nTo: news-bounces@a.test\r\nSubject: Undelivered\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n\r\nfailed\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; remote.test\r\n\r\nFinal-Recipient: rfc822; joe@remote.test\r\nAction: failed\r\nStatus: ${status}\r\n--b--\r\n`;
    const score = () => t.suite.state.lists.member('a.test', 'news', 'joe@remote.test')!.bounceScore;
    const bounce = async (status: string) => {
      const n = t.logs().length;
      await sendMail(port, '', 'news-bounces+joe=remote.test@a.test', dsn(status));
      await waitFor(() => t.logs().slice(n).some((l) => typeof l.msg === 'string' && l.msg.startsWith('bounce') && l.address === 'joe@remote.test'), 5_000, 'bounce log');
    };
    await bounce('4.2.2');
    expect(score()).toBe(0.5);
    await bounce('5.1.1');
    expect(score()).toBe(0.5); // once a day
    const before = sink.messages.length;
    for (let i = 0; i < 4; i++) {
      // A day passes (moved in state).
      t.suite.state.db.prepare(`UPDATE list_members SET bounce_day = date('now', '-1 day') WHERE address = 'joe@remote.test'`).run();
      await bounce('5.1.1');
    }
    expect(score()).toBe(4.5);
    expect(t.suite.state.lists.member('a.test', 'news', 'joe@remote.test')!.disabled).toBe(false);
    t.suite.state.db.prepare(`UPDATE list_members SET bounce_day = date('now', '-1 day') WHERE address = 'joe@remote.test'`).run();
    await bounce('5.1.1');
    expect(t.suite.state.lists.member('a.test', 'news', 'joe@remote.test')!.disabled).toBe(true);
    await mailTo(sink, OWNER, /joe@remote\.test disabled/, before);
    const b2 = sink.messages.length;
    await sendMail(port, 'ann@remote.test', 'news@a.test', msg('ann@remote.test', 'news@a.test', 'after disable'));
    await mailTo(sink, 'ann@remote.test', /after disable/, b2);
    expect(sink.messages.slice(b2).some((m) => m.to.includes('joe@remote.test'))).toBe(false);
  });

  it('a copy refused by the member\'s server comes back as a DSN to its VERP address and is scored hard', async () => {
    await subscribe('gone@remote.test');
    sink.rcptReply.set('gone@remote.test', [550, '5.1.1 no such user']);
    const before = sink.messages.length;
    await sendMail(port, 'ann@remote.test', 'news@a.test', msg('ann@remote.test', 'news@a.test', 'to a dead mailbox'));
    // Our queue bounces the copy to its envelope sender: the sink (our relay) gets the DSN for news-bounces+gone=remote.test@a.test.
    const dsn = await waitFor(() => sink.messages.slice(before).find((m) => m.to.includes('news-bounces+gone=remote.test@a.test')), 10_000, 'the DSN');
    expect(dsn.from).toBe('');
    // The relay would route it back to us; here the test plays that hop.
    await sendMail(port, '', dsn.to[0]!, dsn.raw.toString());
    await logged(t, 'bounce scored', { address: 'gone@remote.test', kind: 'hard' });
    expect(t.suite.state.lists.member('a.test', 'news', 'gone@remote.test')!.bounceScore).toBe(1);
    sink.rcptReply.delete('gone@remote.test');
  });

  it('ignores a bounce for a non-member', async () => {
    const n = t.logs().length;
    await sendMail(port, '', 'news-bounces+nobody=remote.test@a.test', 'Subject: x\r\n\r\nStatus: 5.1.1\r\n');
    await waitFor(() => t.logs().slice(n).some((l) => l.msg === 'bounce ignored: not for a member of this list'), 5_000, 'log');
  });
});
