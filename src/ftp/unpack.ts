import { open } from 'node:fs/promises';
import type { WebRootEntry, WebRootTreeResult } from '../core/contracts.ts';
import { replyCode } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { FtpError, type JailFileSystem, type PendingUpload } from './jailfs.ts';

/*
 * A whole tree (a zip of a site, from the panel) into a web root, all or
 * nothing, through the same JailFileSystem as an FTP STOR: its path
 * refusals, its hidden temporaries beside each target, its quota counter
 * and its one rename per file. Three steps:
 *
 *   1. judge: every path (jail, inside the folder, no name twice, a file
 *      never where a folder is) and the sum of the declared sizes against
 *      the quota, before anything is written;
 *   2. write: folders the tree needs are made, each file into its own
 *      temporary, every chunk charged to the quota and counted against the
 *      size the archive declared (a zip bomb lies about it: refused);
 *   3. commit: only when every file is complete, each temporary is renamed
 *      over its target (each page is replaced at once, never half-written).
 *
 * Any refusal or error in 1 or 2 removes the temporaries and the folders
 * made in 2: nothing is left behind.
 */

/** A refusal of the tree as a whole, in FTP's words (the jail's, or the size check's). */
class TreeRefused extends Error {
  constructor(
    readonly why: 'quota' | 'refused',
    message: string,
  ) {
    super(message);
  }
}

function refusal(err: unknown): TreeRefused | undefined {
  if (err instanceof TreeRefused) return err;
  if (err instanceof FtpError) return new TreeRefused(err.code === replyCode('QUOTA_EXCEEDED', 'ftp') ? 'quota' : 'refused', err.message);
  return undefined;
}

type Judged = { segments: string[]; clientPath: string; entry: WebRootEntry };

/** Step 1: each entry's place under `base`, or a refusal naming the first bad one. */
function judge(fs: JailFileSystem, base: string[], entries: readonly WebRootEntry[]): Judged[] {
  const out: Judged[] = [];
  const files = new Set<string>();
  const dirs = new Set<string>();
  for (const entry of entries) {
    const raw = entry.path;
    if (raw.startsWith('/') || /^[A-Za-z]:/.test(raw)) throw new TreeRefused('refused', `${raw}: an absolute path`);
    if (raw.split('/').includes('..')) throw new TreeRefused('refused', `${raw}: outside your web space`);
    const { segments, clientPath } = fs.parse(`/${[...base, raw].join('/')}`);
    if (segments.length <= base.length) continue; // "./" or the folder itself: nothing to make
    const key = segments.join('/');
    if (files.has(key) || (!entry.dir && dirs.has(key))) throw new TreeRefused('refused', `${clientPath}: in the archive twice`);
    // Every folder above an entry is a folder: no file may have that name too.
    for (let i = base.length + 1; i < segments.length; i++) {
      const parent = segments.slice(0, i).join('/');
      if (files.has(parent)) throw new TreeRefused('refused', `/${parent}: in the archive as a file and as a folder`);
      dirs.add(parent);
    }
    if (entry.dir) dirs.add(key);
    else files.add(key);
    if (!entry.dir && dirs.has(key)) throw new TreeRefused('refused', `${clientPath}: in the archive as a file and as a folder`);
    out.push({ segments, clientPath, entry });
  }
  return out;
}

/**
 * Unpacks `entries` into `folder` of the jail `fs` (whose usage is the
 * tenant's shared counter). Refusals come back as a result; other errors
 * (a source that throws, the disk) are rethrown after the cleanup.
 */
export async function unpackTree(fs: JailFileSystem, folder: string, entries: readonly WebRootEntry[], log: Logger): Promise<WebRootTreeResult> {
  const pending: Array<{ up: PendingUpload; bytes: number }> = [];
  const made: string[] = [];
  let committed = 0;
  try {
    const baseClient = await fs.chdir(folder);
    const base = baseClient === '/' ? [] : baseClient.slice(1).split('/');
    await fs.chdir('/');
    const judged = judge(fs, base, entries);
    const declared = judged.reduce((n, j) => n + (j.entry.dir ? 0 : j.entry.size), 0);
    // What is replaced is freed at the commit: counted as credit, as a STOR's old file is.
    let credit = 0;
    for (const j of judged) {
      if (j.entry.dir) continue;
      // Not there (or not reachable: startUpload below refuses it in its words).
      const old = await fs.get(j.clientPath).catch(() => undefined);
      if (old?.isDirectory()) throw new TreeRefused('refused', `${j.clientPath}: is a folder`);
      if (old?.isFile()) credit += old.size;
    }
    if (!fs.usage.fits(declared, credit)) {
      throw new TreeRefused('quota', `Quota exceeded: the archive unpacks to more than fits (${declared} bytes; ${fs.usage.free} left, ${credit} of them in files it replaces; quota ${fs.usage.quota} bytes)`);
    }

    // Step 2: folders, then every file into its temporary.
    const known = new Set<string>();
    const ensureFolder = async (segments: string[]) => {
      for (let i = base.length + 1; i <= segments.length; i++) {
        const key = segments.slice(0, i).join('/');
        if (known.has(key)) continue;
        const existing = await fs.get(`/${key}`).catch((err: unknown) => {
          if (err instanceof FtpError && /no such/.test(err.message)) return undefined;
          throw err;
        });
        if (existing && !existing.isDirectory()) throw new TreeRefused('refused', `/${key}: a file of that name exists`);
        if (!existing) made.push(await fs.mkdir(`/${key}`));
        known.add(key);
      }
    };
    let files = 0;
    for (const j of judged) {
      if (j.entry.dir) {
        await ensureFolder(j.segments);
        continue;
      }
      await ensureFolder(j.segments.slice(0, -1));
      const p = { up: await fs.startUpload(j.clientPath), bytes: 0 };
      pending.push(p);
      // 'wx' (O_EXCL): never opens through a link planted at the temporary's name.
      const fh = await open(p.up.temp, 'wx', 0o644);
      let seen = 0;
      try {
        for await (const chunk of j.entry.open()) {
          seen += chunk.length;
          // Not what the archive declared (and the quota was judged by): a lie, refused whatever the library says.
          if (seen > j.entry.size) throw new TreeRefused('refused', `${j.clientPath}: more data than the archive declares (${j.entry.size} bytes)`);
          if (!fs.usage.fits(chunk.length, credit)) throw new TreeRefused('quota', `Quota exceeded: ${j.clientPath} not stored (quota ${fs.usage.quota} bytes)`);
          fs.usage.used += chunk.length;
          p.bytes += chunk.length;
          await fh.write(chunk);
        }
      } finally {
        await fh.close();
      }
      if (seen !== j.entry.size) throw new TreeRefused('refused', `${j.clientPath}: ${seen} bytes where the archive declares ${j.entry.size}`);
      files++;
    }

    // Step 3: every file is complete; each replaces its target in one rename.
    for (const p of pending) {
      await fs.commitUpload(p.up);
      committed++;
    }
    return { ok: true, folder: baseClient, files, folders: made.length, bytes: pending.reduce((n, p) => n + p.bytes, 0) };
  } catch (err) {
    // Undo steps 2 (and, if a rename failed, what was not yet renamed): temporaries, then the folders made, deepest first.
    for (const p of pending.slice(committed)) await fs.abortUpload(p.up, p.bytes);
    if (committed === 0) {
      for (const dir of made.reverse()) await fs.delete(dir).catch(() => undefined); // a folder someone filled meanwhile stays
    }
    const r = refusal(err);
    if (!r) throw err;
    log.info({ folder, why: r.message }, 'panel archive refused');
    return { ok: false, why: r.why, message: r.message };
  }
}
