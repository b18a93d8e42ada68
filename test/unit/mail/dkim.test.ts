import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/core/log.ts';
import { createDkimSigner, fromDomain } from '../../../src/mail/mailauth.ts';
import { openState } from '../../../src/state/index.ts';
import { dkimPython, noDkimpy, verifyDkim } from '../../helpers/dkim.ts';
import { tempDirs } from '../../helpers/tmp.ts';

const tmp = tempDirs('makewaves-dkim-');

describe('fromDomain: the domain that signs when it is ours', () => {
  it.each([
    ['From: forms@a.test\r\n\r\nx', 'a.test'],
    ['From: "a.test forms" <forms@A.Test>\r\nTo: x@y\r\n\r\n', 'a.test'],
    ['Subject: s\r\nfrom: =?utf-8?q?V=C3=A9ra?=\r\n <vera@b.test>\r\n\r\n', 'b.test'],
    ['To: x@y.test\r\n\r\nFrom: body@c.test\r\n', undefined],
    ['From: nobody\r\n\r\n', undefined],
    ['From: Mail Delivery System <MAILER-DAEMON@mx.test>\r\n\r\n', 'mx.test'],
    // Hostile: an address in a quoted display name or a comment is not the sender; several addresses name no one domain.
    ['From: "Bob <b@ours.test>" v@yahoo.test\r\n\r\n', 'yahoo.test'],
    ['From: v@yahoo.test (via x@ours.test)\r\n\r\n', 'yahoo.test'],
    ['From: (b@ours.test) <v@yahoo.test>\r\n\r\n', 'yahoo.test'],
    ['From: a@ours.test, eve@yahoo.test\r\n\r\n', undefined],
    ['From: Friends: a@yahoo.test, b@ours.test;\r\n\r\n', undefined],
  ])('%j → %s', (raw, domain) => {
    expect(fromDomain(Buffer.from(raw))).toBe(domain);
  });
});

describe('DKIM keys in state', () => {
  it('two processes making the first keys of a domain at once end with one pair (the loser removes its files)', async () => {
    const dir = tmp();
    const [a, b] = [openState(dir), openState(dir)];
    try {
      const [ka, kb] = await Promise.all([a.dkim.ensure('a.test'), b.dkim.ensure('a.test')]);
      expect(ka.map((k) => k.selector)).toEqual(kb.map((k) => k.selector));
      expect(readdirSync(path.join(dir, 'dkim', 'a.test')).sort()).toEqual(ka.map((k) => `${k.selector}.key`).sort());
      // A second rotation on the same day still gets new selectors.
      const first = await a.dkim.rotate('a.test', 7);
      const second = await a.dkim.rotate('a.test', 7);
      expect(new Set([...ka, ...first.made, ...second.made].map((k) => k.selector)).size).toBe(6);
      expect(a.dkim.signing('a.test')).toEqual(second.made);
    } finally {
      a.close();
      b.close();
    }
  });

  it('never overwrites a key file another process has just written (its row not recorded yet): the next selector is taken', async () => {
    const dir = tmp();
    const now = Date.UTC(2026, 11, 6, 12);
    mkdirSync(path.join(dir, 'dkim', 'a.test'), { recursive: true });
    const theirs = path.join(dir, 'dkim', 'a.test', 'mw20261206r.key');
    writeFileSync(theirs, 'the other process’s key');
    const s = openState(dir);
    try {
      const keys = await s.dkim.ensure('a.test', now);
      expect(keys.map((k) => k.selector)).toEqual(['mw20261206n2r', 'mw20261206n2e']);
      expect(readFileSync(theirs, 'utf8')).toBe('the other process’s key');
      expect(readdirSync(path.join(dir, 'dkim', 'a.test')).sort()).toEqual(['mw20261206n2e.key', 'mw20261206n2r.key', 'mw20261206r.key']);
    } finally {
      s.close();
    }
  });

  it('refuses a domain that is no host name (it becomes a folder name)', async () => {
    const dir = tmp();
    const s = openState(dir);
    try {
      await expect(s.dkim.ensure('../../etc')).rejects.toThrow('"../../etc" is not a domain name');
    } finally {
      s.close();
    }
  });
});

describe.skipIf(!dkimPython)(dkimPython ? 'DKIM signatures made with keys parsed once, verified by dkimpy' : `DKIM signatures (skipped: ${noDkimpy})`, () => {
  it('signs many fields (h= folded, repeated fields) and an odd body with RSA and Ed25519, message after message', async () => {
    const dir = tmp();
    const s = openState(dir);
    try {
      // The suite's own name signs without a registry lookup.
      const signer = createDkimSigner({ keys: s.dkim, registry: () => ({}) as never, hostname: 'mx.a.test', log: createLogger({ level: 'silent' }) });
      const records = new Map((await s.dkim.ensure('mx.a.test')).map((k) => [`${k.selector}._domainkey.mx.a.test`, s.dkim.record(k)]));
      const head =
        'From: "Vera" <vera@mx.a.test>\r\nTo: a@b.test,\r\n c@d.test\r\nCc: e@f.test\r\nSubject:  spaced   out \r\nDate: Sun, 6 Dec 2026 12:00:00 +0000\r\n' +
        'Message-ID: <1@mx.a.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nReceived: from x\r\nList-Id: <news.a.test>\r\n' +
        'List-Help: <mailto:news-request@a.test?subject=help>\r\nList-Unsubscribe: <mailto:news-unsubscribe@a.test>\r\nList-Post: <mailto:news@a.test>\r\n' +
        'List-Owner: <mailto:news-owner@a.test>\r\nList-Archive: <https://a.test/news/>\r\nReferences: <0@a.test>\r\nIn-Reply-To: <0@a.test>\r\nSubject: a second one\r\n';
      for (const body of ['line  with \t spaces \r\n\r\n\r\n', '', 'no final newline']) {
        const raw = Buffer.from(`${head}\r\n${body}`, 'latin1');
        const signed = await signer(raw, { from: 'vera@mx.a.test' });
        expect(verifyDkim(signed, records).map((c) => [c.a, c.ok])).toEqual([
          ['rsa-sha256', true],
          ['ed25519-sha256', true],
        ]);
      }
    } finally {
      s.close();
    }
  });
});

describe('one cache of parsed keys', () => {
  it('the state parses a key once for all who sign with it; the sealer signs with the parsed key it is given, not parsing the PEM again', async () => {
    const dir = tmp();
    const s = openState(dir);
    try {
      const [k] = await s.dkim.ensure('a.test');
      expect(s.dkim.signingKey(k!)).toBe(s.dkim.signingKey(k!));
      const arc = await s.dkim.ensureArc('mx.a.test');
      const { createArcSealer } = await import('../../../src/mail/mailauth.ts');
      // PEM text that does not parse: only the parsed key can have made the seal.
      const seal = createArcSealer({ hostname: 'mx.a.test', key: async () => ({ selector: arc.selector, privateKey: 'not a key', parsed: s.dkim.signingKey(arc) }) });
      const set = await seal(Buffer.from('Authentication-Results: mx.a.test; spf=pass\r\nFrom: a@b.test\r\nSubject: x\r\n\r\nhi\r\n'));
      expect(set.toString('latin1')).toMatch(/^ARC-Seal: i=1; a=rsa-sha256; t=\d+; cv=none; d=mx\.a\.test;/);
    } finally {
      s.close();
    }
  });
});
