import { createReadStream, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';

/**
 * The envelope, written as the first line of every spool file (JSON). With
 * it a spool file is self-describing: the state row can be rebuilt from the
 * file alone, so a message whose 250 was sent is never lost even if the
 * last database commit was.
 */
export interface SpoolEnvelope {
  v: 1;
  id: string;
  createdAt: number;
  /** Envelope sender used outbound ("" = null sender). */
  sender: string;
  /** Who gets a bounce ("" = nobody). */
  returnPath: string;
  tenant?: string | undefined;
  recipients: Array<{ rcpt: string; origRcpt: string }>;
}

export interface SpoolWrite {
  /** Bytes of the message (headers and body) as stored. */
  size: number;
  /** Offset of the message in the file (after the envelope line). */
  offset: number;
  /** The message itself when it is small (≤ 64 KiB), so delivery need not read it back. */
  data: Buffer | undefined;
}

/** Messages up to this size are written in one call and kept in memory for delivery. */
const SMALL = 64 * 1024;

/** Thrown by {@link Spool.write} when `abort()` said so while the body streamed in. */
export class SpoolAborted extends Error {}

/**
 * Message files under `<data>/spool`: `tmp/` while being written, `q/` once
 * complete. A file in `q/` has been fsync'd, and so has the directory entry
 * that names it (rename is only durable once its directory is synced).
 * Files left in `tmp/` by a crash were never acknowledged and are removed
 * on start.
 */
export class Spool {
  readonly qDir: string;
  readonly tmpDir: string;

  constructor(readonly dir: string) {
    this.qDir = path.join(dir, 'q');
    this.tmpDir = path.join(dir, 'tmp');
  }

  /** Creates the folders and clears unfinished files. Returns how many were cleared. */
  init(): number {
    mkdirSync(this.qDir, { recursive: true });
    mkdirSync(this.tmpDir, { recursive: true });
    const stale = readdirSync(this.tmpDir);
    for (const f of stale) rmSync(path.join(this.tmpDir, f), { force: true });
    return stale.length;
  }

  file(id: string): string {
    return path.join(this.qDir, id);
  }

  /** Ids of the complete messages in the spool. */
  list(): string[] {
    return readdirSync(this.qDir).filter((f) => /^[A-Za-z0-9]+$/.test(f));
  }

  /**
   * Writes envelope line, `prefix` and the chunks of `body`, fsyncs the
   * file, moves it into `q/` and fsyncs that folder. Resolves only then.
   * `abort` is asked after each chunk; once it returns true the rest of the
   * body is read and dropped (the client must still be answered) and the
   * promise rejects with {@link SpoolAborted}. On any failure the partial
   * file is removed.
   */
  async write(env: SpoolEnvelope, prefix: Buffer, body: AsyncIterable<Buffer> | Buffer, abort?: () => boolean): Promise<SpoolWrite> {
    const tmp = path.join(this.tmpDir, env.id);
    const head = Buffer.from(`${JSON.stringify(env)}\n`);
    let fh: FileHandle | undefined;
    let failure: unknown;
    let aborted = false;
    let renamed = false;
    let size = prefix.length;
    // Small messages (the usual case) are gathered and written in one call;
    // a large one is written as it comes, at most SMALL bytes held at once.
    let held: Buffer[] = [prefix];
    let heldBytes = prefix.length;
    const spill = async (): Promise<void> => {
      const data = Buffer.concat(held);
      held = [];
      heldBytes = 0;
      await fh!.write(data);
    };
    try {
      fh = await open(tmp, 'wx', 0o600);
      held.unshift(head);
      heldBytes += head.length;
    } catch (err) {
      failure = err;
    }
    if (Buffer.isBuffer(body)) {
      held.push(body);
      heldBytes += body.length;
      size += body.length;
    } else {
      // The body is read to its end whatever happens: the SMTP client is
      // still sending it and must get its reply after the final dot.
      for await (const chunk of body) {
        if (failure || aborted) continue;
        if (abort?.()) {
          aborted = true;
          continue;
        }
        held.push(chunk);
        heldBytes += chunk.length;
        size += chunk.length;
        if (heldBytes >= SMALL) await spill().catch((err: unknown) => (failure = err));
      }
      if (abort?.()) aborted = true;
    }
    const small = size <= SMALL && !failure && !aborted ? Buffer.concat(held.slice(1)) : undefined;
    try {
      if (failure) throw failure;
      if (aborted) throw new SpoolAborted('message refused while being received');
      if (heldBytes > 0) await spill();
      await fh!.datasync();
      await fh!.close();
      fh = undefined;
      await rename(tmp, this.file(env.id));
      renamed = true;
      await this.syncQueueDir();
      return { size, offset: head.length, data: small };
    } catch (err) {
      await fh?.close().catch(() => undefined);
      // Not acknowledged, so not kept: a file left in q/ would be delivered on the next start.
      await unlink(renamed ? this.file(env.id) : tmp).catch(() => undefined);
      throw err;
    }
  }

  private dirSync: Promise<void> | undefined;
  private dirSyncNext: Promise<void> | undefined;

  /**
   * fsync of q/, shared by everyone waiting (group commit): a caller whose
   * rename happened before the running sync started is covered by it only
   * if it was queued before; so callers join the next sync, one at a time.
   */
  private syncQueueDir(): Promise<void> {
    if (!this.dirSync) {
      this.dirSync = syncDir(this.qDir).finally(() => (this.dirSync = undefined));
      return this.dirSync;
    }
    this.dirSyncNext ??= this.dirSync.then(
      () => {
        this.dirSyncNext = undefined;
        return this.syncQueueDir();
      },
      () => {
        this.dirSyncNext = undefined;
        return this.syncQueueDir();
      },
    );
    return this.dirSyncNext;
  }

  /** The message (without the envelope line) as a stream. */
  read(id: string, offset: number): Readable {
    return createReadStream(this.file(id), { start: offset });
  }

  /** Reads the envelope line of a spool file, with the offset and size of the message after it; undefined if it is not a spool file. */
  async envelope(id: string): Promise<{ env: SpoolEnvelope; offset: number; size: number } | undefined> {
    let fh: FileHandle | undefined;
    try {
      fh = await open(this.file(id), 'r');
      const buf = Buffer.alloc(256 * 1024);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      const nl = buf.subarray(0, bytesRead).indexOf(10);
      if (nl === -1) return undefined;
      const env = JSON.parse(buf.subarray(0, nl).toString('utf8')) as SpoolEnvelope;
      const { size } = await fh.stat();
      return env.v === 1 && env.id === id ? { env, offset: nl + 1, size: size - nl - 1 } : undefined;
    } catch {
      return undefined;
    } finally {
      await fh?.close().catch(() => undefined);
    }
  }

  async remove(id: string): Promise<void> {
    await unlink(this.file(id)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
}

/** fsync of a directory: makes the entries created or renamed in it durable (POSIX leaves that to the directory). */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
