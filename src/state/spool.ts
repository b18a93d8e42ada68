import { randomBytes } from 'node:crypto';
import { closeSync, createReadStream, readdirSync, rmSync } from 'node:fs';
import { open, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { afterWritten } from '../lib/buffers.ts';
import { makeDir, openFolderNoLink } from '../lib/modes.ts';
import type { Timeline } from '../lib/timeline.ts';

/**
 * The envelope, written before each message in a spool file (one JSON
 * line). With it a spool file is self-describing: the state rows can be
 * rebuilt from the files alone, so a message whose 250 was sent is never
 * lost even if the last database commit was.
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
  /** MAIL FROM parameters to pass on (BODY=8BITMIME; SMTPUTF8, written as 2 "needed" when asked: a rebuilt row errs on the safe side). */
  eightBit?: boolean | undefined;
  smtputf8?: 0 | 2 | undefined;
  /** Bytes of the message after this line; absent when the message runs to the end of the file. */
  len?: number;
}

export interface SpoolWrite {
  /** The spool file holding the message (a name inside q/). */
  file: string;
  /** Offset of the message in the file (after its envelope line). */
  offset: number;
  /** Bytes of the message (headers and body) as stored. */
  size: number;
  /** The message itself when it is small, so delivery need not read it back. */
  data: Buffer | undefined;
}

/** One message found in a spool file. */
export interface SpoolRecord {
  env: SpoolEnvelope;
  file: string;
  offset: number;
  size: number;
}

/** Thrown by {@link Spool.write} when `abort()` said so while the body streamed in. */
export class SpoolAborted extends Error {}

/** Messages up to this size are gathered in memory and written in a group (see {@link Spool.write}). */
export const SMALL = 64 * 1024;
/** A segment takes no more messages past this size. */
const SEGMENT_MAX = 4 * 1024 * 1024;

interface Waiting {
  env: SpoolEnvelope;
  timeline: Timeline | undefined;
  data: Buffer;
  resolve(w: SpoolWrite): void;
  reject(err: unknown): void;
}

/**
 * Message files under `<data>/spool`: `tmp/` while being written, `q/` once
 * complete. A file reaches `q/` only after an fsync of its data, and its
 * name is durable only after an fsync of `q/` (POSIX leaves renames to the
 * directory); {@link write} resolves after both. Files left in `tmp/` by a
 * crash were never acknowledged and are removed on start.
 *
 * Group commit: small messages that arrive while a spool write is under way
 * wait for it to finish and then go to disk together with one fdatasync (as
 * a database groups commits into one log flush), appended to a segment
 * file (G…) whose name was made durable when it was created. A large
 * message gets a file of its own (M…), written to tmp/ and renamed. Each
 * record is an envelope line then the message; a record cut short by a
 * crash was never acknowledged, and reading a segment stops before it.
 */
export class Spool {
  readonly qDir: string;
  readonly tmpDir: string;
  private waiting: Waiting[] = [];
  private writing = false;
  private dirSync: Promise<void> | undefined;
  private dirSyncNext: Promise<void> | undefined;
  private current: { name: string; fh: FileHandle; size: number } | undefined;
  /** Told when a segment is sealed: its owner may remove it once no message in it is queued. */
  onSealed: ((file: string) => Promise<void> | void) | undefined;
  /** Told, before the write resolves, which file now holds a message (so a seal never finds it unclaimed). */
  onStored: ((file: string, id: string) => void) | undefined;

  constructor(readonly dir: string) {
    this.qDir = path.join(dir, 'q');
    this.tmpDir = path.join(dir, 'tmp');
  }

  /** Creates the folders and clears unfinished files. Returns how many were cleared. */
  init(): number {
    // No link followed (makeDir refuses one): <data>/spool is the service user's, and a start as root clears spool/tmp
    // before the drop; a link there would have root remove every file of the folder it names.
    makeDir(this.dir, 0o700);
    makeDir(this.qDir, 0o700);
    makeDir(this.tmpDir, 0o700);
    // Listed and cleared through spool/ and spool/tmp as opened (O_NOFOLLOW), never by their path: the service user
    // may swap either for a link after makeDir looked.
    const refusal = (dir: string) => `${dir} is a symbolic link or not a folder; refused (move it away and restart)`;
    const spool = openFolderNoLink(this.dir, refusal(this.dir));
    try {
      const tmp = openFolderNoLink(`/proc/self/fd/${spool}/tmp`, refusal(this.tmpDir));
      try {
        const at = `/proc/self/fd/${tmp}`;
        const stale = readdirSync(at);
        for (const f of stale) rmSync(`${at}/${f}`, { force: true });
        return stale.length;
      } finally {
        closeSync(tmp);
      }
    } finally {
      closeSync(spool);
    }
  }

  path(file: string): string {
    return path.join(this.qDir, file);
  }

  /** Names of the complete spool files. */
  files(): string[] {
    return readdirSync(this.qDir).filter((f) => /^[A-Za-z0-9_]+$/.test(f));
  }

  /**
   * Stores one message and resolves once it is durable. The body is read to
   * its end whatever happens (an SMTP client is still sending it and must
   * get its reply after the final dot). `abort` is asked after each chunk;
   * once it says true the rest is dropped and the promise rejects with
   * {@link SpoolAborted}. On any failure nothing is left behind.
   */
  async write(env: SpoolEnvelope, prefix: Buffer, body: AsyncIterable<Buffer> | Buffer, abort?: () => boolean, timeline?: Timeline): Promise<SpoolWrite> {
    if (Buffer.isBuffer(body)) {
      const data = prefix.length === 0 ? body : Buffer.concat([prefix, body]);
      return data.length <= SMALL ? this.grouped(env, data, timeline) : this.alone(env, [data], undefined);
    }
    const held: Buffer[] = [prefix];
    let heldBytes = prefix.length;
    const it = body[Symbol.asyncIterator]();
    let aborted = false;
    for (;;) {
      const r = await it.next();
      if (r.done) break;
      if (abort?.()) {
        aborted = true;
        break;
      }
      held.push(r.value);
      heldBytes += r.value.length;
      if (heldBytes > SMALL) return this.alone(env, held, { it, abort });
    }
    if (aborted || abort?.()) {
      await drain(it);
      throw new SpoolAborted('message refused while being received');
    }
    return this.grouped(env, Buffer.concat(held), timeline);
  }

  /** Queues a small message for the next group write. */
  private grouped(env: SpoolEnvelope, data: Buffer, timeline: Timeline | undefined): Promise<SpoolWrite> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ env, data, timeline, resolve, reject });
      if (!this.writing) void this.writeGroup();
    });
  }

  private async writeGroup(): Promise<void> {
    this.writing = true;
    while (this.waiting.length > 0) {
      const group = this.waiting;
      this.waiting = [];
      for (const w of group) w.timeline?.mark('spool-group');
      try {
        const seg = await this.segment();
        const parts: Buffer[] = [];
        const results: SpoolWrite[] = [];
        let pos = seg.size;
        for (const w of group) {
          const line = Buffer.from(`${JSON.stringify({ ...w.env, len: w.data.length })}\n`);
          parts.push(line, w.data);
          results.push({ file: seg.name, offset: pos + line.length, size: w.data.length, data: w.data });
          pos += line.length + w.data.length;
        }
        try {
          await writeAllAt(seg.fh, parts, seg.size);
          for (const w of group) w.timeline?.mark('spool-written');
          await seg.fh.datasync();
        } catch (err) {
          // The tail of this segment is now unknown: no record may follow it.
          await this.seal();
          throw err;
        }
        seg.size = pos;
        group.forEach((w, i) => {
          this.onStored?.(seg.name, w.env.id);
          w.resolve(results[i]!);
        });
      } catch (err) {
        for (const w of group) w.reject(err);
      }
    }
    this.writing = false;
  }

  /** The segment small messages are appended to; a new one (created, its name made durable) when there is none or it is full. */
  private async segment(): Promise<{ name: string; fh: FileHandle; size: number }> {
    if (this.current && this.current.size < SEGMENT_MAX) return this.current;
    await this.seal();
    const name = `G${Date.now().toString(36)}${randomBytes(4).toString('hex')}`.toUpperCase();
    const fh = await open(this.path(name), 'wx', 0o600);
    try {
      await this.syncQueueDir();
    } catch (err) {
      // Undoing a segment that was never used; the error that matters is rethrown below.
      await fh.close().catch(() => undefined);
      await unlink(this.path(name)).catch(() => undefined);
      throw err;
    }
    this.current = { name, fh, size: 0 };
    return this.current;
  }

  /** Closes the current segment; no message is added to it after this. */
  async seal(): Promise<void> {
    const seg = this.current;
    if (!seg) return;
    this.current = undefined;
    // Every record in it was fsynced before it was acknowledged: a failing close loses nothing.
    await seg.fh.close().catch(() => undefined);
    await this.onSealed?.(seg.name);
  }

  /** True while `file` is the segment new messages go to (it must not be removed then). */
  isOpen(file: string): boolean {
    return this.current?.name === file;
  }

  /** A large message: its own file, written as it streams in. */
  private async alone(
    env: SpoolEnvelope,
    first: Buffer[],
    rest: { it: AsyncIterator<Buffer>; abort: (() => boolean) | undefined } | undefined,
  ): Promise<SpoolWrite> {
    const file = `M${env.id}`;
    const line = Buffer.from(`${JSON.stringify(env)}\n`);
    let size = first.reduce((n, b) => n + b.length, 0);
    let aborted = false;
    try {
      await this.commit(file, async (fh) => {
        await fh.write(Buffer.concat([line, ...first]));
        if (!rest) return;
        for (;;) {
          const r = await rest.it.next();
          if (r.done) break;
          if (rest.abort?.()) {
            aborted = true;
            throw new SpoolAborted('message refused while being received');
          }
          await fh.write(r.value);
          size += r.value.length;
        }
      });
    } catch (err) {
      if (rest) await drain(rest.it);
      throw aborted ? new SpoolAborted('message refused while being received') : err;
    }
    this.onStored?.(file, env.id);
    return { file, offset: line.length, size, data: undefined };
  }

  /** Writes tmp/<file> with `fill`, fdatasyncs it, renames it into q/ and fsyncs q/. Removes it on failure. */
  private async commit(file: string, fill: (fh: FileHandle) => Promise<void>): Promise<void> {
    const tmp = path.join(this.tmpDir, file);
    let fh: FileHandle | undefined;
    let renamed = false;
    try {
      fh = await open(tmp, 'wx', 0o600);
      await fill(fh);
      await fh.datasync();
      await fh.close();
      fh = undefined;
      await rename(tmp, this.path(file));
      renamed = true;
      await this.syncQueueDir();
    } catch (err) {
      // Cleaning up after the error rethrown below.
      await fh?.close().catch(() => undefined);
      // Not acknowledged, so not kept: a file left in q/ would be delivered on the next start.
      await unlink(renamed ? this.path(file) : tmp).catch(() => undefined);
      throw err;
    }
  }

  /**
   * fsync of q/, shared (group commit): a caller joins the sync that starts
   * after its rename, never one already running, which might not cover it.
   */
  private syncQueueDir(): Promise<void> {
    if (!this.dirSync) {
      this.dirSync = syncDir(this.qDir).finally(() => (this.dirSync = undefined));
      return this.dirSync;
    }
    const again = () => {
      this.dirSyncNext = undefined;
      return this.syncQueueDir();
    };
    this.dirSyncNext ??= this.dirSync.then(again, again);
    return this.dirSyncNext;
  }

  /** A message as a stream. */
  read(file: string, offset: number, size: number): Readable {
    return createReadStream(this.path(file), { start: offset, end: offset + size - 1 });
  }

  /** Every message record in a spool file; an unreadable file gives none. */
  async records(file: string): Promise<SpoolRecord[]> {
    let buf: Buffer;
    try {
      buf = await readFile(this.path(file));
    } catch {
      // Released meanwhile (delivered and removed): no records left to read.
      return [];
    }
    const out: SpoolRecord[] = [];
    let pos = 0;
    while (pos < buf.length) {
      const nl = buf.indexOf(10, pos);
      if (nl === -1) break;
      let env: SpoolEnvelope;
      try {
        env = JSON.parse(buf.subarray(pos, nl).toString('utf8')) as SpoolEnvelope;
      } catch {
        // A torn last record (crash mid-write, never acknowledged): everything before it is kept.
        break;
      }
      if (env.v !== 1 || typeof env.id !== 'string') break;
      const offset = nl + 1;
      const size = env.len ?? buf.length - offset;
      if (offset + size > buf.length) break;
      out.push({ env, file, offset, size });
      pos = offset + size;
    }
    return out;
  }

  async remove(file: string): Promise<void> {
    await unlink(this.path(file)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
}

async function drain(it: AsyncIterator<Buffer>): Promise<void> {
  for (;;) {
    const r = await it.next();
    if (r.done) return;
  }
}

/**
 * Writes `parts` at `position`, as one writev (no copy of them into one
 * buffer), repeated for the rest when the kernel takes only part.
 */
async function writeAllAt(fh: FileHandle, parts: Buffer[], position: number): Promise<void> {
  let rest = parts;
  let at = position;
  while (rest.length > 0) {
    const { bytesWritten } = await fh.writev(rest, at);
    at += bytesWritten;
    rest = afterWritten(rest, bytesWritten);
  }
}

/** fsync of a directory: makes the entries created or renamed in it durable. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
