import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { cli } from '../../helpers/cli.ts';
import { freePort, type MailSink, replyToRcpt, startSink } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';
import { mailTo, msg, sendMail } from './helpers.ts';

// The verbs for what a customer asks to change in a tenant file: lists
// (create, delete, set owner / posting), forms recipients, the catch-all,
// and the moderation of held posts. Each keeps the file's comments, is
// checked by the loader before it writes, and is picked up by the running
// server's reload.

let t: TestSuite;
let sink: MailSink;
let port: number;

const FILE = `# Tenant A: this comment stays
domains: [a.test, www.a.test]   # the main domain
mail:
  forward:
    # the boss reads info@
    info: [boss@remote.test]
  lists:
    # moderated: every post waits for the owner
    mod: { owner: owner@remote.test, posting: moderated }
forms:
  recipients: [forms@remote.test]   # who reads the contact form
`;

const fileText = () => readFileSync(path.join(t.configDir, 'tenants', 'a.test.yaml'), 'utf8');
const fileData = () => parse(fileText()) as { mail: { lists: Record<string, Record<string, unknown>>; catchAll?: string }; forms: { recipients: string[] } };
const run = (...args: string[]) => cli(...args, '--config', t.configDir);

function expectComments(text: string): void {
  expect(text).toContain('# Tenant A: this comment stays\n');
  expect(text).toContain('# the main domain');
  expect(text).toContain('# the boss reads info@');
  expect(text).toContain('# moderated: every post waits for the owner');
  expect(text).toContain('# who reads the contact form');
}

const rcpt = (address: string) => replyToRcpt(port, address);

beforeAll(async () => {
  sink = await startSink();
  // A fixed port: `list approve` and `reject` reach the server at smtp.listen.
  port = await freePort();
  t = await startTestSuite({ main: { smtp: { listen: [`127.0.0.1:${port}`], relay: sink.url } }, tenants: { 'a.test': { domains: ['a.test'] } } });
  t.writeTenant('a.test', FILE);
  expect(t.suite.reload()).toBe(true);
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

describe('list create / set / delete', () => {
  it('creates a list the running server routes at once, keeping comments; set changes owner and posting; delete removes it and its members', async () => {
    expect(await rcpt('news@a.test')).toMatch(/^550 5\.1\.1/);
    const r = await run('list', 'create', 'News@A.test', '--owner', 'Owner@Remote.test', '--posting', 'open', '--archive');
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(r.out).toBe('created list news@a.test (tenant a.test, owner owner@remote.test, posting open, archive on)\n');
    expectComments(fileText());
    expect(fileData().mail.lists.news).toEqual({ owner: 'owner@remote.test', posting: 'open', archive: true });
    await waitFor(async () => /^250/.test(await rcpt('news@a.test')), 5_000, 'the new list to be routed');

    expect(await run('list', 'set', 'news@a.test', '--posting', 'members', '--owner', 'new-owner@remote.test')).toMatchObject({
      code: 0,
      out: 'news@a.test: owner new-owner@remote.test, posting members\n',
    });
    expectComments(fileText());
    expect(fileData().mail.lists.news).toEqual({ owner: 'new-owner@remote.test', posting: 'members', archive: true });
    // news-owner@ follows the owner once the server has reloaded.
    await waitFor(() => t.suite.registry().listConfig(t.suite.registry().tenants.get('a.test')!, 'news')?.owner === 'new-owner@remote.test', 5_000, 'the reload');

    expect((await run('list', 'add', 'member@remote.test', 'news@a.test', '--no-confirm')).code).toBe(0);
    expect((await run('list', 'delete', 'news@a.test')).err).toMatch(/^makewaves: deleting news@a\.test drops its members, held posts and archive; run again with --yes\n$/);
    const d = await run('list', 'delete', 'news@a.test', '--yes');
    expect(d).toMatchObject({ code: 0, err: '' });
    expect(d.out).toMatch(/^deleted list news@a\.test \(tenant a\.test\); its 1 member\(s\) and other rows are archived in \S+news-\d{8}T\d{6}Z\.json\n$/);
    expectComments(fileText());
    expect(fileData().mail.lists.news).toBeUndefined();
    expect(t.suite.state.lists.members('a.test', 'news')).toEqual([]);
    await waitFor(async () => /^550/.test(await rcpt('news@a.test')), 5_000, 'the list to be gone');
  });
});

describe('forms recipients and the catch-all', () => {
  it('set, add and remove forms recipients; set and remove the catch-all; comments stay', async () => {
    expect(await run('forms', 'recipients', 'add', 'a.test', 'Second@Remote.test')).toMatchObject({ code: 0, out: 'a.test: forms go to forms@remote.test, second@remote.test\n' });
    expect(fileData().forms.recipients).toEqual(['forms@remote.test', 'second@remote.test']);
    expect(await run('forms', 'recipients', 'remove', 'a.test', 'forms@remote.test')).toMatchObject({ code: 0, out: 'a.test: forms go to second@remote.test\n' });
    expect(await run('forms', 'recipients', 'set', 'a.test', 'x@remote.test', 'y@remote.test')).toMatchObject({ code: 0, out: 'a.test: forms go to x@remote.test, y@remote.test\n' });
    expect(fileData().forms.recipients).toEqual(['x@remote.test', 'y@remote.test']);
    expectComments(fileText());

    expect(await rcpt('anything@www.a.test')).toMatch(/^550 5\.1\.1/);
    expect(await run('alias', 'catchall', 'www.a.test', 'all@remote.test')).toMatchObject({ code: 0, out: '*@a.test (and @www.a.test) → all@remote.test (tenant a.test)\n' });
    expect(fileData().mail.catchAll).toBe('all@remote.test');
    await waitFor(async () => /^250/.test(await rcpt('anything@www.a.test')), 5_000, 'the catch-all to be routed');
    expect(await run('alias', 'catchall', 'a.test', '--remove')).toMatchObject({ code: 0, out: 'removed the catch-all of a.test (tenant a.test)\n' });
    expect(fileData().mail.catchAll).toBeUndefined();
    expectComments(fileText());
    await waitFor(async () => /^550/.test(await rcpt('anything@www.a.test')), 5_000, 'the catch-all to be gone');
  });
});

describe('refusals', () => {
  it.each([
    [['list', 'create', 'mod@a.test', '--owner', 'o@remote.test'], /^makewaves: a\.test already has a list mod@a\.test\n$/],
    [['list', 'create', 'news@nowhere.test', '--owner', 'o@remote.test'], /^makewaves: no tenant has the domain "nowhere\.test"\n$/],
    [['list', 'create', 'News_Letter!@a.test', '--owner', 'o@remote.test'], /^makewaves: "news_letter!" is not a list name: lower-case letters, digits, "\.", "_" or "-", starting with a letter or digit\n$/],
    [['list', 'create', 'info@a.test', '--owner', 'o@remote.test'], /^makewaves: tenant "a\.test": .*info.*; nothing changed\n$/],
    [['list', 'create', 'news@a.test', '--owner', 'not-an-address'], /^makewaves: tenant "a\.test": mail\.lists\.news\.owner: "not-an-address" is not an e-mail address; nothing changed\n$/],
    [['list', 'create', 'news@a.test'], /required option '--owner <address>' not specified/],
    [['list', 'create', 'news@a.test', '--owner', 'o@remote.test', '--posting', 'anyone'], /^makewaves: tenant "a\.test": mail\.lists\.news\.posting: .*; nothing changed\n$/],
    [['list', 'set', 'nope@a.test', '--posting', 'open'], /^makewaves: no mailing list nope@a\.test/],
    [['list', 'set', 'mod@a.test'], /^makewaves: give --owner and\/or --posting\n$/],
    [['list', 'set', 'mod@a.test', '--owner', 'bad address'], /^makewaves: tenant "a\.test": mail\.lists\.mod\.owner: .*; nothing changed\n$/],
    [['list', 'delete', 'nope@a.test', '--yes'], /^makewaves: no mailing list nope@a\.test/],
    [['list', 'approve', 'mod@a.test', '999999'], /^makewaves: no held post #999999 on mod@a\.test \(makewaves list held mod@a\.test shows them\)\n$/],
    [['list', 'reject', 'mod@a.test', 'x1'], /^makewaves: "x1" is not a held post number\n$/],
    [['forms', 'recipients', 'add', 'a.test', 'not an address'], /^makewaves: tenant "a\.test": forms\.recipients\[\d\]: .*; nothing changed\n$/],
    [['forms', 'recipients', 'remove', 'a.test', 'nobody@remote.test'], /^makewaves: nobody@remote\.test is not a forms recipient of a\.test\n$/],
    [['forms', 'recipients', 'add', 'a.test', 'x@remote.test'], /^makewaves: x@remote\.test is already a forms recipient of a\.test\n$/],
    [['forms', 'recipients', 'set', 'nobody.test', 'x@remote.test'], /^makewaves: no tenant "nobody\.test"/],
    [['alias', 'catchall', 'a.test', 'not-an-address'], /^makewaves: tenant "a\.test": mail\.catchAll: .*; nothing changed\n$/],
    [['alias', 'catchall', 'a.test'], /^makewaves: give the catch-all's target address, or --remove\n$/],
    [['alias', 'catchall', 'a.test', '--remove'], /^makewaves: a\.test has no catch-all\n$/],
  ])('%j: one clear line, exit 1, the file untouched', async (args, message) => {
    const before = readdirSync(path.join(t.configDir, 'tenants')).map((n) => [n, readFileSync(path.join(t.configDir, 'tenants', n), 'utf8')]);
    const r = await run(...args);
    expect(r.err).toMatch(message);
    expect(r.code).toBe(1);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.out).toBe('');
    expect(readdirSync(path.join(t.configDir, 'tenants')).map((n) => [n, readFileSync(path.join(t.configDir, 'tenants', n), 'utf8')])).toEqual(before);
  });
});

describe('list approve / reject', () => {
  it('approve posts the held message to the members through the running server; reject tells the poster', async () => {
    t.suite.state.lists.addMember('a.test', 'mod', 'reader@remote.test', 'single', Date.now());
    const before = sink.messages.length;
    await sendMail(port, 'poster@remote.test', 'mod@a.test', msg('poster@remote.test', 'mod@a.test', 'please post this'));
    await sendMail(port, 'poster@remote.test', 'mod@a.test', msg('poster@remote.test', 'mod@a.test', 'do not post this'));
    const held = await waitFor(() => {
      const h = t.suite.state.lists.heldOf('a.test', 'mod');
      return h.length === 2 ? h : undefined;
    }, 5_000, 'two held posts');
    const [first, second] = held;

    const a = await run('list', 'approve', 'mod@a.test', String(first!.id));
    expect(a).toMatchObject({ code: 0, err: '' });
    expect(a.out).toBe(`approved #${first!.id} "please post this" from poster@remote.test: the running server posts it to mod@a.test\n`);
    const copy = await mailTo(sink, 'reader@remote.test', /please post this/, before);
    expect(copy.from).toBe('mod-bounces+reader=remote.test@a.test');

    const r = await run('list', 'reject', 'mod@a.test', String(second!.id));
    expect(r).toMatchObject({ code: 0, out: `rejected #${second!.id} "do not post this" from poster@remote.test; the poster is told\n` });
    await mailTo(sink, 'poster@remote.test', /was not accepted/, before);
    await waitFor(() => t.suite.state.lists.heldOf('a.test', 'mod').length === 0, 5_000, 'no held posts');
    expect(sink.messages.slice(before).some((m) => m.to.includes('reader@remote.test') && m.raw.toString().includes('do not post this'))).toBe(false);
    // A held post is used once: a second approval finds nothing.
    expect((await run('list', 'approve', 'mod@a.test', String(first!.id))).err).toMatch(/^makewaves: no held post #\d+ on mod@a\.test/);
  });
});
