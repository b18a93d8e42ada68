import { describe, expect, it } from 'vitest';
import { tenantSchema } from '../../../src/core/config/schema.ts';
import type { Tenant } from '../../../src/core/registry.ts';
import { fieldsFor, globRegExp } from '../../../src/http/headers.ts';

const tenant = (headers: unknown[]): Tenant => ({ id: 't.test', config: tenantSchema.parse({ domains: ['t.test'], headers }) }) as unknown as Tenant;
const asMap = (fields: ReturnType<typeof fieldsFor>) => Object.fromEntries(fields.map((f) => [f.name, f.value]));

describe('header patterns', () => {
  it.each([
    ['/assets/*', '/assets/a/b.css', true],
    ['/assets/*', '/assets', false],
    ['/assets/*', '/other/assets/x', false],
    ['*.pdf', '/docs/a.pdf', true],
    ['*.pdf', '/docs/apdf', false], // "." is itself, not "any character"
    ['/a+b/(x)', '/a+b/(x)', true], // regex characters are literal
    ['/a+b/(x)', '/aab/x', false],
    ['/*', '/', true],
    ['/exact', '/exact/', false],
  ])('%s against %s: %s', (pattern, path, match) => {
    expect(globRegExp(pattern).test(path)).toBe(match);
  });
});

describe('fieldsFor', () => {
  it('gives the defaults to a tenant without entries, and to no tenant', () => {
    const expected = { 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'strict-origin-when-cross-origin' };
    expect(asMap(fieldsFor(tenant([]), '/', 'own'))).toEqual(expected);
    expect(asMap(fieldsFor(undefined, '/', 'own'))).toEqual(expected);
  });

  it('takes the first matching entry per field (names ignore case), then the defaults', () => {
    const t = tenant([
      { match: '/assets/*', set: { 'Cache-Control': 'immutable' } },
      { match: '/*', set: { 'cache-control': 'no-cache', 'X-Frame-Options': 'DENY', 'Referrer-Policy': '' } },
    ]);
    expect(asMap(fieldsFor(t, '/assets/x.css', 'own'))).toEqual({ 'Cache-Control': 'immutable', 'X-Frame-Options': 'DENY', 'Referrer-Policy': '', 'X-Content-Type-Options': 'nosniff' });
    expect(asMap(fieldsFor(t, '/page', 'own'))['cache-control']).toBe('no-cache');
  });

  it('skips entries with proxied: false for proxied answers only', () => {
    const t = tenant([{ match: '/*', set: { 'X-A': '1' }, proxied: false }]);
    expect(asMap(fieldsFor(t, '/x', 'proxied'))['X-A']).toBeUndefined();
    expect(asMap(fieldsFor(t, '/x', 'handler'))['X-A']).toBe('1');
  });
});
