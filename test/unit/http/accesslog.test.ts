import { describe, expect, it } from 'vitest';
import { combinedLine, escapeField, requestLineOf } from '../../../src/http/accesslog.ts';

describe('combinedLine', () => {
  it('writes the Combined Log Format', () => {
    const line = combinedLine(
      { remote: '127.0.0.1', method: 'GET', url: '/a b', httpVersion: '1.1', status: 200, bytes: 512, referer: 'http://r.test/', userAgent: 'curl/8' },
      Date.UTC(2026, 9, 10, 13, 55, 36),
    );
    expect(line).toBe('127.0.0.1 - - [10/Oct/2026:13:55:36 +0000] "GET /a b HTTP/1.1" 200 512 "http://r.test/" "curl/8"\n');
  });
  it('writes "-" for no body, no referer and no agent', () => {
    expect(combinedLine({ remote: '::1', method: 'HEAD', url: '/', httpVersion: '1.0', status: 304, bytes: 0, referer: undefined, userAgent: undefined })).toMatch(
      /^::1 - - \[.*\] "HEAD \/ HTTP\/1\.0" 304 - "-" "-"\n$/,
    );
  });
  it('escapes quotes, backslashes, control and non-ASCII bytes so a line cannot be forged', () => {
    expect(escapeField('a"b\\c\nd\x1be')).toBe('a\\"b\\\\c\\x0ad\\x1be');
    expect(escapeField('é')).toBe('\\xc3\\xa9');
    const line = combinedLine({ remote: '1.2.3.4', method: 'GET', url: '/', httpVersion: '1.1', status: 200, bytes: 1, referer: undefined, userAgent: 'x"\n1.2.3.4 - - fake' });
    expect(line.split('\n')).toHaveLength(2);
  });
});

describe('requestLineOf (the request line of bytes the parser refused)', () => {
  it.each([
    ['GET /x HTTP/1.1\r\nHost: a\r\n', 'GET /x HTTP/1.1'],
    ['GET /x HTTP/1.0\n', 'GET /x HTTP/1.0'],
    ['CONNECT a.test:443 HTTP/1.1\r\n', 'CONNECT a.test:443 HTTP/1.1'],
    ['GET / HTTP/1.1 extra\r\n', '-'],
    ['GET /a b HTTP/1.1\r\n', '-'],
    ['GET /nul\0 HTTP/1.1\r\n', '-'],
    ['GET /caf\xe9 HTTP/1.1\r\n', '-'],
    ['G(T / HTTP/1.1\r\n', '-'],
    ['GET / HTTP/1.1', '-'], // no end of line: not known to be the whole line
    ['\r\n', '-'],
    ['x-big: xxxxxxxx\r\n', '-'], // a later packet of the head
  ])('%j → %j', (raw, line) => {
    expect(requestLineOf(Buffer.from(raw, 'latin1'))).toBe(line);
  });
  it('is "-" without bytes', () => expect(requestLineOf(undefined)).toBe('-'));
  it('writes the given request line, escaped, instead of method and url', () => {
    const line = combinedLine({ remote: '::1', method: '-', url: '-', httpVersion: '-', request: '-', status: 400, bytes: 10, referer: undefined, userAgent: undefined });
    expect(line).toMatch(/^::1 - - \[.*\] "-" 400 10 "-" "-"\n$/);
  });
});
