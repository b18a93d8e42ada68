/**
 * The SFTP file operations (draft-ietf-secsh-filexfer-02, what OpenSSH,
 * FileZilla, WinSCP and lftp speak) on one logged-in session, all through
 * FTP's jailed file system: the same path rule, symlink rule, quota and
 * atomic replace (an upload goes to a hidden temporary, renamed over the
 * target at CLOSE), so a visitor sees the old file or the new one, never
 * half of it.
 *
 * This file is the session: its handles, how a request is answered, its
 * end. The requests are answered by sftp-browse.ts (paths, attributes,
 * listings), sftp-transfer.ts (open, read, write, close) and sftp-names.ts
 * (remove, make, rename; links refused).
 */
import ssh2, { type SFTPWrapper } from 'ssh2';
import { errorRef } from '../core/errors.ts';
import type { FtpContext } from './context.ts';
import { FtpError, type JailFileSystem } from './jailfs.ts';
import { serveBrowsing } from './sftp-browse.ts';
import { serveNameChanges } from './sftp-names.ts';
import type { Handle, OnRequest, SftpBudget, SftpSession, SftpUser } from './sftp-session.ts';
import { serveTransfers } from './sftp-transfer.ts';
import { heldAnswers } from './ssh2-adapter.ts';

const { STATUS_CODE } = ssh2.utils.sftp;

/** Requests of one channel run at once (OpenSSH's sftp keeps 64 under way, lftp 16). */
const MAX_RUNNING = 64;
/** Requests of one channel under way or waiting to run. */
const MAX_UNANSWERED = 256;
/** Bytes of answers waiting for the client to read (its window, then its socket) before it may ask more. */
const MAX_HELD_BYTES = 16 * 1024 * 1024;
/** Answers waiting for the client's window (small ones: a flood of STAT answers). */
const MAX_HELD_ANSWERS = 4096;

/**
 * Serves one SFTP channel until it closes; unfinished uploads are dropped
 * then. Resolves once the channel has closed and every request it started
 * has finished: an OPEN still under way at the close makes its temporary
 * after it, and that is dropped too, so nothing is left behind and nothing
 * touches the files after a stop has waited for this.
 */
export function serveSftp(ctx: FtpContext, sftp: SFTPWrapper, fs: JailFileSystem, user: SftpUser, budget: SftpBudget, touched: () => void): Promise<void> {
  const handles = new Map<string, Handle>();
  let next = 0;
  const log = user.log;

  const newHandle = (h: Handle): Buffer | undefined => {
    if (budget.handles >= budget.maxHandles) return undefined;
    budget.handles++;
    const id = Buffer.alloc(4);
    id.writeUInt32BE(next++ >>> 0);
    handles.set(id.toString('hex'), h);
    return id;
  };

  /** Answers a failed request: an FtpError in SFTP's terms, anything else as our fault with a reference. */
  const fail = (reqid: number, err: unknown, op: string): void => {
    if (err instanceof FtpError) {
      const code = err.code === 550 ? (/no such/.test(err.message) ? STATUS_CODE.NO_SUCH_FILE : STATUS_CODE.PERMISSION_DENIED) : STATUS_CODE.FAILURE;
      sftp.status(reqid, code, err.message);
      return;
    }
    const ref = errorRef();
    log.error({ ref, op, err: (err as Error).message }, 'sftp operation failed');
    sftp.status(reqid, STATUS_CODE.FAILURE, `Local error, ref ${ref}`);
  };

  /**
   * Runs one request: every request resets the idle clock and is answered
   * exactly once. At most {@link MAX_RUNNING} run at once (the rest wait, in
   * order); a client with more than {@link MAX_UNANSWERED} unanswered, or
   * that asks on while more than {@link MAX_HELD_BYTES} of answers wait for
   * it to read (its window shut, or its socket not read), is cut off: what
   * it asks would otherwise be held in memory without bound.
   */
  let running = 0;
  const waiting: Array<() => void> = [];
  const underWay = new Set<Promise<void>>();
  const on: OnRequest = <A extends unknown[]>(event: string, fn: (reqid: number, ...a: A) => Promise<void> | void) => {
    sftp.on(event as 'OPEN', ((reqid: number, ...a: A) => {
      touched();
      if (budget.closed) return;
      if (running + waiting.length >= MAX_UNANSWERED) return budget.overrun(`more than ${MAX_UNANSWERED} requests unanswered`);
      const run = () => {
        if (budget.closed) return;
        const held = heldAnswers(sftp, MAX_HELD_ANSWERS);
        if (held.answers > MAX_HELD_ANSWERS || held.bytes + budget.unsent() > MAX_HELD_BYTES) return budget.overrun('asks on without reading the answers');
        running++;
        const work: Promise<void> = Promise.resolve()
          .then(() => fn(reqid, ...a))
          .catch((err: unknown) => fail(reqid, err, event))
          .finally(() => {
            running--;
            underWay.delete(work);
            waiting.shift()?.();
          });
        underWay.add(work);
      };
      if (running < MAX_RUNNING) run();
      else waiting.push(run);
    }) as never);
  };

  const session: SftpSession = { ctx, sftp, fs, user, log, budget, handles, newHandle, on };
  serveBrowsing(session);
  const { finishUpload } = serveTransfers(session);
  serveNameChanges(session);

  // The client's EOF ends the session: answered with ours, or OpenSSH's client waits for it forever.
  sftp.on('end', () => sftp.end());
  return new Promise<void>((resolve) => {
    sftp.on('close', () => {
      void (async () => {
        // Requests under way finish first (their answers go nowhere): a handle one of them opens is dropped with the rest.
        while (underWay.size > 0) await Promise.allSettled([...underWay]);
        const ends: Array<Promise<unknown>> = [];
        for (const h of handles.values()) {
          if (h.kind === 'write') ends.push(finishUpload(h, 'session closed before the upload was closed'));
          // Only read from: a failing close loses nothing.
          else if (h.kind === 'read') ends.push(h.fh.close().catch(() => undefined));
        }
        budget.handles -= handles.size;
        handles.clear();
        await Promise.allSettled(ends);
      })().finally(resolve);
    });
  });
}
