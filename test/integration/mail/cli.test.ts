import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../../helpers/cli.ts';
import { freePort, RawSmtp, smtpPort } from '../../helpers/mailsink.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite;
let port: number;

beforeAll(async () => {
  t = await startTestSuite({
    main: { smtp: { listen: ['127.0.0.1:0'], relay: `smtp://127.0.0.1:${await freePort()}`, idleTimeout: 0.5, queue: { minBackoff: 3600 } } },
    tenants: { 'a.test': { domains: ['a.test'], mail: { forward: { info: 'alice@remote.test' } } } },
  });
  port = smtpPort(t.suite);
});
afterAll(async () => {
  await t?.stop();
});

describe('makewaves queue', () => {
  it('lists, flushes and deletes through the running server', async () => {
    const c = nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true, name: 'client.test' });
    await c.sendMail({ envelope: { from: 'sender@elsewhere.test', to: ['info@a.test'] }, raw: 'Subject: q\r\n\r\nx\r\n' });
    await waitFor(() => t.logs().some((l) => l.msg === 'delivery attempt'), 5_000, 'an attempt');
    const list = await cli('queue', '--config', t.configDir);
    expect(list.code).toBe(0);
    expect(list.out).toMatch(/^[A-Z0-9]+ {2}age \d+s {2}\d+ bytes {2}from <sender@elsewhere\.test> {2}attempts 1 {2}next in \d+m\n {4}to <alice@remote\.test>\n {4}last reply: 4\.4\.1 .*ECONNREFUSED/m);
    expect(list.out).toMatch(/^1 message queued$/m);
    const id = /^([A-Z0-9]+) /.exec(list.out)![1]!;

    const flush = await cli('queue', 'flush', '--config', t.configDir);
    expect(flush).toMatchObject({ code: 0, out: 'flushing 1 queued message(s)\n' });
    await waitFor(() => t.logs().filter((l) => l.msg === 'delivery attempt').length >= 2, 5_000, 'a second attempt');

    expect(await cli('queue', 'delete', 'NOSUCH1', '--config', t.configDir)).toMatchObject({ code: 1, err: 'makewaves: no message NOSUCH1 in the queue\n' });
    expect(await cli('queue', 'delete', id, '--config', t.configDir)).toMatchObject({ code: 0, out: `deleted ${id}\n` });
    expect((await cli('queue', '--config', t.configDir)).out).toBe('0 messages queued\n');
  });

  it('refuses flush clearly when no server is running', async () => {
    const other = await startTestSuite({ main: { smtp: { listen: ['127.0.0.1:0'] } }, tenants: { 'b.test': { domains: ['b.test'] } } });
    const configDir = other.configDir;
    await other.suite.stop(0);
    const r = await cli('queue', 'flush', '--config', configDir);
    await other.stop();
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^makewaves: no makewaves server is running with this data folder \(nothing answers on .*mail\.sock\)\n$/);
  });
});

describe('idle sessions', () => {
  it('closes a silent session after smtp.idleTimeout with 421', async () => {
    const c = await RawSmtp.connect(port);
    expect(await c.reply(5_000)).toMatch(/^421 .*[Tt]imeout/);
    c.close();
  });
});
