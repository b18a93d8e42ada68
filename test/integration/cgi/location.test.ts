import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boxMissing, call, startCgiSuite, type CgiTestSuite } from '../../helpers/cgi.ts';

// A handler's Location passes only as a path starting with exactly one "/"
// or a URL on one of the tenant's own domains; anything else is a 502 with
// a log line, never a redirect a browser would take to another host.

let s: CgiTestSuite;

beforeAll(async () => {
  s = await startCgiSuite({
    tenants: { 'own.test': { domains: ['own.test', 'www.own.test'], cgi: true } },
    files: {
      // Prints the Location given (base64url, so tabs and backslashes arrive as they are).
      'own.test/cgi-bin/loc.js':
        "module.exports = (c) => c.stdout.write('Status: 303 See Other\\r\\nLocation: ' + Buffer.from(new URLSearchParams(c.env.QUERY_STRING).get('to'), 'base64url').toString('latin1') + '\\r\\n\\r\\n');\n",
    },
  });
});
afterAll(async () => {
  await s?.stop();
});

const redirect = (to: string) => call(s.http, 'own.test', `/cgi-bin/loc?to=${Buffer.from(to, 'latin1').toString('base64url')}`);

describe.skipIf(boxMissing)("a handler's Location", () => {
  it.each(['/thanks.html', '/a/b?x=%2F', 'https://www.own.test/x', 'http://own.test:8080/'])('passes %j as a 303', async (to) => {
    const res = await redirect(to);
    expect(res.status).toBe(303);
    expect(res.headers.location).toBe(to);
  });

  it.each([
    '/\\evil.test',
    '//evil.test',
    '///evil.test',
    '/\\\\evil.test',
    '\\\\evil.test',
    '\\/evil.test',
    'http://evil.test/',
    'https://evil.test/',
    'http://own.test.evil.test/',
    'http://own.test@evil.test/',
    'http://evil.test\\@own.test/',
    'http:evil.test',
    'http:/\\evil.test',
    '%2F%2Fevil.test',
    '/%2F%2Fevil.test',
    '/%5Cevil.test',
    '/\t/evil.test',
    '\t//evil.test',
    'javascript:alert(1)',
    'thanks.html',
  ])('refuses %j with a 502 and a log line', async (to) => {
    const res = await redirect(to);
    expect(res.status).toBe(502);
    expect(res.headers.location).toBeUndefined();
    expect(await res.text()).toMatch(/502/);
    const line = s.logs().filter((l) => l.msg === 'handler answer refused').at(-1);
    expect(line).toMatchObject({ tenant: 'own.test', handler: 'loc' });
    expect(String(line!.why)).toContain('Location');
    expect(String(line!.why)).toContain(JSON.stringify(to.trim()).slice(1, -1));
  });
});
