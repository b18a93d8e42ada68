import { describe, expect, it } from 'vitest';
import { routeRequest } from '../../../src/http/route.ts';
import { registryOf } from '../../helpers/registry.ts';

const host = (value: string) => ({ ok: true as const, value });

describe('routes kept between requests', () => {
  it('gives the same route for the same Host and target, frozen, so no request can change another one', () => {
    const reg = registryOf({ 'a.test': { domains: ['a.test'] } });
    const first = routeRequest(reg, '/docs/page.html?x=1', host('a.test'));
    expect(first).toMatchObject({ kind: 'static', segments: ['docs', 'page.html'], query: 'x=1', authority: 'a.test' });
    expect(routeRequest(reg, '/docs/page.html?x=1', host('a.test'))).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
    expect(first.kind === 'static' && Object.isFrozen(first.segments)).toBe(true);
    // Another Host, another port, an absolute-form target: each decided on its own.
    expect(routeRequest(reg, '/docs/page.html?x=1', host('b.test'))).toMatchObject({ kind: 'error', status: 404 });
    expect(routeRequest(reg, '/docs/page.html?x=1', host('a.test:8080'))).toMatchObject({ kind: 'static', authority: 'a.test:8080' });
    expect(routeRequest(reg, 'http://b.test/docs/page.html', host('a.test'))).toMatchObject({ kind: 'error', status: 404, authority: 'b.test' });
  });

  it('decides afresh under a new registry: a tenant suspended by a reload is suspended on its next request', () => {
    const before = registryOf({ 'a.test': { domains: ['a.test'] } });
    expect(routeRequest(before, '/index.html', host('a.test')).kind).toBe('static');
    const after = registryOf({ 'a.test': { domains: ['a.test'], suspended: true } });
    expect(routeRequest(after, '/index.html', host('a.test')).kind).toBe('suspended');
    expect(routeRequest(before, '/index.html', host('a.test')).kind).toBe('static');
  });
});
