import busboy from 'busboy';
import { realpath, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { HttpOutcome, PanelRequest, WebRootWriter } from '../core/contracts.ts';
import type { Logger } from '../core/log.ts';
import type { Registry, Tenant } from '../core/registry.ts';
import { resolveInJail, splitSegments } from '../lib/jail.ts';
import { formatSize } from '../lib/sizes.ts';
import { csrfField, esc, messagePage, page, type Shell } from './html.ts';
import { redirect, refusedBody, sendHtml } from './web.ts';

/*
 * Uploading one file into the web root from the browser: a multipart form
 * (the CSRF token first, then the file), streamed through the FTP service's
 * WebRootWriter: the same jail, quota and atomic replace as an FTP STOR.
 * A body larger than `panel.maxUpload`, or than the room left in the quota,
 * is refused from its Content-Length before any of it is read.
 */

type Who = NonNullable<Shell['who']>;

/** `panel.maxUpload` when not set. */
export const DEFAULT_MAX_UPLOAD = 100 * 1024 * 1024;
/** What a multipart body carries besides the file (boundaries, part headers, the token and the folder). */
const MULTIPART_SLACK = 16 * 1024;

export interface UploadDeps {
  registry: () => Registry;
  log: Logger;
  webRoot: WebRootWriter | undefined;
  audit: (r: PanelRequest, action: string, detail: string) => void;
  sameToken: (given: string | undefined | null, expected: string) => boolean;
}

export function uploadPage(who: Who, o: { max: number; free: number; error?: string; zipError?: string; done?: string; available: boolean }): string {
  const base = `/t/${encodeURIComponent(who.tenant)}/upload`;
  if (!o.available) return page({ title: 'Upload', who, current: 'upload' }, '<p>Uploads from the browser are not offered on this server; use FTP or SFTP.</p>');
  return page(
    { title: 'Upload', who, current: 'upload' },
    (o.done ? `<p class="done" role="status">${esc(o.done)}</p>` : '') +
      (o.error ? `<p class="error" role="alert" id="upload-error">${esc(o.error)}</p>` : '') +
      `<p>One file into your web space, as FTP would put it there: a file of the same name is replaced at once, when the new one is complete.</p>` +
      `<p id="upload-limits">Up to ${esc(formatSize(o.max))} per file; ${o.free === Infinity ? 'no quota' : `${esc(formatSize(o.free))} left in your quota`}.</p>` +
      `<form method="post" action="${base}" enctype="multipart/form-data">${csrfField(who.csrf)}` +
      `<label for="folder">Folder</label><input id="folder" name="folder" type="text" value="/">` +
      `<label for="file">File</label><input id="file" name="file" type="file" required>` +
      `<button type="submit">Upload</button></form>` +
      `<h2>A zip of a site</h2>` +
      (o.zipError ? `<p class="error" role="alert" id="zip-error">${esc(o.zipError)}</p>` : '') +
      `<p>Unpacked into an existing folder as it is in the archive, all or nothing: files of the same names are replaced once every file is in. ` +
      `Links, names starting with "." and paths out of the folder are refused, and so is an archive that unpacks past your quota.</p>` +
      `<form method="post" action="${base}/zip" enctype="multipart/form-data">${csrfField(who.csrf)}` +
      `<label for="zip-folder">Unpack to</label><input id="zip-folder" name="folder" type="text" value="/">` +
      `<label for="zip-file">Site archive (zip)</label><input id="zip-file" name="file" type="file" accept=".zip,application/zip" required>` +
      `<button type="submit">Unpack archive</button></form>`,
  );
}

/**
 * True when `clientPath` is a path of `t`'s web root as the store names one
 * (`/a/b`: canonical, nothing hidden, no control character) and there is a
 * `kind` there now. The upload page's notice comes from its query string,
 * which anyone can put in a link: it names only what is in the customer's own
 * web space, never words of the link's.
 */
async function isInRoot(t: Tenant, clientPath: string, kind: 'file' | 'folder'): Promise<boolean> {
  if (clientPath.length > 4096 || /[\u0000-\u001f\u007f]/.test(clientPath)) return false;
  const parsed = splitSegments(clientPath);
  if (!parsed.ok || clientPath !== `/${parsed.segments.join('/')}`) return false;
  if (kind === 'file' && parsed.segments.length === 0) return false;
  try {
    const found = await resolveInJail(await realpath(t.root), parsed.segments);
    if (!found.ok) return false;
    const st = await stat(found.real);
    return kind === 'file' ? st.isFile() : st.isDirectory();
  } catch {
    // No web root (yet), or the path went meanwhile: nothing to name.
    return false;
  }
}

/** Joins the folder typed and the file's own name (its last path segment only) into a web-root path; the jail judges it. */
function targetOf(folder: string, filename: string): string {
  const name = filename.split(/[\\/]/).pop() ?? '';
  const dir = folder.trim() === '' ? '/' : folder.trim();
  return `${dir.endsWith('/') ? dir : `${dir}/`}${name}`;
}

export function uploads({ registry, log, webRoot, audit, sameToken }: UploadDeps) {
  const maxOf = () => registry().config.main.panel?.maxUpload ?? DEFAULT_MAX_UPLOAD;

  function refuse(r: PanelRequest, a: Who, status: number, why: string, message: string, free: number): HttpOutcome {
    log.info({ user: a.login, tenant: a.tenant, remote: r.remote, why }, 'panel upload refused');
    // The rest of the body is read and dropped for a while (lingerOnBody), so a client still sending reads this answer.
    return refusedBody(r.req, sendHtml(r.req, r.res, status, uploadPage(a, { max: maxOf(), free, error: message, available: true })));
  }

  return {
    async show(r: PanelRequest, a: Who, t: Tenant, query: URLSearchParams): Promise<HttpOutcome> {
      const done = query.get('done');
      const unpacked = query.get('unpacked');
      const folder = query.get('folder') ?? '/';
      let said: string | undefined;
      if (done) said = (await isInRoot(t, done, 'file')) ? `${done} was stored.` : undefined;
      else if (unpacked && /^\d{1,9}$/.test(unpacked)) said = (await isInRoot(t, folder, 'folder')) ? `${unpacked} file${unpacked === '1' ? '' : 's'} unpacked into ${folder}.` : undefined;
      if ((done || unpacked) && said === undefined) {
        log.info({ user: a.login, tenant: a.tenant, remote: r.remote, done: done?.slice(0, 100), folder: unpacked ? folder.slice(0, 100) : undefined, why: 'not a path of the web root' }, 'panel upload notice not shown');
      }
      const free = webRoot ? await webRoot.free(a.tenant) : 0;
      return sendHtml(r.req, r.res, 200, uploadPage(a, { max: maxOf(), free, done: said, available: webRoot !== undefined }));
    },

    async receive(r: PanelRequest, a: Who, t: Tenant, csrf: string): Promise<HttpOutcome> {
      if (!webRoot) return refusedBody(r.req, sendHtml(r.req, r.res, 404, messagePage('Not found', 'Uploads from the browser are not offered on this server.', a)));
      const max = maxOf();
      const free = await webRoot.free(t.id);
      if (!/^multipart\/form-data\s*;/i.test(r.req.headers['content-type'] ?? '')) return refuse(r, a, 400, 'not multipart', 'The upload form could not be read.', free);
      const length = Number(r.req.headers['content-length']);
      if (Number.isFinite(length) && length > max + MULTIPART_SLACK) return refuse(r, a, 413, `${length} bytes over panel.maxUpload`, `The file is larger than the ${formatSize(max)} an upload may be; nothing was stored.`, free);
      if (Number.isFinite(length) && length > free + MULTIPART_SLACK)
        return refuse(r, a, 507, `${length} bytes over the quota`, `The file does not fit in the ${formatSize(free)} left in your quota; nothing was stored.`, free);

      let bb: busboy.Busboy;
      try {
        bb = busboy({ headers: r.req.headers, limits: { files: 1, fields: 4, fieldSize: 4096, fileSize: max, parts: 6 } });
      } catch {
        // busboy's refusal of the headers (no boundary): a form this panel did not make.
        return refuse(r, a, 400, 'bad multipart headers', 'The upload form could not be read.', free);
      }
      const fields = new Map<string, string>();
      let outcome: Promise<{ status: number; why?: string; message?: string; path?: string }> | undefined;
      bb.on('field', (name, value) => fields.set(name, value));
      bb.on('file', (_name, file: Readable & { truncated?: boolean }, info) => {
        if (outcome || !sameToken(fields.get('csrf'), csrf)) {
          file.resume();
          outcome ??= Promise.resolve({ status: 403, why: 'no valid CSRF token before the file' });
          return;
        }
        const target = targetOf(fields.get('folder') ?? '/', info.filename ?? '');
        async function* chunks(): AsyncIterable<Buffer> {
          for await (const c of file) yield c as Buffer;
          // busboy stops at `fileSize` and marks the stream: the file is larger than allowed, so none of it is kept.
          if (file.truncated) throw new TooLarge();
        }
        outcome = webRoot.store(t.id, target, chunks(), { login: a.login, remote: r.remote }).then(
          (res) => {
            file.resume();
            return res.ok ? { status: 303, path: res.clientPath } : { status: res.why === 'quota' ? 507 : 400, why: res.why, message: res.message };
          },
          (err: unknown) => {
            file.resume();
            if (err instanceof TooLarge) return { status: 413, why: 'over panel.maxUpload', message: `The file is larger than the ${formatSize(max)} an upload may be; nothing was stored.` };
            throw err;
          },
        );
      });
      const finished = new Promise<void>((resolve, reject) => {
        bb.on('close', resolve);
        bb.on('error', reject);
      });
      r.req.pipe(bb);
      try {
        await finished;
      } catch (err) {
        log.info({ user: a.login, tenant: t.id, remote: r.remote, err: (err as Error).message }, 'panel upload refused: unreadable form');
        await outcome?.catch(() => undefined); // the store sees the same end of input and cleans up after itself
        return refuse(r, a, 400, 'unreadable multipart body', 'The upload could not be read; nothing was stored.', free);
      }
      const o = outcome ? await outcome : { status: 400, why: 'no file', message: 'Choose a file to upload.' };
      if (o.status === 403) {
        audit(r, 'denied', `POST upload: ${o.why}`);
        return refuse(r, a, 403, o.why!, 'The form had expired or did not come from this panel; please try again.', free);
      }
      if (o.status !== 303) return refuse(r, a, o.status, o.why ?? 'refused', o.message ?? 'Not stored.', await webRoot.free(t.id));
      audit(r, 'upload', o.path!);
      return redirect(r.res, `/t/${encodeURIComponent(t.id)}/upload?done=${encodeURIComponent(o.path!)}`);
    },
  };
}

class TooLarge extends Error {}
