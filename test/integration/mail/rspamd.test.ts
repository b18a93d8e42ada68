import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dkimSign } from 'mailauth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseVerdict, spamAction, spamFields, stripSpamFields } from '../../../src/mail/rspamd.ts';
import { boxMissing, call } from '../../helpers/cgi.ts';
import { runCli } from '../../helpers/cli.ts';
import { loadZone, startDnsServer, type DnsServer } from '../../helpers/dnsserver.ts';
import { haveSwaks, smtpPort, startSink, swaks, type MailSink, type SunkMessage } from '../../helpers/mailsink.ts';
import { GTUBE, haveRspamd, noRspamd, startRspamd, TAG_TOKEN, type Rspamd } from '../../helpers/rspamd.ts';
import { startTestSuite, waitFor, type TestSuite } from '../../helpers/suite.ts';

if (!haveRspamd) console.warn(`rspamd tests skipped: ${noRspamd}`);

describe('reading rspamd verdicts', () => {
  const verdict = parseVerdict('{"is_skipped":false,"score":8.5,"required_score":15,"action":"add header","symbols":{"B":{"score":0.5},"A":{"score":8}}}');

  it('keeps the score and the symbols, highest first', () => {
    expect(verdict).toEqual({ score: 8.5, action: 'add header', skipped: false, symbols: [['A', 8], ['B', 0.5]] });
    expect(spamFields(verdict)).toBe('X-Spam: Yes\r\nX-Spam-Score: 8.50\r\nX-Spam-Symbols: A(8.00),\r\n\tB(0.50)\r\n');
  });

  it.each([
    [14.99, false, 'add header', 'tag'],
    [15, false, 'reject', 'reject'],
    [5.99, false, 'no action', 'accept'],
    // A pre-filter's reject (GTUBE) holds whatever its score.
    [0, true, 'reject', 'reject'],
  ] as const)('score %s (skipped: %s, rspamd: %s) → %s with reject 15, tag 6', (score, skipped, action, want) => {
    expect(spamAction({ score, skipped, action, symbols: [] }, { reject: 15, tag: 6 })).toBe(want);
  });

  it('refuses an answer that is not a verdict', () => {
    expect(() => parseVerdict('{"error":"bad request"}')).toThrow(/not an rspamd verdict/);
  });

  it("removes X-Spam and X-Spam-* fields (folded ones whole) and nothing else", () => {
    const raw = Buffer.from('X-Spam: No\r\nSubject: hi\r\nX-Spam-Symbols: A,\r\n\tB\r\nX-Spammy-Name: kept\r\nx-spam-score: -5\r\n\r\nX-Spam: body\r\n');
    const out = stripSpamFields(raw);
    expect(out.removed).toBe(3);
    expect(out.raw.toString()).toBe('Subject: hi\r\nX-Spammy-Name: kept\r\n\r\nX-Spam: body\r\n');
  });
});

let rspamd: Rspamd;
let sink: MailSink;
let dns: DnsServer;
let t: TestSuite;
let admin: string;
let tmp: string;

const spamConfig = (url: string, onFailure = 'accept') => ({ rspamd: url, reject: 15, tag: 6, onFailure, timeout: 5 });

describe.skipIf(!haveRspamd || !haveSwaks)(`content scoring by a real rspamd${haveRspamd ? '' : ` (skipped: ${noRspamd})`}`, () => {
  beforeAll(async () => {
    // An empty zone: every SPF/DKIM/DMARC lookup of the inbound checks is a quick NXDOMAIN.
    dns = await startDnsServer();
    [rspamd, sink] = await Promise.all([startRspamd(), startSink()]);
    t = await startTestSuite({
      main: {
        dns: { servers: [`127.0.0.1:${dns.port}`], timeout: 0.5 },
        admin: { listen: '127.0.0.1:0' },
        smtp: { listen: ['127.0.0.1:0'], relay: sink.url, waitForNextHop: 0 },
        spam: spamConfig(rspamd.url),
      },
      tenants: { 'a.test': { domains: ['a.test'], mail: { forward: { info: 'alice@remote.test' } }, forms: { recipients: ['owner@remote.test'] } } },
    });
    admin = t.suite.urls.admin![0]!;
    tmp = mkdtempSync(path.join(os.tmpdir(), 'makewaves-rspamd-test-'));
  }, 90_000);
  afterAll(async () => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    await t?.stop();
    await rspamd?.close();
    await sink?.close();
    await dns?.close();
  });

  const send = (subject: string, body: string, ...headers: string[]) =>
    swaks(smtpPort(t.suite), '--from', 'vera@sender.test', '--to', 'info@a.test', '--header', `Subject: ${subject}`, ...headers.flatMap((h) => ['--add-header', h]), '--body', body);
  const forwarded = (subject: string) => waitFor(() => sink.messages.find((m) => m.raw.toString('latin1').includes(`Subject: ${subject}\r\n`)), 5_000, `"${subject}" at the sink`);
  const head = (m: SunkMessage) => m.raw.toString('latin1').slice(0, m.raw.indexOf('\r\n\r\n') + 2);
  const scans = async (action: string) => Number(new RegExp(`^makewaves_spam_scans_total\\{action="${action}"\\} (\\d+)`, 'm').exec(await (await fetch(`${admin}/metrics`)).text())?.[1] ?? 0);

  it('refuses the GTUBE test message in the session with 550 5.7.1 and forwards nothing', async () => {
    const before = sink.messages.length;
    const r = await send('gtube', `This is a test.\n${GTUBE}\n`);
    expect(r.out).toMatch(/<\*\*\s+550 5\.7\.1 Message refused: our content filter takes it for spam \(/);
    const line = t.logs().find((l) => l.msg === 'message refused: rspamd scores it as spam');
    expect(line).toMatchObject({ from: 'vera@sender.test', rcpts: ['info@a.test'], remote: '127.0.0.1', symbols: expect.arrayContaining([expect.stringMatching(/^GTUBE\(/)]) });
    expect(await scans('reject')).toBe(1);
    // Whatever else was in flight has arrived; the refused one is not among it.
    await new Promise((r) => setImmediate(r));
    expect(sink.messages.slice(before).filter((m) => m.raw.includes('GTUBE'))).toEqual([]);
    // rspamd saw it with our queue id and the envelope.
    expect(rspamd.log()).toMatch(new RegExp(`qid: <${String(line!.qid)}>.*ip: 127\\.0\\.0\\.1.*from: <vera@sender\\.test>.*\\(reject\\)`));
  });

  it('forwards a message scored between tag and reject with X-Spam: Yes, its score and symbols, and none of the sender\'s X-Spam fields', async () => {
    const r = await send('tagged', `Hello, ${TAG_TOKEN} here.\n`, 'X-Spam: No', 'X-Spam-Score: -10');
    expect(r.out).toMatch(/<-\s+250 2\.6\.0 Ok: queued/);
    const h = head(await forwarded('tagged'));
    expect(h).toMatch(/(^|\r\n)X-Spam: Yes\r\nX-Spam-Score: 8\.00\r\nX-Spam-Symbols: MW_TEST_TOKEN\(8\.00\)\r\n/);
    expect(h.match(/^X-Spam[^:]*:/gim)).toEqual(['X-Spam:', 'X-Spam-Score:', 'X-Spam-Symbols:']);
    expect(h).not.toMatch(/-10|X-Spam: No/);
    expect(t.logs().find((l) => l.msg === 'message tagged as spam (X-Spam: Yes) and passed on')).toMatchObject({ from: 'vera@sender.test', score: 8 });
    expect(await scans('tag')).toBe(1);
  });

  it('forwards a clean message untagged, with the X-Spam fields its sender forged removed', async () => {
    const r = await send('clean', 'Just a note about lunch.\n', 'X-Spam: No', 'X-Spam-Score: -100', 'X-Spam-Flag: NO');
    expect(r.out).toMatch(/<-\s+250 2\.6\.0 Ok: queued/);
    const h = head(await forwarded('clean'));
    expect(h).not.toMatch(/^X-Spam/im);
    expect(h).toMatch(/^Authentication-Results: mx\.test;/m);
    expect(t.logs().some((l) => l.msg === "removed the sender's X-Spam fields" && l.removed === 3)).toBe(true);
    expect(await scans('accept')).toBeGreaterThanOrEqual(1);
  });

  it.skipIf(boxMissing)("does not send the suite's own form mail to rspamd (it goes out even with the GTUBE string in it)", async () => {
    const tasks = () => (rspamd.log().match(/rspamd_task_write_log/g) ?? []).length;
    const before = tasks();
    const res = await call(t.http, 'a.test', '/cgi-bin/formmail', {
      method: 'POST',
      body: new URLSearchParams({ recipient: 'owner@remote.test', subject: 'form with gtube', name: 'Vera', email: 'vera@visitor.test', message: GTUBE }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(res.status).toBe(200);
    const m = await forwarded('form with gtube');
    // Quoted-printable, cut at 76 characters: the test string is there, over a soft line break.
    expect(m.raw.toString('latin1').replace(/=\r\n/g, '')).toContain(GTUBE);
    expect(head(m)).not.toMatch(/^X-Spam/im);
    expect(tasks()).toBe(before);
  });

  it('does not score again what the suite signed itself when it comes back through SMTP; a signature of the same domain with a key not ours is scored', async () => {
    const tasks = () => (rspamd.log().match(/rspamd_task_write_log/g) ?? []).length;
    // Mail the suite originates (as form handlers and lists do): signed with a.test's key on its way into the queue.
    const raw = `From: forms@a.test\r\nTo: owner@remote.test\r\nSubject: own mail with gtube\r\nMessage-ID: <own.1@a.test>\r\n\r\n${GTUBE}\r\n`;
    await t.suite.mail!.submit({ from: 'forms@a.test', to: ['owner@remote.test'], raw: Buffer.from(raw), tenant: 'a.test' });
    const signed = await forwarded('own mail with gtube');
    loadZone(dns.zone, (await runCli('dns', 'a.test', '--config', t.configDir)).out);
    const before = tasks();
    const file = path.join(tmp, 'own.eml');
    writeFileSync(file, signed.raw);
    const r = await swaks(smtpPort(t.suite), '--from', 'forms@a.test', '--to', 'info@a.test', '--data', file);
    expect(r.out).toMatch(/<-\s+250 2\.6\.0 Ok: queued/);
    await waitFor(() => sink.messages.filter((m) => m.raw.includes('Subject: own mail with gtube')).length === 2, 5_000, 'the copy forwarded to info@');
    expect(tasks()).toBe(before);
    expect(t.logs().find((l) => typeof l.msg === 'string' && l.msg.startsWith('message not scored: it carries a valid DKIM signature of ours (d=a.test s=mw'))).toBeTruthy();

    // The same domain signing with a key of its own (another provider of the tenant's): not ours, so scored.
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const record = `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;
    dns.zone.set('other._domainkey.a.test', { txt: [record.match(/.{1,255}/g)!] });
    const theirs = raw.replace('own mail', 'their mail');
    const sig = await dkimSign(theirs, { signatureData: [{ signingDomain: 'a.test', selector: 'other', privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }] } as never);
    writeFileSync(file, sig.signatures + theirs);
    const r2 = await swaks(smtpPort(t.suite), '--from', 'forms@a.test', '--to', 'info@a.test', '--data', file);
    expect(r2.out).toMatch(/<\*\*\s+550 5\.7\.1 Message refused: our content filter takes it for spam/);
    expect(tasks()).toBe(before + 1);
  });

  it('accepts unscored and logs it while rspamd is down; with onFailure: tempfail answers 451 4.7.1', async () => {
    await rspamd.stop();
    const r = await send('while down', 'rspamd is not there.\n');
    expect(r.out).toMatch(/<-\s+250 2\.6\.0 Ok: queued/);
    await forwarded('while down');
    expect(t.logs().find((l) => l.msg === 'message accepted unscored: rspamd could not score it')).toMatchObject({ from: 'vera@sender.test', rspamd: rspamd.url, why: expect.stringMatching(/ECONNREFUSED/) });
    expect(await scans('failed')).toBe(1);

    const strict = await startTestSuite({
      main: { dns: { servers: [`127.0.0.1:${dns.port}`], timeout: 0.5 }, smtp: { listen: ['127.0.0.1:0'], relay: sink.url, waitForNextHop: 0 }, spam: spamConfig(rspamd.url, 'tempfail') },
      tenants: { 'a.test': { domains: ['a.test'], mail: { forward: { info: 'alice@remote.test' } } } },
    });
    try {
      const before = sink.messages.length;
      const d = await swaks(smtpPort(strict.suite), '--from', 'vera@sender.test', '--to', 'info@a.test', '--header', 'Subject: deferred', '--body', 'later\n');
      expect(d.out).toMatch(/<\*\*\s+451 4\.7\.1 Cannot check this message for spam now, try again later/);
      expect(strict.logs().find((l) => l.msg === 'message deferred: rspamd could not score it (spam.onFailure: tempfail)')).toMatchObject({ from: 'vera@sender.test' });
      expect(sink.messages.slice(before).filter((m) => m.raw.includes('Subject: deferred'))).toEqual([]);
    } finally {
      await strict.stop();
    }
  });
});
