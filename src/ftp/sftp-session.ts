import type { FileHandle } from 'node:fs/promises';
import type { SFTPWrapper } from 'ssh2';
import type { Logger } from '../core/log.ts';
import type { FtpContext } from './context.ts';
import type { Entry, JailFileSystem, PendingUpload } from './jailfs.ts';

/** Who the session is, for the transfer log. */
export interface SftpUser {
  tenant: string;
  login: string;
  remote: string;
  log: Logger;
}

/** What one SSH connection may hold, shared by its channels. */
export interface SftpBudget {
  /** Files and folders open, over all the connection's channels. */
  handles: number;
  readonly maxHandles: number;
  /** Bytes written to the connection's socket that the client has not taken yet. */
  unsent(): number;
  /** True once the connection is being ended: nothing more is answered. */
  closed: boolean;
  /** Called when the client asks more than it reads or may have under way: the connection is dropped. */
  overrun(why: string): void;
}

export type Handle =
  | { kind: 'read'; fh: FileHandle; clientPath: string; bytes: number; t0: number }
  | { kind: 'write'; fh: FileHandle; up: PendingUpload; clientPath: string; size: number; written: number; t0: number; mtime?: Date; failed?: string }
  /** `entries`: the folder listed once, at the first READDIR (those asked meanwhile wait for the same listing). */
  | { kind: 'dir'; clientPath: string; entries?: Promise<Entry[]> };

/** Registers the answer to one request: every request resets the idle clock and is answered exactly once (a throw is answered too). */
export type OnRequest = <A extends unknown[]>(event: string, fn: (reqid: number, ...a: A) => Promise<void> | void) => void;

/** One SFTP channel, as its request handlers (sftp-browse.ts, sftp-transfer.ts, sftp-names.ts) see it. */
export interface SftpSession {
  ctx: FtpContext;
  sftp: SFTPWrapper;
  fs: JailFileSystem;
  user: SftpUser;
  log: Logger;
  budget: SftpBudget;
  /** The channel's open files and folders, by the hex of their handle. */
  handles: Map<string, Handle>;
  /** A handle for `h`, or undefined when the connection holds as many as it may. */
  newHandle(h: Handle): Buffer | undefined;
  on: OnRequest;
}
