import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { LaunchedProcess } from '../../../src/cgi/launched.ts';

// A run the launcher started, seen from the server. When it fails (its launcher ended unasked, the keeper gone), the
// pipes the launcher had handed over for it are closed: a box that outlived its launcher (started in the instant
// the launcher was killed, before bwrap's watch of its parent was set) reads the end of its stdin and ends, where it
// would otherwise stay, as the tenant's uid, with three of the server's descriptors, until the server stops.
describe('a launched run that fails', () => {
  it('closes the pipes handed over for it', () => {
    const run = new LaunchedProcess(() => undefined);
    run.on('error', () => undefined);
    const pipes = [0, 1, 2, 3].map(() => new PassThrough());
    pipes.forEach((p, fd) => run.attach(fd, p));
    run.fail('the handler launcher ended unasked (it ended (SIGKILL))');
    expect(pipes.map((p) => p.destroyed)).toEqual([true, true, true, true]);
  });

  it('closes one handed over after it failed, as it comes', () => {
    const run = new LaunchedProcess(() => undefined);
    run.on('error', () => undefined);
    run.fail('launcher refused: no run 7');
    const late = new PassThrough();
    run.attach(1, late);
    expect(late.destroyed).toBe(true);
  });
});
