import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { boxMissing, call } from '../../helpers/cgi.ts';
import { cli } from '../../helpers/cli.ts';
import { type MailSink, startRelaySuite, stopRelaySuite } from '../../helpers/mailsink.ts';
import { waitFor, type TestSuite } from '../../helpers/suite.ts';
import { mailTo, msg, sendMail, web } from '../lists/helpers.ts';

// `tenant remove` takes away everything a tenant owned (state rows of every
// service, its queued mail, logs, web root), archived under
// <data>/archive/<id>-<time>/; `tenant restore` brings it back. A new tenant
// with the same id starts empty.

let t: TestSuite;
let sink: MailSink;
let port: number;
const ID = 'gone.test';
const GONE = {
  domains: [ID],
  mail: { forward: { info: ['stuck@remote.test'] }, lists: { news: { owner: 'owner@remote.test', posting: 'members', archive: true, webUrl: 'http://gone.test' } } },
  forms: { recipients: ['forms-reader@remote.test'] },
};
const month = new Date().toISOString().slice(0, 7);

const run = (...args: string[]) => cli(...args, '--config', t.configDir);

/** Every row of every state table that names `tenant` (the queue by its tenant column). */
function rowsOf(tenant: string): Record<string, number> {
  const db = t.suite.state.db;
  const tables = (db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).all() as { name: string }[]).map((r) => r.name);
  const out: Record<string, number> = {};
  for (const name of tables) {
    const cols = (db.prepare(`PRAGMA table_info(${name})`).all() as { name: string }[]).map((c) => c.name);
    if (!cols.includes('tenant')) continue;
    out[name] = (db.prepare(`SELECT COUNT(*) AS n FROM ${name} WHERE tenant = ?`).get(tenant) as { n: number }).n;
  }
  return out;
}

/** One failed FTP login of `account`: its account key locked, its address pair counting one failure. */
function failLogin(account: string): void {
  const rules = [
    { key: `account:${account}`, account, limit: 1 },
    { key: `pair:${account}|192.0.2.7`, account, limit: 5 },
  ];
  const r = t.suite.state.ftpLogins.reserve(rules, 600_000);
  if (!('ticket' in r)) throw new Error(`${account} is locked already`);
  t.suite.state.ftpLogins.failed(r.ticket, rules, 600_000, 3_600_000);
}

/** The FTP login throttle rows of `account`. */
function ftpRows(account: string): { attempts: number; locks: number } {
  const n = (table: string) => (t.suite.state.db.prepare(`SELECT COUNT(*) AS n FROM ${table} WHERE account = ?`).get(account) as { n: number }).n;
  return { attempts: n('ftp_login_attempts'), locks: n('ftp_login_locks') };
}

beforeAll(async () => {
  ({ sink, t, port } = await startRelaySuite({
    // Member posts here are about what a tenant owns, not about their authentication (tested in lists/flow): checks off.
    smtp: { checks: { enabled: false } },
    tenants: { [ID]: GONE, 'keep.test': { domains: ['keep.test'], mail: { lists: { news: { owner: 'owner@remote.test' } } } } },
    files: { [`${ID}/index.html`]: 'the old site' },
  }));
  // info@gone.test forwards to an address the next hop keeps deferring: the message stays queued.
  sink.rcptReply.set('stuck@remote.test', [451, '4.2.0 mailbox busy, try later']);
});
afterAll(() => stopRelaySuite(t, sink));

describe.skipIf(boxMissing)('tenant remove and restore', () => {
  it('removes members, held posts, archive, form log, queued mail, logs, web root, DKIM keys, FTP throttle rows and handler scratch; a new tenant of that id inherits nothing; restore brings it back', async () => {
    // What the tenant owns: a member, an archived post, a held post, a form entry, a deferred message, an access log.
    expect((await run('list', 'add', 'member@remote.test', `news@${ID}`, '--no-confirm')).code).toBe(0);
    expect((await run('list', 'add', 'member@remote.test', 'news@keep.test', '--no-confirm')).code).toBe(0);
    const before = sink.messages.length;
    await sendMail(port, 'member@remote.test', `news@${ID}`, msg('member@remote.test', `news@${ID}`, 'public post'));
    await mailTo(sink, 'member@remote.test', /public post/, before);
    await sendMail(port, 'stranger@remote.test', `news@${ID}`, msg('stranger@remote.test', `news@${ID}`, 'held post'));
    await mailTo(sink, 'owner@remote.test', /^confirm /, before);
    const form = await call(t.http, ID, '/cgi-bin/formmail', {
      method: 'POST',
      body: new URLSearchParams({ name: 'Vera', email: 'vera@visitor.test', message: 'form text' }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(form.status).toBe(200);
    await sendMail(port, 'someone@remote.test', `info@${ID}`, msg('someone@remote.test', `info@${ID}`, 'stays queued'));
    await waitFor(() => t.suite.state.mailQueue.list().some((m) => m.tenant === ID && m.attempts > 0), 10_000, 'a deferred message of the tenant');
    await waitFor(() => t.suite.state.lists.inboxIds().length === 0 && t.suite.state.forms.list(ID).length === 1, 10_000, 'list mail handled and the form logged');
    expect((await web(t, ID, `/lists/news/archive/${month}/`)).body.toString()).toContain('public post');
    t.suite.state.traffic.flush();
    const owned = rowsOf(ID);
    for (const table of ['list_members', 'list_archive', 'list_held', 'form_submissions', 'mail_queue', 'traffic']) expect(owned[table], table).toBeGreaterThan(0);

    // Owned outside the tables that name a tenant: DKIM keys (rows and files), FTP login throttle rows, the handlers' scratch folder.
    await t.suite.state.dkim.ensure(ID);
    await t.suite.state.dkim.ensure('keep.test');
    const dkimOf = (domain: string) => t.suite.state.dkim.list(domain).map((k) => k.selector).sort();
    const gonesKeys = dkimOf(ID);
    expect(gonesKeys).toHaveLength(2);
    failLogin(`bob@${ID}`);
    failLogin('bob@keep.test');
    expect(ftpRows(`bob@${ID}`)).toEqual({ attempts: 1, locks: 1 });
    const scratch = path.join(t.dataDir, 'cgi', ID);
    expect(existsSync(scratch)).toBe(true);
    writeFileSync(path.join(scratch, 'counter.txt'), '7');

    const r = await run('tenant', 'remove', ID, '--yes');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const archive = /archived in (\S+)\n/.exec(r.out)![1]!;
    expect(path.basename(archive)).toMatch(/^gone\.test-\d{8}T\d{6}Z$/);

    // Nothing of it is left in state, the queue, the spool, the logs or the sites.
    expect(Object.values(rowsOf(ID)).every((n) => n === 0)).toBe(true);
    expect(t.suite.state.mailQueue.list().filter((m) => m.tenant === ID)).toEqual([]);
    expect(existsSync(path.join(t.dataDir, 'logs', ID))).toBe(false);
    expect(existsSync(path.join(t.sitesDir, ID))).toBe(false);
    expect(t.suite.state.dkim.list(ID)).toEqual([]);
    expect(existsSync(path.join(t.dataDir, 'dkim', ID))).toBe(false);
    expect(ftpRows(`bob@${ID}`)).toEqual({ attempts: 0, locks: 0 });
    expect(existsSync(scratch)).toBe(false);
    // The other tenant's list, keys and throttle rows are untouched.
    expect(t.suite.state.lists.members('keep.test', 'news').map((m) => m.address)).toEqual(['member@remote.test']);
    expect(dkimOf('keep.test')).toHaveLength(2);
    expect(ftpRows('bob@keep.test')).toEqual({ attempts: 1, locks: 1 });
    expect(readFileSync(path.join(archive, 'cgi', 'counter.txt'), 'utf8')).toBe('7');
    expect(readdirSync(path.join(archive, 'dkim', ID)).sort()).toEqual(gonesKeys.map((sel) => `${sel}.key`));
    // The archive holds what was removed: the file, the site, the rows, the queued message.
    expect(readFileSync(path.join(archive, `${ID}.yaml`), 'utf8')).toContain('stuck@remote.test');
    expect(readFileSync(path.join(archive, 'site', 'index.html'), 'utf8')).toBe('the old site');
    const mails = readdirSync(path.join(archive, 'mail')).filter((n) => n.endsWith('.eml'));
    expect(mails).toHaveLength(1);
    expect(readFileSync(path.join(archive, 'mail', mails[0]!), 'utf8')).toContain('Subject: stays queued');
    await waitFor(async () => (await web(t, ID, '/')).status === 404, 5_000, 'the tenant to be off line');

    // A new tenant with the same id and the same list starts empty.
    t.writeTenant(ID, GONE);
    await waitFor(async () => (await web(t, ID, '/lists/news/archive/')).status === 200, 5_000, 'the new tenant to be served');
    expect(t.suite.state.lists.members(ID, 'news')).toEqual([]);
    expect(t.suite.state.lists.heldOf(ID, 'news')).toEqual([]);
    expect(t.suite.state.forms.list(ID)).toEqual([]);
    expect(t.suite.state.dkim.list(ID)).toEqual([]);
    expect((await web(t, ID, '/lists/news/archive/')).body.toString()).not.toContain(month);
    expect((await run('list', 'members', `news@${ID}`)).out).toBe('0 members\n');
    expect((await run('forms', ID)).out).toBe(`${ID}: no form submissions\n`);

    // Restore refuses while a tenant of that id exists, and changes nothing.
    const refused = await run('tenant', 'restore', archive);
    expect(refused).toMatchObject({ code: 1, out: '' });
    expect(refused.err).toBe(`makewaves: tenant "${ID}" exists; remove it first (makewaves tenant remove ${ID} --yes)\n`);
    expect(existsSync(archive)).toBe(true);

    // The stand-in goes (its own archive), and the old tenant comes back whole.
    expect((await run('tenant', 'remove', ID, '--yes')).code).toBe(0);
    const back = await run('tenant', 'restore', archive);
    expect(back.err).toBe('');
    expect(back.code).toBe(0);
    // Only the copy of the queued message stays behind (it is not sent again).
    expect(readdirSync(archive).sort()).toEqual(['mail', 'manifest.json']);
    expect(back.out).toContain(`1 message(s) that were queued are not sent again; copies stay in ${path.join(archive, 'mail')}`);
    await waitFor(async () => (await web(t, ID, '/')).body.toString() === 'the old site', 5_000, 'the restored site');
    expect(t.suite.state.lists.members(ID, 'news').map((m) => m.address)).toEqual(['member@remote.test']);
    expect(t.suite.state.lists.heldOf(ID, 'news').map((h) => h.subject)).toEqual(['held post']);
    expect(t.suite.state.forms.list(ID).map((f) => f.text)).toEqual([expect.stringContaining('form text')]);
    expect((await web(t, ID, `/lists/news/archive/${month}/`)).body.toString()).toContain('public post');
    expect(readFileSync(path.join(t.configDir, 'tenants', `${ID}.yaml`), 'utf8')).toBe(stringify(GONE));
    expect(dkimOf(ID)).toEqual(gonesKeys);
    expect(t.suite.state.dkim.signing(ID).map((k) => t.suite.state.dkim.privateKey(k))).toHaveLength(2);
    expect(ftpRows(`bob@${ID}`)).toEqual({ attempts: 1, locks: 1 });
    expect(readFileSync(path.join(scratch, 'counter.txt'), 'utf8')).toBe('7');
  }, 60_000);
});
