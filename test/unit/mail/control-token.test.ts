import { mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tokenPath } from '../../../src/core/control.ts';
import { createLogger } from '../../../src/core/log.ts';
import { ControlServer } from '../../../src/mail/control.ts';
import type { MailQueue } from '../../../src/mail/queue.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'mailctl-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('the mail control token', () => {
  // <data> is the service user's once a start as root has handed it over; the next start as root writes the token before it drops.
  it('is never written through a link put where its temporary file goes', async () => {
    const socket = path.join(dir, 'mail.sock');
    const victim = path.join(dir, 'victim');
    writeFileSync(victim, 'not yours\n', { mode: 0o644 });
    // The name it used to write under: predictable by anyone who can guess the pid.
    symlinkSync(victim, `${tokenPath(socket)}.${process.pid}.tmp`);
    // The queue is asked only by a request on the socket; none is made here.
    const control = new ControlServer(socket, {} as MailQueue, createLogger({ level: 'silent' }));
    await control.start();
    try {
      expect(readFileSync(victim, 'utf8')).toBe('not yours\n');
      expect(statSync(victim).mode & 0o777).toBe(0o644);
      expect(readFileSync(tokenPath(socket), 'utf8')).toMatch(/^[0-9a-f]{64}\n$/);
      expect(statSync(tokenPath(socket)).mode & 0o777).toBe(0o600);
    } finally {
      await control.stop();
    }
  });
});
