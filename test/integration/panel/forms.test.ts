import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../../src/lib/password.ts';
import { cli } from '../../helpers/cli.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';
import { asAlice } from './helpers.ts';

// Forms in the panel: recipients through the tenant-file writer `makewaves
// forms recipients` uses, and recent submissions with what became of them.

let t: TestSuite;
const FILE = `# the customer's site
domains: [example.test]
ftp:
  - { user: alice, password: "HASH" }
forms:
  recipients: [office@example.net]   # who reads the contact form
`;
const fileText = () => readFileSync(path.join(t.configDir, 'tenants', 'example.test.yaml'), 'utf8');
const escHtml = (s: string) => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;').replaceAll("'", '&#39;');

beforeAll(async () => {
  t = await startTestSuite({
    main: { panel: { host: 'panel.makewaves.test' } },
    tenants: { 'example.test': { domains: ['example.test'] }, 'other.test': { domains: ['other.test'] } },
  });
  t.writeTenant('example.test', FILE.replace('HASH', await hashPassword('wonderland')));
  expect(t.suite.reload()).toBe(true);
}, 30_000);
afterAll(() => t?.stop());

const alice = () => asAlice(t.http);

describe('forms in the panel', () => {
  it('adds and removes recipients in the tenant file (comments kept), refusing in the CLI\'s words', async () => {
    const c = await alice();
    const csrf = await c.csrf('/t/example.test/forms');
    expect((await c.post('/t/example.test/forms', { csrf, address: 'Sales@Example.net' })).status).toBe(303);
    expect(fileText()).toContain('recipients: [office@example.net, sales@example.net] # who reads the contact form');
    expect(t.suite.registry().tenants.get('example.test')!.config.forms!.recipients).toEqual(['office@example.net', 'sales@example.net']);
    const page = await c.get('/t/example.test/forms?done=added');
    expect(page.text).toContain('The recipient was added.');
    expect(page.text).toContain('<td>sales@example.net</td>');

    const before = fileText();
    const dup = await c.post('/t/example.test/forms', { csrf, address: 'sales@example.net' });
    expect(dup.status).toBe(400);
    expect(dup.text).toContain('<p class="error" id="recipient-error">sales@example.net is already a forms recipient of example.test</p>');
    const bad = await c.post('/t/example.test/forms', { csrf, address: '<b>x</b>' });
    expect(bad.status).toBe(400);
    const cliSays = await cli('forms', 'recipients', 'add', 'example.test', '<b>x</b>', '--config', t.configDir);
    expect(cliSays.code).not.toBe(0);
    expect(bad.text).toContain(`<p class="error" id="recipient-error">${escHtml(cliSays.err.replace(/^makewaves: /, '').trim())}</p>`);
    expect(bad.text).not.toContain('<b>x</b>');
    expect(fileText()).toBe(before);

    expect((await c.post('/t/example.test/forms/remove', { csrf, address: 'office@example.net' })).status).toBe(303);
    expect(fileText()).toContain('recipients: [sales@example.net] # who reads the contact form');
    const missing = await c.post('/t/example.test/forms/remove', { csrf, address: 'office@example.net' });
    expect(missing.text).toContain('office@example.net is not a forms recipient of example.test');
    expect((await c.post('/t/example.test/forms', { address: 'x@example.net' })).status).toBe(403);
  });

  it('shows recent submissions newest first with their delivery outcome, escaped, and only its own', async () => {
    const add = (tenant: string, subject: string, text: string, queueId: string) =>
      t.suite.state.forms.add({ tenant, remote: '192.0.2.9', handler: 'contact.py', recipients: ['sales@example.net'], subject, text, queueId });
    add('example.test', 'First <script>alert(1)</script>', 'name: <img src=x onerror=alert(2)>', 'q1');
    add('example.test', 'Second', 'hello', 'q2');
    add('example.test', 'Third', 'hi', 'q3');
    add('other.test', 'Not yours', 'secret', 'q4');
    t.suite.state.forms.recordOutcome('q1', 'delivered', null);
    t.suite.state.forms.recordOutcome('q2', 'bounced', '550 5.1.1 <sales@example.net>: no such user');
    const c = await alice();
    const page = (await c.get('/t/example.test/forms')).text;
    const table = page.slice(page.indexOf('<table id="submissions">'));
    expect(table.indexOf('Third')).toBeLessThan(table.indexOf('Second'));
    expect(table.indexOf('Second')).toBeLessThan(table.indexOf('First'));
    expect(table).toContain('<td class="outcome-delivered">delivered</td>');
    expect(table).toContain('<td class="outcome-bounced">bounced: 550 5.1.1 &lt;sales@example.net&gt;: no such user</td>');
    expect(table).toContain('<td class="outcome-queued">queued</td>');
    expect(table).toContain('First &lt;script&gt;alert(1)&lt;/script&gt;');
    expect(table).toContain('name: &lt;img src=x onerror=alert(2)&gt;');
    expect(page).not.toMatch(/<script>alert|<img /);
    expect(page).not.toContain('Not yours');
  });
});
