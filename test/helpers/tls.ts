import { spawn } from 'node:child_process';

/**
 * The subject of the certificate a listener presents after its protocol's
 * upgrade to TLS (`openssl s_client -starttls`), asked for `servername`
 * (none: no SNI); `url` is the listener's (`ftp://127.0.0.1:port`).
 */
export function starttlsSubject(protocol: 'ftp' | 'smtp', url: string, servername: string | undefined): Promise<string> {
  const u = new URL(url);
  const args = ['s_client', '-starttls', protocol, '-connect', `${u.hostname}:${u.port}`, ...(servername ? ['-servername', servername] : ['-noservername'])];
  return new Promise((resolve, reject) => {
    const p = spawn('openssl', args, { stdio: ['pipe', 'pipe', 'ignore'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('close', () => {
      const m = /^subject=(.*)$/m.exec(out);
      if (m) resolve(m[1]!.trim());
      else reject(new Error(`no certificate subject in openssl's output:\n${out}`));
    });
    p.stdin.end('QUIT\r\n');
  });
}
