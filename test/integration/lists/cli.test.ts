import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../../helpers/cli.ts';
import { freePort, type MailSink, startSink } from '../../helpers/mailsink.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';
import { mailTo, msg, sendMail } from './helpers.ts';

let t: TestSuite;
let sink: MailSink;
let port: number;

beforeAll(async () => {
  sink = await startSink();
  // A fixed port: `list add` without --no-confirm talks to the server at smtp.listen.
  port = await freePort();
  t = await startTestSuite({
    main: { smtp: { listen: [`127.0.0.1:${port}`], relay: sink.url } },
    tenants: { 'a.test': { domains: ['a.test'], mail: { lists: { news: { owner: 'owner@remote.test', posting: 'moderated' } } } } },
  });
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

describe('makewaves list', () => {
  it('add --no-confirm, members, remove', async () => {
    const add = await cli('list', 'add', 'Imported@Remote.test', 'news@a.test', '--no-confirm', '--config', t.configDir);
    expect(add).toMatchObject({ code: 0, out: 'imported@remote.test is a member of news@a.test (no confirmation asked)\n' });
    await cli('list', 'add', 'dig@remote.test', 'news@a.test', '--no-confirm', '--digest', '--config', t.configDir);
    const m = await cli('list', 'members', 'news@a.test', '--config', t.configDir);
    expect(m.code).toBe(0);
    expect(m.out).toMatch(/^dig@remote\.test {2}digest {2}enabled {2}bounce score 0 {2}since \d{4}-\d\d-\d\d\nimported@remote\.test {2}single {2}enabled/);
    expect(m.out).toMatch(/^2 members$/m);
    expect(await cli('list', 'remove', 'imported@remote.test', 'news@a.test', '--config', t.configDir)).toMatchObject({ code: 0 });
    expect(await cli('list', 'remove', 'imported@remote.test', 'news@a.test', '--config', t.configDir)).toMatchObject({
      code: 1,
      err: 'makewaves: imported@remote.test is not a member of news@a.test\n',
    });
    expect(t.suite.state.lists.members('a.test', 'news').map((x) => x.address)).toEqual(['dig@remote.test']);
  });

  it('add without --no-confirm only sends the address a confirmation request', async () => {
    const before = sink.messages.length;
    const r = await cli('list', 'add', 'asked@remote.test', 'news@a.test', '--config', t.configDir);
    expect(r.code).toBe(0);
    await mailTo(sink, 'asked@remote.test', /^confirm [0-9a-f]{32}$/, before);
    expect(t.suite.state.lists.member('a.test', 'news', 'asked@remote.test')).toBeUndefined();
  });

  it('held lists the posts waiting for the owner', async () => {
    const before = sink.messages.length;
    await sendMail(port, 'p@remote.test', 'news@a.test', msg('p@remote.test', 'news@a.test', 'please approve'));
    await mailTo(sink, 'owner@remote.test', /^confirm /, before);
    const r = await cli('list', 'held', 'news@a.test', '--config', t.configDir);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^#\d+ {2}\S+ {2}from p@remote\.test {2}"please approve" {2}\(the list is moderated\) {2}expires \d{4}-\d\d-\d\d\n1 held post\n$/);
  });

  it('refuses an unknown list and a bad address with one line and exit 1', async () => {
    const r = await cli('list', 'members', 'nope@a.test', '--config', t.configDir);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^makewaves: no mailing list nope@a\.test in /);
    const b = await cli('list', 'add', 'not an address', 'news@a.test', '--no-confirm', '--config', t.configDir);
    expect(b).toMatchObject({ code: 1, err: 'makewaves: "not an address" is not an e-mail address\n' });
  });
});
