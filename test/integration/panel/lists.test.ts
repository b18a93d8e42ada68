import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { cli } from '../../helpers/cli.ts';
import { smtpPort, startSink, type MailSink } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import { mailTo, msg, sendMail } from '../lists/helpers.ts';
import { asAlice, PanelClient } from './helpers.ts';

// A customer's mailing lists in the panel: members (the rows `list add
// --no-confirm` / `list remove` write), held posts decided through the lists
// service's own confirmation, the posting policy through the tenant file.

let t: TestSuite;
let sink: MailSink;
const FILE = `# the customer's site
domains: [example.test]
ftp:
  - { user: alice, password: "HASH" }
mail:
  lists:
    # announcements: every post waits for the owner
    news: { owner: owner@sink.test, posting: moderated }
`;
const fileText = () => readFileSync(path.join(t.configDir, 'tenants', 'example.test.yaml'), 'utf8');

beforeAll(async () => {
  sink = await startSink();
  t = await startTestSuite({
    main: { panel: { host: 'panel.makewaves.test' }, smtp: { listen: ['127.0.0.1:0'], relay: sink.url } },
    tenants: {
      'example.test': { domains: ['example.test'] },
      'other.test': { domains: ['other.test'], ftp: [{ user: 'bob', password: await hashPassword('builder') }], mail: { lists: { club: { owner: 'bob@sink.test' } } } },
    },
  });
  t.writeTenant('example.test', FILE.replace('HASH', await hashPassword('wonderland')));
  expect(t.suite.reload()).toBe(true);
}, 30_000);
afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

const alice = () => asAlice(t.http);

describe('mailing lists in the panel', () => {
  it('adds, lists, exports and removes members; a bad address is refused in the CLI\'s words, escaped', async () => {
    const c = await alice();
    const index = await c.get('/t/example.test/lists');
    expect(index.text).toContain('news@example.test');
    const csrf = await c.csrf('/t/example.test/lists/news');
    const add = await c.post('/t/example.test/lists/news/members', { csrf, address: 'Reader@Sink.test' });
    expect(add.status).toBe(303);
    expect(t.suite.state.lists.members('example.test', 'news').map((m) => m.address)).toEqual(['reader@sink.test']);
    await c.post('/t/example.test/lists/news/members', { csrf, address: '=cmd|calc@sink.test' });
    const page = await c.get('/t/example.test/lists/news?done=added');
    expect(page.text).toContain('The member was added.');
    expect(page.text).toContain('<td>reader@sink.test</td>');

    const bad = await c.post('/t/example.test/lists/news/members', { csrf, address: '<script>alert(1)</script>' });
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('<p class="error" id="member-error">&quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot; is not an e-mail address</p>');
    expect(bad.text).not.toContain('<script>alert');
    const cliSays = await cli('list', 'remove', '<script>alert(1)</script>', 'news@example.test', '--config', t.configDir);
    expect(cliSays.err).toContain('"<script>alert(1)</script>" is not an e-mail address');

    const csv = await c.get('/t/example.test/lists/news/members.csv');
    expect(csv.headers['content-type']).toBe('text/csv; charset=utf-8');
    expect(csv.headers['content-disposition']).toBe('attachment; filename="news-members.csv"');
    const lines = csv.text.trim().split('\r\n');
    expect(lines[0]).toBe('address,mode,state,bounce_score,joined');
    expect(lines.slice(1).map((l) => l.split(',')[0]).sort()).toEqual(["'=cmd|calc@sink.test", 'reader@sink.test']);

    expect((await c.post('/t/example.test/lists/news/members/remove', { csrf, address: '=cmd|calc@sink.test' })).status).toBe(303);
    expect(t.suite.state.lists.members('example.test', 'news').map((m) => m.address)).toEqual(['reader@sink.test']);
    expect((await c.post('/t/example.test/lists/news/members', { address: 'x@sink.test' })).status).toBe(403);
  });

  it('previews a held post escaped, approves it (the members get it) and rejects another (the poster is told)', async () => {
    const c = await alice();
    const port = smtpPort(t.suite);
    await sendMail(port, 'poster@sink.test', 'news@example.test', msg('poster@sink.test', 'news@example.test', 'Big <script>alert(1)</script> news', '<img src=x onerror=alert(2)> read this\r\n'));
    await sendMail(port, 'spammer@sink.test', 'news@example.test', msg('spammer@sink.test', 'news@example.test', 'buy now'));
    const held = await waitFor(() => {
      const h = t.suite.state.lists.heldOf('example.test', 'news');
      return h.length === 2 ? h : undefined;
    }, 10_000, 'two held posts');
    const page = await c.get('/t/example.test/lists/news');
    expect(page.text).toContain('Big &lt;script&gt;alert(1)&lt;/script&gt; news');
    expect(page.text).toContain('&lt;img src=x onerror=alert(2)&gt; read this');
    expect(page.text).not.toMatch(/<script>alert|<img /);
    const csrf = await c.csrf('/t/example.test/lists/news');
    const big = held.find((h) => h.subject.startsWith('Big'))!;
    const spam = held.find((h) => h.subject === 'buy now')!;
    const sunk = sink.messages.length;
    expect((await c.post('/t/example.test/lists/news/held', { csrf, id: String(big.id), action: 'approve' })).status).toBe(303);
    const got = await mailTo(sink, 'reader@sink.test', /Big <script>alert\(1\)<\/script> news/, sunk, 10_000);
    expect(got.raw.toString()).toContain('read this');
    expect((await c.post('/t/example.test/lists/news/held', { csrf, id: String(spam.id), action: 'reject' })).status).toBe(303);
    await mailTo(sink, 'spammer@sink.test', /was not accepted/, sunk, 10_000);
    expect(t.suite.state.lists.heldOf('example.test', 'news')).toEqual([]);
    // Decided already: nothing to do twice.
    expect((await c.post('/t/example.test/lists/news/held', { csrf, id: String(spam.id), action: 'approve' })).status).toBe(404);
  }, 30_000);

  it('sets the posting policy through the tenant file (comments kept) and refuses a bad one in the CLI\'s words', async () => {
    const c = await alice();
    const csrf = await c.csrf('/t/example.test/lists/news');
    expect((await c.post('/t/example.test/lists/news/policy', { csrf, posting: 'open' })).status).toBe(303);
    expect(fileText()).toContain('# announcements: every post waits for the owner');
    expect(fileText()).toMatch(/news: \{ ?owner: owner@sink.test, posting: open ?\}/);
    expect(t.suite.registry().listConfig(t.suite.registry().tenants.get('example.test')!, 'news')!.posting).toBe('open');
    const before = fileText();
    const bad = await c.post('/t/example.test/lists/news/policy', { csrf, posting: 'everyone"><b>' });
    expect(bad.status).toBe(400);
    const cliSays = await cli('list', 'set', 'news@example.test', '--posting', 'everyone"><b>', '--config', t.configDir);
    expect(cliSays.code).not.toBe(0);
    const sentence = cliSays.err.replace(/^makewaves: /, '').trim();
    expect(bad.text).toContain(`<p class="error" id="posting-error">${sentence.replaceAll('&', '&amp;').replaceAll('"', '&quot;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')}</p>`);
    expect(fileText()).toBe(before);
  });

  it("refuses another tenant's lists and held posts", async () => {
    const c = await alice();
    expect((await c.get('/t/other.test/lists/club')).status).toBe(403);
    expect((await c.get('/t/example.test/lists/club')).status).toBe(404);
    const bob = new PanelClient(t.http);
    await bob.login('bob@other.test', 'builder');
    const csrf = await bob.csrf('/t/other.test/lists/club');
    expect((await bob.post('/t/example.test/lists/news/members', { csrf, address: 'evil@sink.test' })).status).toBe(403);
    expect(t.suite.state.lists.members('example.test', 'news').map((m) => m.address)).toEqual(['reader@sink.test']);
  });
});
