import busboy from 'busboy';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import yauzl from 'yauzl';
import type { HttpOutcome, PanelRequest, WebRootEntry, WebRootWriter } from '../core/contracts.ts';
import type { Logger } from '../core/log.ts';
import type { Registry, Tenant } from '../core/registry.ts';
import { formatSize } from '../lib/sizes.ts';
import { messagePage, type Shell } from './html.ts';
import { DEFAULT_MAX_UPLOAD, uploadPage } from './upload.ts';
import { redirect, refusedBody, sendHtml } from './web.ts';

/*
 * A zip of a site, uploaded from the browser and unpacked into a folder of
 * the web root, all or nothing. The archive is read with yauzl (a
 * maintained reader that parses the central directory, checks every entry's
 * name, and verifies while inflating that an entry yields exactly the size
 * its header declares: a zip bomb cannot lie its way past the quota):
 *
 *   1. the body is streamed to a scratch file under <data>/panel/uploads
 *      (a zip is read from its end), cut at `panel.maxUpload`; a larger
 *      Content-Length is refused before any of it is read;
 *   2. the whole central directory is checked before anything is written:
 *      the number of entries, names (absolute, `..`), symlinks and other
 *      special files, encryption, the compression method, and the sum of
 *      the declared sizes against the quota;
 *   3. the entries go to the FTP service's WebRootWriter.storeTree: the jail
 *      and the quota again, every file into a temporary, renamed into place
 *      only when all of them are complete.
 *
 * The scratch file goes in every case.
 */

type Who = NonNullable<Shell['who']>;

/** Multipart overhead besides the file (boundaries, part headers, the token and the folder). */
const MULTIPART_SLACK = 16 * 1024;
/** Without a quota, an archive may unpack to at most this many times `maxUpload`. */
const UNPACK_FACTOR = 10;
/** `panel.limits.zipEntries` when not set. */
export const DEFAULT_ZIP_ENTRIES = 10_000;

/** Unix file types in the high half of a zip entry's external attributes (made on Unix). */
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

export interface ZipDeps {
  registry: () => Registry;
  log: Logger;
  webRoot: WebRootWriter | undefined;
  audit: (r: PanelRequest, action: string, detail: string) => void;
  sameToken: (given: string | undefined | null, expected: string) => boolean;
  /** Called once the scratch file is gone, just before the answer (the caller takes the tenant's next archive from then on). */
  settled?: () => void;
}

/** Why an archive is not unpacked: the sentence shown (status 400, 413 or 507). */
class Refused extends Error {
  constructor(
    readonly status: number,
    readonly why: string,
    message: string,
  ) {
    super(message);
  }
}

function openZip(file: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.open(file, { lazyEntries: true, autoClose: false, strictFileNames: false, validateEntrySizes: true }, (err, zip) => (err ? reject(err) : resolve(zip)));
  });
}

/** Every entry of the central directory, in order; yauzl's refusal of a name (absolute, `..`, a backslash) rejects. */
function readEntries(zip: yauzl.ZipFile): Promise<yauzl.Entry[]> {
  return new Promise((resolve, reject) => {
    const out: yauzl.Entry[] = [];
    zip.on('entry', (e: yauzl.Entry) => {
      out.push(e);
      zip.readEntry();
    });
    zip.once('end', () => resolve(out));
    zip.once('error', reject);
    zip.readEntry();
  });
}

function openEntry(zip: yauzl.ZipFile, e: yauzl.Entry): Promise<Readable> {
  return new Promise((resolve, reject) => zip.openReadStream(e, (err, s) => (err ? reject(err) : resolve(s))));
}

/** An entry's content; a stream error (bad data, more or fewer bytes than declared) becomes a refusal of the archive. */
async function* contentOf(zip: yauzl.ZipFile, e: yauzl.Entry): AsyncIterable<Buffer> {
  try {
    for await (const chunk of await openEntry(zip, e)) yield chunk as Buffer;
  } catch (err) {
    throw new Refused(400, `unreadable entry: ${(err as Error).message}`, `${e.fileName} could not be read (${(err as Error).message})`);
  }
}

/**
 * Step 2: the central directory judged as a whole; the entries to store, or a
 * refusal naming the first bad one. `room` caps what the archive may declare
 * where no quota does (the quota itself is the store's to judge: it counts the
 * files an archive replaces as freed, as a STOR's old file is).
 */
export function checkEntries(zip: yauzl.ZipFile, entries: readonly yauzl.Entry[], o: { room: number }): WebRootEntry[] {
  const out: WebRootEntry[] = [];
  let declared = 0;
  for (const e of entries) {
    const name = e.fileName;
    // macOS's Finder adds resource forks under __MACOSX/ and folder settings in .DS_Store: not part of the site.
    if (name.startsWith('__MACOSX/') || name === '.DS_Store' || name.endsWith('/.DS_Store')) continue;
    const madeOnUnix = e.versionMadeBy >> 8 === 3;
    const type = madeOnUnix ? (e.externalFileAttributes >>> 16) & S_IFMT : 0;
    if (type === S_IFLNK) throw new Refused(400, `symlink ${name}`, `${name} is a symbolic link; links are not unpacked`);
    const dir = name.endsWith('/');
    if (type !== 0 && type !== (dir ? S_IFDIR : S_IFREG)) throw new Refused(400, `special file ${name}`, `${name} is not a plain file or folder`);
    if (dir) {
      out.push({ path: name, dir: true });
      continue;
    }
    if (e.isEncrypted()) throw new Refused(400, `encrypted ${name}`, `${name} is encrypted; encrypted archives are not unpacked`);
    if (e.compressionMethod !== 0 && e.compressionMethod !== 8) throw new Refused(400, `method ${e.compressionMethod}`, `${name} is compressed in a way that is not supported (method ${e.compressionMethod}); use plain zip (deflate)`);
    declared += e.uncompressedSize;
    if (declared > o.room) throw new Refused(413, `unpacks past ${o.room} bytes`, `It unpacks to more than the ${formatSize(o.room)} an archive may unpack to`);
    out.push({ path: name, dir: false, size: e.uncompressedSize, open: () => contentOf(zip, e) });
  }
  return out;
}

/** Removes a scratch file (already gone, or never written: what we want). */
async function drop(file: string): Promise<void> {
  await unlink(file).catch(() => undefined);
}

export function zipUploads({ registry, log, webRoot, audit, sameToken, settled }: ZipDeps) {
  const maxOf = () => registry().config.main.panel?.maxUpload ?? DEFAULT_MAX_UPLOAD;
  const scratchDir = () => path.join(registry().config.main.dataDir, 'panel', 'uploads');

  /** Answers with the upload page and `message`; the scratch file, if any, is gone before the answer leaves. */
  async function refuse(r: PanelRequest, a: Who, status: number, why: string, message: string, scratch?: string): Promise<HttpOutcome> {
    if (scratch) await drop(scratch);
    settled?.();
    log.info({ user: a.login, tenant: a.tenant, remote: r.remote, why }, 'panel zip upload refused');
    const free = webRoot ? await webRoot.free(a.tenant) : 0;
    return refusedBody(r.req, sendHtml(r.req, r.res, status, uploadPage(a, { max: maxOf(), free, zipError: message, available: webRoot !== undefined })));
  }

  /** Steps 2 and 3 on the scratch file. */
  async function unpack(r: PanelRequest, a: Who, t: Tenant, file: string, folder: string): Promise<HttpOutcome> {
    const limits = registry().config.main.panel?.limits;
    const maxEntries = limits?.zipEntries ?? DEFAULT_ZIP_ENTRIES;
    let zip: yauzl.ZipFile;
    try {
      zip = await openZip(file);
    } catch (err) {
      return refuse(r, a, 400, `not a zip: ${(err as Error).message}`, `The file is not a zip archive that can be read (${(err as Error).message}); nothing was stored.`, file);
    }
    try {
      // From the end record, before a single entry is read.
      if (zip.entryCount > maxEntries) return await refuse(r, a, 413, `${zip.entryCount} entries`, `The archive holds ${zip.entryCount} entries, more than the ${maxEntries} allowed; nothing was stored.`, file);
      let entries: yauzl.Entry[];
      try {
        entries = await readEntries(zip);
      } catch (err) {
        const m = (err as Error).message;
        const outside = /^(absolute path|invalid relative path|invalid characters in fileName)/.test(m);
        return await refuse(r, a, 400, m, outside ? `The archive has an entry outside its folder (${m}); nothing was stored.` : `The archive could not be read (${m}); nothing was stored.`, file);
      }
      const free = await webRoot!.free(t.id);
      // Declared sizes are what yauzl holds each entry to while inflating; under a quota the store judges them.
      const checked = checkEntries(zip, entries, { room: free === Infinity ? maxOf() * UNPACK_FACTOR : Infinity });
      const res = await webRoot!.storeTree(t.id, folder, checked, { login: a.login, remote: r.remote });
      if (!res.ok) return await refuse(r, a, res.why === 'quota' ? 507 : 400, res.message, `${res.message}; nothing was stored.`, file);
      audit(r, 'upload-zip', `${res.folder}: ${res.files} files, ${res.bytes} bytes`);
      await drop(file);
      settled?.();
      return redirect(r.res, `/t/${encodeURIComponent(t.id)}/upload?unpacked=${res.files}&folder=${encodeURIComponent(res.folder)}`);
    } catch (err) {
      if (err instanceof Refused) return refuse(r, a, err.status, err.why, `${err.message}; nothing was stored.`, file);
      throw err;
    } finally {
      zip.close();
    }
  }

  return {
    /** A POST to `upload/zip`: the token, the folder, then the archive. */
    async receive(r: PanelRequest, a: Who, t: Tenant, csrf: string): Promise<HttpOutcome> {
      if (!webRoot) return refusedBody(r.req, sendHtml(r.req, r.res, 404, messagePage('Not found', 'Uploads from the browser are not offered on this server.', a)));
      const max = maxOf();
      if (!/^multipart\/form-data\s*;/i.test(r.req.headers['content-type'] ?? '')) return refuse(r, a, 400, 'not multipart', 'The upload form could not be read.');
      const length = Number(r.req.headers['content-length']);
      if (Number.isFinite(length) && length > max + MULTIPART_SLACK) return refuse(r, a, 413, `${length} bytes over panel.maxUpload`, `The archive is larger than the ${formatSize(max)} an upload may be; nothing was stored.`);
      let bb: busboy.Busboy;
      try {
        bb = busboy({ headers: r.req.headers, limits: { files: 1, fields: 4, fieldSize: 4096, fileSize: max, parts: 6 } });
      } catch {
        // busboy's refusal of the headers (no boundary): a form this panel did not make.
        return refuse(r, a, 400, 'bad multipart headers', 'The upload form could not be read.');
      }
      await mkdir(scratchDir(), { recursive: true, mode: 0o700 });
      const scratch = path.join(scratchDir(), `${randomBytes(12).toString('hex')}.zip`);
      const fields = new Map<string, string>();
      let outcome: Promise<'stored' | 'csrf' | 'too-large'> | undefined;
      bb.on('field', (name, value) => fields.set(name, value));
      bb.on('file', (_name, file: Readable & { truncated?: boolean }) => {
        if (outcome || !sameToken(fields.get('csrf'), csrf)) {
          file.resume();
          outcome ??= Promise.resolve('csrf');
          return;
        }
        // At `maxUpload` the body stops being read: the rest of a huge chunked body is never taken in (the connection closes after the answer).
        file.once('limit', () => {
          r.req.unpipe(bb);
          file.destroy(new Error('over panel.maxUpload'));
          cut();
        });
        outcome = pipeline(file, createWriteStream(scratch, { flags: 'wx', mode: 0o600 })).then(
          () => (file.truncated ? 'too-large' : 'stored'),
          (err: unknown) => {
            if (file.truncated) return 'too-large';
            throw err;
          },
        );
      });
      let cut: () => void = () => undefined;
      const finished = new Promise<void>((resolve, reject) => {
        bb.on('close', resolve);
        bb.on('error', reject);
        cut = resolve;
      });
      r.req.pipe(bb);
      try {
        try {
          await finished;
        } catch (err) {
          await outcome?.catch(() => undefined); // the scratch file goes below whatever it holds
          return await refuse(r, a, 400, `unreadable multipart body: ${(err as Error).message}`, 'The upload could not be read; nothing was stored.', scratch);
        }
        const o = outcome ? await outcome : undefined;
        if (o === undefined) return await refuse(r, a, 400, 'no file', 'Choose a zip file to upload.', scratch);
        if (o === 'csrf') {
          audit(r, 'denied', 'POST upload/zip: no valid CSRF token before the file');
          return await refuse(r, a, 403, 'no valid CSRF token before the file', 'The form had expired or did not come from this panel; please try again.', scratch);
        }
        if (o === 'too-large') return await refuse(r, a, 413, 'over panel.maxUpload while streaming', `The archive is larger than the ${formatSize(max)} an upload may be; nothing was stored.`, scratch);
        return await unpack(r, a, t, scratch, (fields.get('folder') ?? '/').trim() || '/');
      } finally {
        // Gone whatever happened (already, before most answers; never written when the token was wrong).
        await drop(scratch);
      }
    },
  };
}
