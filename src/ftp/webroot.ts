import { mkdir, open, realpath } from 'node:fs/promises';
import type { WebRootResult, WebRootTreeResult, WebRootWriter } from '../core/contracts.ts';
import { replyCode } from '../core/errors.ts';
import type { FtpContext } from './context.ts';
import { FtpError, JailFileSystem } from './jailfs.ts';
import { unpackTree } from './unpack.ts';

/**
 * Uploads that come by another way than FTP (the panel's): the same
 * JailFileSystem (jail, hidden temporary, quota on every chunk, one rename
 * over the target) and the same usage counter as an FTP session of the
 * tenant, so the two can never disagree about room or paths.
 */
export function webRootWriter(ctx: FtpContext): WebRootWriter {
  return {
    async free(tenantId) {
      return (await ctx.usageOf(tenantId)).free;
    },

    async store(tenantId, clientPath, source, who): Promise<WebRootResult> {
      const tenant = ctx.registry().tenants.get(tenantId);
      if (!tenant) return { ok: false, why: 'refused', message: 'This site is no longer hosted here' };
      const log = ctx.log.child({ tenant: tenantId, user: who.login, remote: who.remote, via: 'panel' });
      await mkdir(tenant.root, { recursive: true });
      const usage = await ctx.usageOf(tenantId);
      const fs = new JailFileSystem(await realpath(tenant.root), usage, log);
      let up;
      try {
        up = await fs.startUpload(clientPath);
      } catch (err) {
        if (!(err instanceof FtpError)) throw err;
        return { ok: false, why: err.code === replyCode('QUOTA_EXCEEDED', 'ftp') ? 'quota' : 'refused', message: err.message };
      }
      // 'wx' (O_EXCL): never opens through a link planted at the temporary's name.
      const fh = await open(up.temp, 'wx', 0o644).catch(async (err: unknown) => {
        await fs.abortUpload(up, 0);
        throw err;
      });
      let written = 0;
      let closed = false;
      let quotaHit = false;
      try {
        for await (const chunk of source) {
          if (quotaHit) continue;
          if (!fs.uploadFits(up, chunk.length)) {
            // Over quota: the temporary goes now; the rest is read and dropped (as FTP's STOR does), so the sender gets a clean answer.
            quotaHit = true;
            await fh.close();
            closed = true;
            await fs.abortUpload(up, written);
            log.info({ path: up.clientPath, bytes: written, quota: usage.quota }, 'panel upload cut off: quota exceeded');
            continue;
          }
          usage.used += chunk.length;
          written += chunk.length;
          await fh.write(chunk);
        }
        if (quotaHit) return { ok: false, why: 'quota', message: `Quota exceeded: ${up.clientPath} not stored (quota ${usage.quota} bytes)` };
        await fh.close();
        closed = true;
        await fs.commitUpload(up);
      } catch (err) {
        if (!closed) await fh.close().catch(() => undefined); // already failing: the first error is the one reported
        if (!quotaHit) await fs.abortUpload(up, written);
        throw err;
      }
      ctx.siteChanges?.changed(tenantId);
      log.info({ path: up.clientPath, bytes: written }, 'panel upload stored');
      return { ok: true, clientPath: up.clientPath, bytes: written };
    },

    async storeTree(tenantId, folder, entries, who): Promise<WebRootTreeResult> {
      const tenant = ctx.registry().tenants.get(tenantId);
      if (!tenant) return { ok: false, why: 'refused', message: 'This site is no longer hosted here' };
      const log = ctx.log.child({ tenant: tenantId, user: who.login, remote: who.remote, via: 'panel' });
      await mkdir(tenant.root, { recursive: true });
      const fs = new JailFileSystem(await realpath(tenant.root), await ctx.usageOf(tenantId), log);
      const res = await unpackTree(fs, folder, entries, log);
      if (res.ok) {
        ctx.siteChanges?.changed(tenantId);
        log.info({ folder: res.folder, files: res.files, folders: res.folders, bytes: res.bytes }, 'panel archive unpacked');
      }
      return res;
    },
  };
}
