import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { headWithoutOffer, offersWebSocket } from '../../../src/http/upgrade.ts';

const req = (rawHeaders: string[], method = 'GET', url = '/') => {
  const headers: Record<string, string> = {};
  for (let i = 0; i < rawHeaders.length; i += 2) headers[rawHeaders[i]!.toLowerCase()] ??= rawHeaders[i + 1]!;
  return { method, url, httpVersion: '1.1', rawHeaders, headers } as unknown as IncomingMessage;
};

describe('headWithoutOffer', () => {
  const TABLE: Array<[string[], string[]]> = [
    [['Host', 'a.test', 'Connection', 'Upgrade, HTTP2-Settings', 'Upgrade', 'h2c', 'HTTP2-Settings', 'AAMA'], ['Host: a.test']],
    [['Host', 'a.test', 'Connection', 'keep-alive, Upgrade', 'Upgrade', 'websocket'], ['Host: a.test', 'Connection: keep-alive']],
    [['Host', 'a.test', 'connection', 'close,upgrade', 'upgrade', 'foo'], ['Host: a.test', 'connection: close']],
    [['Host', 'a.test', 'Connection', 'Upgrade', 'Connection', 'close', 'UPGRADE', 'h2c', 'Upgrade', 'websocket'], ['Host: a.test', 'Connection: close']],
    [['Host', 'a.test', 'Content-Length', '3', 'Connection', ' , Upgrade ,', 'Upgrade', 'h2c', 'X-Caf\u00e9', 'cr\u00e8me'], ['Host: a.test', 'Content-Length: 3', 'X-Caf\u00e9: cr\u00e8me']],
  ];
  it.each(TABLE)('%j → %j', (raw, lines) => {
    expect(headWithoutOffer(req(raw, 'POST', '/x?y=1')).toString('latin1')).toBe(`POST /x?y=1 HTTP/1.1\r\n${lines.map((l) => `${l}\r\n`).join('')}\r\n`);
  });
});

describe('offersWebSocket', () => {
  it.each([
    ['websocket', true],
    ['WebSocket', true],
    ['h2c, websocket', true],
    ['h2c', false],
    ['websocket/13x', false],
    ['', false],
  ])('%j → %s', (upgrade, expected) => {
    expect(offersWebSocket(req(upgrade ? ['Upgrade', upgrade] : []))).toBe(expected);
  });
});
