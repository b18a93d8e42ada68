import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/core/log.ts';
import { startSuite, type Suite } from '../../../src/main.ts';
import { openState } from '../../../src/state/index.ts';
import { type MailSink, startSink } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

let sink: MailSink | undefined;
let t: TestSuite | undefined;
let again: Suite | undefined;

afterAll(async () => {
  await again?.stop(500);
  await t?.stop();
  await sink?.close();
});

describe('list mail survives a stop', () => {
  it('mail stored in the list inbox is acted on at the next start; a distribution resumes after its cursor', async () => {
    sink = await startSink();
    t = await startTestSuite({
      main: { smtp: { listen: ['127.0.0.1:0'], relay: sink.url } },
      tenants: { 'a.test': { domains: ['a.test'], mail: { lists: { news: { owner: 'owner@remote.test', posting: 'open' } } } } },
    });
    for (const a of ['m1@remote.test', 'm2@remote.test', 'm3@remote.test']) t.suite.state.lists.addMember('a.test', 'news', a, 'single', Date.now());
    const first = t.suite.state.lists.member('a.test', 'news', 'm1@remote.test')!.id;
    await t.suite.stop(500);

    // As a crash would leave it: a post whose copy to m1 was queued, and a subscribe request not yet acted on.
    const state = openState(t.dataDir);
    const post = state.lists.receive({ tenant: 'a.test', list: 'news', role: 'post', param: '', rcpt: 'news@a.test', sender: 'p@remote.test', raw: Buffer.from('From: p@remote.test\r\nSubject: resumed\r\n\r\nx\r\n') }, Date.now());
    state.lists.inboxCursor(post, first);
    state.lists.receive({ tenant: 'a.test', list: 'news', role: 'subscribe', param: '', rcpt: 'news-subscribe@a.test', sender: 'new@remote.test', raw: Buffer.from('From: new@remote.test\r\nSubject: join\r\n\r\n') }, Date.now());
    state.close();

    const lines: string[] = [];
    again = await startSuite({ configDir: t.configDir, watch: false, log: createLogger({ level: 'info', destination: { write: (s: string) => lines.push(s) } as never }) });
    await waitFor(() => sink!.messages.filter((m) => m.raw.includes('Subject: resumed')).length === 2, 5_000, 'two copies');
    await waitFor(() => sink!.messages.some((m) => m.to[0] === 'new@remote.test' && m.raw.includes('Subject: confirm ')), 5_000, 'the confirmation');
    expect(sink.messages.filter((m) => m.raw.includes('Subject: resumed')).map((m) => m.to[0]).sort()).toEqual(['m2@remote.test', 'm3@remote.test']);
    await waitFor(() => again!.state.lists.inboxIds().length === 0, 5_000, 'an empty inbox');
    expect(lines.some((l) => l.includes('resuming list mail received before the last stop'))).toBe(true);
  });
});
