import { lstatSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
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

describe('the mail control socket', () => {
  // The same window at the socket itself: made by root, in a folder of the service user's, who can swap its name
  // for a link the moment it exists. Its mode must come with it, not from a chmod by name afterwards.
  it('is 0600 from the moment it exists, and nothing is changed through a link swapped in for it', async () => {
    const socket = path.join(dir, 'mail.sock');
    const victim = path.join(dir, 'victim');
    writeFileSync(victim, 'not yours\n', { mode: 0o644 });
    let bornMode = -1;
    const listen = net.Server.prototype.listen;
    // Right after the bind (synchronous for a Unix socket), before anything else of the start runs.
    net.Server.prototype.listen = function (this: net.Server, ...args: unknown[]) {
      const r = (listen as (...a: unknown[]) => net.Server).apply(this, args);
      if (args[0] === socket) {
        bornMode = lstatSync(socket).mode & 0o777;
        unlinkSync(socket);
        symlinkSync(victim, socket);
      }
      return r;
    } as typeof listen;
    const control = new ControlServer(socket, {} as MailQueue, createLogger({ level: 'silent' }));
    try {
      await control.start();
    } finally {
      net.Server.prototype.listen = listen;
    }
    try {
      expect(bornMode).toBe(0o600);
      expect(statSync(victim).mode & 0o777).toBe(0o644);
    } finally {
      await control.stop();
    }
  });
});
