import { createHash } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BOX_INIT_SOURCE, compileBoxInit } from '../../../src/cgi/forkbox.ts';
import { findExecutable } from '../../../src/lib/box.ts';
import { boxInitPlan } from '../../../src/lib/boxinit.ts';

// The root launcher runs box-init in every tenant's box, as the tenant's
// uid: a binary found where someone else could have put it (a folder or a
// file of the service user's, say) must never be taken for its own.

const name = `box-init-${createHash('sha256').update(readFileSync(BOX_INIT_SOURCE)).digest('hex').slice(0, 16)}`;
const fake = '#!/bin/sh\necho not box-init\n';
let base: string;

beforeEach(() => {
  base = mkdtempSync(path.join(os.tmpdir(), 'makewaves-boxinit-'));
  chmodSync(base, 0o755);
});
afterEach(() => {
  rmSync(base, { recursive: true, force: true });
});

describe.skipIf(process.getuid?.() !== 0)('building box-init as root', () => {
  it('refuses a folder another user owns, and the binary found in it', () => {
    const dir = path.join(base, '.native');
    mkdirSync(dir, { mode: 0o755 });
    writeFileSync(path.join(dir, name), fake, { mode: 0o755 });
    chownSync(path.join(dir, name), 65534, 65534);
    chownSync(dir, 65534, 65534);
    const r = compileBoxInit(dir);
    expect(r.ok).toBe(false);
    expect((r as { why: string }).why).toMatch(/owned by uid 65534/);
  });

  it('refuses a binary in its own folder that another user owns, that others may write, or that is a link', () => {
    const dir = path.join(base, '.native');
    mkdirSync(dir, { mode: 0o755 });
    const file = path.join(dir, name);
    writeFileSync(file, fake, { mode: 0o755 });
    chownSync(file, 65534, 65534);
    expect(compileBoxInit(dir)).toMatchObject({ ok: false, why: expect.stringMatching(/owned by uid 65534/) });
    chownSync(file, 0, 0);
    chmodSync(file, 0o777);
    expect(compileBoxInit(dir)).toMatchObject({ ok: false, why: expect.stringMatching(/writable by others/) });
    rmSync(file);
    writeFileSync(path.join(base, 'elsewhere'), fake, { mode: 0o755 });
    symlinkSync(path.join(base, 'elsewhere'), file);
    expect(compileBoxInit(dir)).toMatchObject({ ok: false, why: expect.stringMatching(/not a regular file/) });
  });

  it('refuses a folder below one that others may write (they could swap it), not below a sticky one', () => {
    const open = path.join(base, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    const r = compileBoxInit(path.join(open, '.native'));
    expect(r).toMatchObject({ ok: false, why: expect.stringMatching(/writable by others \(mode 777\)/) });
    chmodSync(open, 0o1777);
    mkdirSync(path.join(open, '.native'), { mode: 0o755 });
    writeFileSync(path.join(open, '.native', name), fake, { mode: 0o755 });
    expect(compileBoxInit(path.join(open, '.native'))).toEqual({ ok: true, path: path.join(open, '.native', name) });
  });

  it.skipIf(!findExecutable('cc'))('builds into a folder of its own, and finds the binary there again', () => {
    const dir = path.join(base, 'native');
    const first = compileBoxInit(dir);
    expect(first).toEqual({ ok: true, path: path.join(dir, name) });
    expect(compileBoxInit(dir)).toEqual(first);
  });

  // `makewaves check` asks boxInitPlan: it must refuse what a start refuses, and say so, not report "built".
  it('plans what a start does, building nothing: a refused binary is refused with the same reason', () => {
    const dir = path.join(base, '.native');
    mkdirSync(dir, { mode: 0o755 });
    const file = path.join(dir, name);
    writeFileSync(file, fake, { mode: 0o775 });
    chmodSync(file, 0o775);
    const plan = boxInitPlan(dir);
    expect(plan).toMatchObject({ ok: false, why: expect.stringMatching(/writable by others \(mode 775\)/) });
    expect(compileBoxInit(dir)).toEqual(plan);
    chmodSync(file, 0o755);
    expect(boxInitPlan(dir)).toEqual({ ok: true, path: file, build: false });
    rmSync(file);
    expect(boxInitPlan(dir)).toMatchObject(findExecutable('cc') ? { ok: true, path: file, build: true } : { ok: false, why: expect.stringMatching(/no C compiler/) });
    expect(existsSync(file)).toBe(false);
  });
});
