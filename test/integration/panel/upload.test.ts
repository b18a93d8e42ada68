import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest } from '../../helpers/http.ts';
import type { TestSuite } from '../../helpers/suite.ts';
import { ftpLogin, replyCode, upload as ftpUpload } from '../ftp/helpers.ts';
import { atUploadPage, PANEL_HOST, type PanelClient } from './helpers.ts';

// Uploads from the browser go through the FTP service's own jail, quota and
// atomic replace (a contract wired in main.ts). Driven with curl -F, as a
// browser's multipart form would send them.

let t: TestSuite;
let c: PanelClient;
let csrf: string;
const KiB = 1024;

beforeAll(async () => {
  ({ t, c, csrf } = await atUploadPage({ maxUpload: '512KiB' }, { 'example.test/index.html': 'old page' }));
}, 30_000);
afterAll(() => t?.stop());

const root = () => path.join(t.sitesDir, 'example.test');
/** Upload temporaries anywhere in the web root: none may be left behind. */
function temporaries(dir = root()): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true }).filter((e) => e.name.startsWith('.~mw-upload-')).map((e) => e.name);
}

/** curl -F with the session cookie; resolves with the status and the body. */
function curlUpload(fields: string[], extra: string[] = []): Promise<{ status: number; body: string }> {
  const cookie = [...c.jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const args = ['-s', '-o', '-', '-w', '\n%{http_code}', '-H', `Host: ${PANEL_HOST}`, '-H', `Cookie: ${cookie}`, ...fields.flatMap((f) => ['-F', f]), ...extra, `${t.http}/t/example.test/upload`];
  return new Promise((resolve, reject) => {
    execFile('curl', args, { encoding: 'utf8', maxBuffer: 4 * 1024 * 1024 }, (err, out) => {
      if (err) return reject(err);
      const nl = out.lastIndexOf('\n');
      resolve({ status: Number(out.slice(nl + 1)), body: out.slice(0, nl) });
    });
  });
}

function file(name: string, size: number, fill = 'x'): string {
  const p = path.join(t.dir, name);
  writeFileSync(p, fill.repeat(size));
  return p;
}

describe('uploads from the panel', () => {
  it('stores a file in the web root and replaces an existing one, served at once', async () => {
    mkdirSync(path.join(root(), 'docs'));
    const res = await curlUpload([`csrf=${csrf}`, 'folder=/docs', `file=@${file('hello.txt', 10, 'h')}`]);
    expect(res.status).toBe(303);
    expect((await rawRequest(t.http, '/docs/hello.txt', { host: 'example.test' })).body.toString()).toBe('hhhhhhhhhh');
    const page = await c.get('/t/example.test/upload?done=%2Fdocs%2Fhello.txt');
    expect(page.text).toContain('/docs/hello.txt was stored.');

    writeFileSync(path.join(t.dir, 'index.html'), 'new page');
    expect((await curlUpload([`csrf=${csrf}`, 'folder=/', `file=@${path.join(t.dir, 'index.html')}`])).status).toBe(303);
    expect((await rawRequest(t.http, '/', { host: 'example.test' })).body.toString()).toBe('new page');
    expect(temporaries()).toEqual([]);
  });

  it("says a file was stored, or an archive unpacked, only of a path of the web root: a link's own words are never shown", async () => {
    mkdirSync(path.join(root(), 'shown'), { recursive: true });
    writeFileSync(path.join(root(), 'shown', 'page.html'), 'p');
    // Links out of the web root: a file and a folder there by name, not in the tenant's space.
    symlinkSync('/etc/passwd', path.join(root(), 'out.html'));
    symlinkSync('/etc', path.join(root(), 'outdir'));
    expect((await c.get('/t/example.test/upload?done=%2Fshown%2Fpage.html')).text).toContain('/shown/page.html was stored.');
    expect((await c.get('/t/example.test/upload?unpacked=2&folder=%2Fshown')).text).toContain('2 files unpacked into /shown.');
    const spoof = 'Your password has expired; send it to help@evil.test';
    const hostile: Array<[string, string]> = [
      ['done', spoof],
      ['done', `/${spoof}`],
      ['done', '/missing.html'],
      ['done', '/shown'], // a folder, not a file
      ['done', '/shown/../shown/page.html'], // not the path the store names
      ['done', '//shown/page.html'],
      ['done', '/../../etc/passwd'],
      ['done', '/.htaccess'],
      ['done', '/out.html'], // a link to a file outside the web root
      ['done', '/outdir/passwd'],
      ['done', `/shown/page.html${'\n'}${spoof}`],
    ];
    for (const [key, value] of hostile) {
      const page = await c.get(`/t/example.test/upload?${new URLSearchParams({ [key]: value })}`);
      expect(page.status, value).toBe(200);
      expect(page.text, value).not.toContain('was stored');
      expect(page.text, value).not.toContain('evil.test');
    }
    for (const folder of [spoof, `/${spoof}`, '/missing', '/shown/page.html', '/shown/../shown', '/../..', '/.git', '/outdir']) {
      const page = await c.get(`/t/example.test/upload?${new URLSearchParams({ unpacked: '3', folder })}`);
      expect(page.status, folder).toBe(200);
      expect(page.text, folder).not.toContain('unpacked into');
      expect(page.text, folder).not.toContain('evil.test');
    }
  });

  it("refuses paths out of the jail and hidden names in FTP's words, without a token 403, storing nothing", async () => {
    const escape = await curlUpload([`csrf=${csrf}`, 'folder=/../../etc', `file=@${file('x.txt', 5)}`]);
    expect(escape.status).toBe(400);
    expect(escape.body).toContain('outside your web space');
    const hidden = await curlUpload([`csrf=${csrf}`, 'folder=/', `file=@${file('.htaccess', 5)};filename=.htaccess`]);
    expect(hidden.status).toBe(400);
    expect(hidden.body).toContain('names starting with &quot;.&quot; are not allowed');
    const xss = await curlUpload([`csrf=${csrf}`, 'folder=/<script>alert(1)</script>/..', `file=@${file('y.txt', 5)}`]);
    expect(xss.body).not.toContain('<script>alert');
    const noToken = await curlUpload(['folder=/', `file=@${file('evil.txt', 5)}`]);
    expect(noToken.status).toBe(403);
    expect(existsSync(path.join(root(), 'evil.txt'))).toBe(false);
    expect(existsSync(path.join(root(), 'x.txt'))).toBe(false);
    expect(temporaries()).toEqual([]);
  });

  it('refuses a file over panel.maxUpload or the quota, early from its length or while it streams, leaving nothing', async () => {
    const big = await curlUpload([`csrf=${csrf}`, 'folder=/', `file=@${file('big.bin', 700 * KiB)}`]);
    expect(big.status).toBe(413);
    expect(big.body).toContain('larger than the 512 KiB an upload may be');
    // Chunked: no length to judge early; busboy's size limit cuts it, and what was written goes.
    const chunked = await curlUpload([`csrf=${csrf}`, 'folder=/', `file=@${file('big2.bin', 700 * KiB)}`], ['-H', 'Transfer-Encoding: chunked']);
    expect(chunked.status).toBe(413);
    expect(existsSync(path.join(root(), 'big.bin'))).toBe(false);
    expect(existsSync(path.join(root(), 'big2.bin'))).toBe(false);

    // A 600 KiB quota: 400 KiB fits once, not twice; FTP's STOR sees the same counter.
    expect((await curlUpload([`csrf=${csrf}`, 'folder=/', `file=@${file('a.bin', 400 * KiB)}`])).status).toBe(303);
    const over = await curlUpload([`csrf=${csrf}`, 'folder=/', `file=@${file('b.bin', 400 * KiB)}`]);
    expect(over.status).toBe(507);
    expect(over.body).toContain('does not fit');
    const streamed = await curlUpload([`csrf=${csrf}`, 'folder=/', `file=@${file('c.bin', 400 * KiB)}`], ['-H', 'Transfer-Encoding: chunked']);
    expect(streamed.status).toBe(507);
    expect(streamed.body).toContain('Quota exceeded: /c.bin not stored');
    expect(existsSync(path.join(root(), 'b.bin'))).toBe(false);
    expect(existsSync(path.join(root(), 'c.bin'))).toBe(false);
    expect(temporaries()).toEqual([]);
    const ftp = await ftpLogin(t.ftp!, 'alice@example.test', 'wonderland');
    expect(await replyCode(ftpUpload(ftp, 'd.bin', Buffer.alloc(300 * KiB)))).toBe(552);
    ftp.close();
    expect(readFileSync(path.join(root(), 'a.bin')).length).toBe(400 * KiB);
  });

  /**
   * A raw upload claiming `length` bytes: the head, then (if `body`) that many bytes at once, read only once
   * they are all handed to the kernel (a failed send rejects: curl's "Send failure: Broken pipe"); resolves
   * with the answer up to its page's end.
   */
  function rawUpload(length: number, body: boolean): Promise<string> {
    const port = Number(new URL(t.http).port);
    const cookie = [...c.jar].map(([k, v]) => `${k}=${v}`).join('; ');
    return new Promise<string>((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1');
      const read = () => {
        let got = '';
        s.on('data', (d) => {
          got += d.toString();
          if (got.includes('</html>')) {
            s.destroy();
            resolve(got);
          }
        });
        s.on('close', () => resolve(got));
      };
      s.on('error', reject);
      s.write(`POST /t/example.test/upload HTTP/1.1\r\nHost: ${PANEL_HOST}\r\nCookie: ${cookie}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: ${length}\r\n\r\n`);
      if (!body) return read();
      s.write(Buffer.alloc(length, 0x61), (err) => (err ? reject(new Error(`the body could not be sent: ${(err as NodeJS.ErrnoException).code}`)) : read()));
    });
  }

  it('answers a 2 GB upload with 413 from its headers alone, before any of the body is sent', async () => {
    expect(await rawUpload(2 * 1024 ** 3, false)).toMatch(/^HTTP\/1\.1 413 /);
  });

  // A client that sends its whole body before it reads (as curl and browsers may) must find the answer, not a
  // reset: the server reads and drops what follows an early refusal for a while (nginx's lingering close).
  it('a client still sending after the early 413 reads the whole answer', async () => {
    for (const size of [2 * 1024 * 1024, 6 * 1024 * 1024]) {
      const answer = await rawUpload(size, true);
      expect(answer).toMatch(/^HTTP\/1\.1 413 /);
      expect(answer).toContain('larger than the 512 KiB an upload may be');
    }
  });
});
