import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawExchange } from '../../helpers/http.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';

let t: TestSuite;

beforeAll(async () => {
  t = await startTestSuite({
    main: { http: { userdir: 'members.test' } },
    tenants: {
      'a.test': { domains: ['a.test', 'www.a.test'], proxy: [{ path: '/app/', to: 'http://127.0.0.1:9/' }] },
    },
    files: {
      'a.test/index.html': 'A home',
      'a.test/about/index.html': 'About',
      'a.test/evil.test/index.html': 'a folder named like a host',
    },
  });
});
afterAll(async () => t?.stop());

const send = (target: string, host: string) => rawExchange(t.http, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);

/** Raw request target, Host, and the Location expected (undefined: no redirect at all). */
const TABLE: Array<[string, string, string | undefined]> = [
  ['/.', 'a.test', '/'],
  ['//evil.test/..', 'a.test', '/'],
  ['/about//..', 'a.test', '/'],
  ['//.', 'a.test', '/'],
  ['/%2e', 'a.test', '/'],
  ['/%2E', 'www.a.test', '/'],
  ['//evil.test/%2e%2e', 'a.test', '/'],
  ['///evil.test/..', 'a.test', '/'],
  ['////evil.test//..', 'a.test', '/'],
  ['/about/..', 'a.test', '/'],
  ['/about/../.', 'a.test', '/'],
  ['/about/./..', 'a.test', '/'],
  ['/about/%2e%2e', 'a.test', '/'],
  ['/.?x=1', 'a.test', '/?x=1'],
  ['/.?//evil.test', 'a.test', '/?//evil.test'],
  ['//about', 'a.test', '/about/'],
  ['//evil.test', 'a.test', '/evil.test/'],
  ['///evil.test', 'www.a.test', '/evil.test/'],
  ['/.//evil.test', 'a.test', '/evil.test/'],
  ['//evil.test/about/..', 'a.test', '/evil.test/'],
  ['http://a.test//evil.test/..', 'elsewhere.test', '/'],
  ['http://a.test/.', 'a.test', '/'],
  ['//app', 'a.test', '/app/'],
  ['/app/..//app', 'a.test', '/app/'],
  ['/~a.test', 'members.test', '/~a.test/'],
  ['/~a.test/about', 'members.test', '/~a.test/about/'],
  ['/~a.test/.', 'members.test', '/~a.test/'],
  ['/~a.test//about//..', 'members.test', '/~a.test/'],
  ['/~a.test/%2e', 'members.test', '/~a.test/'],
  ['/\\evil.test', 'a.test', undefined],
  ['/%5cevil.test', 'a.test', undefined],
  ['/%2f%2fevil.test', 'a.test', undefined],
  ['//\\evil.test', 'a.test', undefined],
];

describe('every redirect is to a local path', () => {
  it.each(TABLE)('%s (Host: %s) → %s', async (target, host, expected) => {
    const r = await send(target, host);
    const location = r.header('location');
    if (location !== undefined) {
      // A Location starting with "//" or "/\" is protocol-relative to browsers: another host.
      expect(location).toMatch(/^\/(?![/\\])/);
      expect(location).not.toMatch(/[\r\n\\]/);
    }
    expect(location).toBe(expected);
    if (expected !== undefined) expect(r.status).toBe(301);
  });
});
