import { realpathSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseCgiOutput } from '../../../src/cgi/cgi.ts';
import { encodeFrame, FrameReader, T } from '../../../src/cgi/protocol.ts';

const DOMAINS = ['a.test', 'www.a.test'];
const out = (s: string) => parseCgiOutput(Buffer.from(s, 'latin1'), DOMAINS);

describe('parseCgiOutput (RFC 3875 §6)', () => {
  it.each([
    ['document, CRLF', 'Content-Type: text/plain\r\n\r\nhi', 200, [['Content-Type', 'text/plain']], 'hi'],
    ['document, LF only', 'Content-Type: text/html\n\n<p>', 200, [['Content-Type', 'text/html']], '<p>'],
    ['Status sets the code', 'Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno', 404, [['Content-Type', 'text/plain']], 'no'],
    ['other headers pass', 'Content-Type: text/plain\r\nSet-Cookie: a=1\r\nX-A: b\r\n\r\n', 200, [['Set-Cookie', 'a=1'], ['X-A', 'b'], ['Content-Type', 'text/plain']], ''],
    ['server-owned headers are dropped', 'Content-Type: text/plain\r\nContent-Length: 99\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\nx', 200, [['Content-Type', 'text/plain']], 'x'],
    ['client redirect is 302', 'Location: https://www.a.test/x\r\n\r\n', 302, [['Location', 'https://www.a.test/x']], ''],
    ['client redirect keeps a 3xx Status', 'Status: 303 See Other\r\nLocation: http://a.test/\r\n\r\n', 303, [['Location', 'http://a.test/']], ''],
    ['local redirect', 'Location: /thanks.html\r\n\r\n', 302, [['Location', '/thanks.html']], ''],
    ['Location with a 200 Status still redirects', 'Status: 200 OK\r\nLocation: /x\r\n\r\n', 302, [['Location', '/x']], ''],
    ['no body, no type: empty 204-like 200', 'Status: 204 No Content\r\n\r\n', 204, [], ''],
  ])('%s', (_name, text, status, headers, body) => {
    const r = out(text);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.status).toBe(status);
    expect(r.headers).toEqual(headers);
    expect(r.body.toString('latin1')).toBe(body);
  });

  it.each([
    ['empty output', ''],
    ['no blank line', 'Content-Type: text/plain\r\nhello'],
    ['body first', '\r\nhello'],
    ['line without colon', 'Content-Type: text/plain\r\nnonsense\r\n\r\n'],
    ['bad header name', 'Bad Name: x\r\n\r\n'],
    ['control character in a value', 'X-A: a\x00b\r\nContent-Type: text/plain\r\n\r\n'],
    ['bad Status', 'Status: two hundred\r\nContent-Type: text/plain\r\n\r\n'],
    ['1xx Status', 'Status: 101 Switching\r\nContent-Type: text/plain\r\n\r\n'],
    ['body without Content-Type', 'X-A: 1\r\n\r\nbody'],
    ['javascript: Location', 'Location: javascript:alert(1)\r\n\r\n'],
    ['relative Location', 'Location: thanks.html\r\n\r\n'],
  ])('refuses %s', (_name, text) => {
    expect(out(text).ok).toBe(false);
  });

  it('a "//host" Location is an absolute URL, not a local path', () => {
    expect(out('Location: //evil.test/\r\n\r\n').ok).toBe(false);
  });
});

describe('a handler\'s Location: a URL on one of the tenant\'s own domains, or a path starting with exactly one "/"', () => {
  it.each([
    '/',
    '/thanks.html',
    '/a/b?x=1&y=%2F#frag',
    '/~user/page',
    'http://a.test/',
    'https://a.test/thanks.html',
    'http://www.a.test:8080/x?q',
    'HTTPS://WWW.A.TEST/x',
    'https://a.test',
  ])('passes %j', (loc) => {
    const r = out(`Location: ${loc}\r\n\r\n`);
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.headers).toEqual([['Location', loc]]);
  });

  it.each([
    ['backslash after the slash', '/\\evil.test'],
    ['two slashes', '//evil.test'],
    ['three slashes', '///evil.test'],
    ['two backslashes', '\\\\evil.test'],
    ['backslash then slash', '\\/evil.test'],
    ['slash, backslash, backslash', '/\\\\evil.test'],
    ['backslash later in the path', '/a\\b'],
    ['another host', 'http://evil.test/'],
    ['another host over https', 'https://evil.test/x'],
    ['a look-alike suffix', 'http://a.test.evil.test/'],
    ['a look-alike prefix', 'http://evila.test/'],
    ['credentials naming the own host', 'http://a.test@evil.test/'],
    ['credentials on the own host', 'http://user:pw@a.test/'],
    ['backslash host trick', 'http://evil.test\\@a.test/'],
    ['scheme without slashes', 'http:evil.test'],
    ['scheme with one slash', 'http:/evil.test'],
    ['scheme with backslashes', 'http:\\\\evil.test'],
    ['encoded slashes, no leading slash', '%2F%2Fevil.test'],
    ['encoded slash after the slash', '/%2F/evil.test'],
    ['encoded backslash after the slash', '/%5Cevil.test'],
    ['encoded slashes, lower case', '/%2f%2fevil.test'],
    ['tab between the slashes', '/\t/evil.test'],
    ['tab in a URL', 'http://a.test\t.evil.test/'],
    ['leading tab', '\t//evil.test'],
    ['space in the path', '/a b'],
    ['non-ASCII', '/caf\xe9'],
    ['javascript:', 'javascript:alert(1)'],
    ['data:', 'data:text/html,<script>alert(1)</script>'],
    ['ftp:', 'ftp://a.test/'],
    ['relative', 'thanks.html'],
    ['dot relative', './/evil.test'],
    ['empty', ''],
  ])('refuses %s', (_name, loc) => {
    const r = out(`Location: ${loc}\r\n\r\n`);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.why).toMatch(/Location/);
  });
});

describe('FrameReader', () => {
  it('reassembles frames split anywhere', () => {
    const bytes = Buffer.concat([encodeFrame(T.output, 7, Buffer.from('hello')), encodeFrame(T.end, 7, Buffer.from('{}'))]);
    for (let cut = 1; cut < bytes.length; cut++) {
      const r = new FrameReader(1024);
      const frames = [...r.push(bytes.subarray(0, cut)), ...r.push(bytes.subarray(cut))];
      expect(frames.map((f) => [f.type, f.run, f.payload.toString()])).toEqual([
        [T.output, 7, 'hello'],
        [T.end, 7, '{}'],
      ]);
    }
  });

  it('throws on a frame over the limit before buffering it, and on a runt', () => {
    const big = Buffer.alloc(5);
    big.writeUInt32BE(10_000, 0);
    expect(() => new FrameReader(1024).push(big)).toThrow(RangeError);
    const runt = Buffer.alloc(9);
    runt.writeUInt32BE(2, 0);
    expect(() => new FrameReader(1024).push(runt)).toThrow(RangeError);
  });
});

describe('sandbox command line', () => {
  it('lowers the priority, sets kernel limits, drops the user, builds the box, then starts Node with the permission model', async () => {
    const { spawnSpec, RUNNER } = await import('../../../src/cgi/sandbox.ts');
    const spec = spawnSpec(
      {
        permissionFlag: '--experimental-permission',
        box: { bwrap: '/usr/bin/bwrap', noNestedUserns: true },
        drop: { user: 'nobody', uid: 65534, gid: 65534, setpriv: '/usr/bin/setpriv' },
        prlimit: '/usr/bin/prlimit',
        nice: '/usr/bin/nice',
      },
      { reads: ['/srv/sites/a.test/x'], folders: ['/srv/sites/a.test'], scratch: '/srv/data/cgi/a.test', memory: 128 * 1024 * 1024, fileMax: 1024 },
    );
    const argv = [spec.command, ...spec.args];
    const at = (x: string) => argv.indexOf(x);
    const node = realpathSync(process.execPath);
    expect(argv.slice(0, 3)).toEqual(['/usr/bin/nice', '-n', '10']);
    expect(at('/usr/bin/nice')).toBeLessThan(at('/usr/bin/prlimit'));
    expect(at('/usr/bin/prlimit')).toBeLessThan(at('/usr/bin/setpriv'));
    // The box is built by the unprivileged user, never by root.
    expect(at('/usr/bin/setpriv')).toBeLessThan(at('/usr/bin/bwrap'));
    expect(at('/usr/bin/bwrap')).toBeLessThan(at(node));
    expect(spec.forks).toBe(true);
    expect(argv).toContain('--reuid=65534');
    // Twice the memory cap, plus what Node 22+ maps at start (see V8_RESERVE in sandbox.ts).
    expect(argv).toContain(`--data=${256 * 1024 * 1024 + (Number(process.versions.node.split('.')[0]) >= 22 ? 768 * 1024 * 1024 : 0)}`);
    const box = argv.slice(at('/usr/bin/bwrap'), argv.indexOf('--', at('/usr/bin/bwrap')) + 1);
    for (const flag of ['--unshare-all', '--die-with-parent', '--new-session', '--as-pid-1']) expect(box).toContain(flag);
    expect(box.join(' ')).toContain('--cap-drop ALL');
    expect(box.join(' ')).toContain('--unshare-user --disable-userns');
    expect(box.join(' ')).toContain('--ro-bind /usr /usr');
    expect(box.join(' ')).toContain('--ro-bind /srv/sites/a.test /srv/sites/a.test');
    expect(box.join(' ')).toContain('--bind /srv/data/cgi/a.test /srv/data/cgi/a.test');
    expect(box.join(' ')).toContain(`--ro-bind ${RUNNER} ${RUNNER}`);
    expect(box.join(' ')).toContain('--size 1024 --tmpfs /tmp');
    // The box's own root and /dev are read-only, after every mount point in them was made.
    expect(box.indexOf('--remount-ro')).toBeGreaterThan(box.lastIndexOf('--bind'));
    expect(box.flatMap((a, i) => (a === '--remount-ro' ? [box[i + 1]] : []))).toEqual(['/dev', '/']);
    // /tmp comes before every folder bound into the box (a web root under /tmp stays visible).
    expect(box.indexOf('/tmp')).toBeLessThan(box.indexOf('/srv/sites/a.test'));
    // Read-write: the scratch folder alone; nothing of /etc but the named files.
    expect(box.filter((a) => a === '--bind')).toHaveLength(1);
    expect(box.filter((a) => a.startsWith('/etc')).every((a) => ['/etc/ld.so.cache', '/etc/localtime'].includes(a))).toBe(true);
    // What runs in the box: after bwrap's "--" (the binary may also appear before it, bound in when outside /usr).
    const inBox = argv.slice(argv.indexOf('--', at('/usr/bin/bwrap')) + 1);
    expect(inBox).toEqual([
      node,
      '--experimental-permission',
      `--allow-fs-read=${RUNNER}`,
      '--allow-fs-read=/srv/sites/a.test/x',
      '--allow-fs-read=/srv/data/cgi/a.test',
      '--allow-fs-write=/srv/data/cgi/a.test',
      '--allow-fs-write=/proc/self/autogroup',
      '--no-addons',
      '--max-old-space-size=96',
      '--disable-warning=ExperimentalWarning',
      RUNNER,
    ]);
    // Never granted: child processes, workers, addons, WASI.
    expect(inBox.some((a) => /--allow-(child-process|worker|addons|wasi)/.test(a))).toBe(false);
    expect(spec.cwd).toBe('/srv/data/cgi/a.test');
  });

  it('finds no box where bwrap is not installed, and says which package to install', async () => {
    const { detectSandbox } = await import('../../../src/cgi/sandbox.ts');
    const caps = detectSandbox('nobody', { uid: process.getuid!(), gid: process.getgid!() }, '/nonexistent');
    expect(caps.box).toBeUndefined();
    expect(caps.refusal).toMatch(/bwrap not found.*Debian package bubblewrap/);
  });

  it.runIf(process.getuid?.() === 0)('refuses to start as root without an unprivileged user to run handlers as', async () => {
    const { detectSandbox } = await import('../../../src/cgi/sandbox.ts');
    expect(() => detectSandbox('no-such-user-here')).toThrow(/does not exist.*useradd/);
    expect(() => detectSandbox('root')).toThrow(/is root/);
  });
});
