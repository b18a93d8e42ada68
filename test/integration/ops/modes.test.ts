import { lstatSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boxMissing } from '../../helpers/cgi.ts';
import { rawRequest } from '../../helpers/http.ts';
import { startSink, type MailSink } from '../../helpers/mailsink.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';
import { everyServiceTenant, mailAndForm } from '../../helpers/workload.ts';
import { ftpLogin, upload } from '../ftp/helpers.ts';

let t: TestSuite;
let sink: MailSink;
let umask: number;

beforeAll(async () => {
  // Whoever starts the suite: even a careless umask of 000 must not leave its files open to others.
  umask = process.umask(0);
  sink = await startSink();
  t = await startTestSuite({
    main: {
      smtp: { listen: ['127.0.0.1:0'], relay: sink.url },
      ftp: {},
      http: { tls: { listen: ['127.0.0.1:0'], certs: '../data/certs', selfSigned: true } },
    },
    tenants: {
      'a.test': await everyServiceTenant('modes-pass'),
    },
    files: { 'a.test/index.html': 'A' },
  });
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
  if (umask !== undefined) process.umask(umask);
});

/** Every entry below `dir` with its mode bits, relative to `dir`. */
function walk(dir: string, out: Array<[string, number, 'dir' | 'file' | 'socket' | 'other']> = [], base = dir): typeof out {
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    const st = lstatSync(full);
    const kind = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSocket() ? 'socket' : 'other';
    out.push([path.relative(base, full), st.mode & 0o7777, kind]);
    if (kind === 'dir') walk(full, out, base);
  }
  return out;
}

describe.skipIf(boxMissing)('modes of what the suite creates under data/', () => {
  it('no file or folder is group/world-writable or world-readable, after traffic of every service', async () => {
    // HTTP (access log), mail (spool, queue rows, database WAL), a form (handler scratch), FTP (upload, transfer log).
    expect((await rawRequest(t.http, '/', { host: 'a.test' })).status).toBe(200);
    await mailAndForm(t, sink);
    const c = await ftpLogin(t.ftp!, 'ann@a.test', 'modes-pass');
    await upload(c, 'up.html', 'uploaded');
    c.close();
    const running = walk(t.dataDir);
    expect(running.map(([p]) => p)).toEqual(expect.arrayContaining(['makewaves.db-wal', 'makewaves.db-shm']));
    await t.suite.stop(500); // flushes the logs

    const entries = [...running, ...walk(t.dataDir)];
    const names = entries.map(([p]) => p);
    // The walk saw what matters: the database with its WAL, both logs, the spool, the certificates.
    expect(names).toEqual(expect.arrayContaining(['makewaves.db', path.join('logs', 'a.test', 'access.log'), path.join('logs', 'a.test', 'ftp.log'), 'certs', path.join('spool', 'q')]));
    const open = entries
      .filter(([, mode, kind]) => (kind === 'socket' ? mode & 0o022 : mode & 0o026))
      .map(([p, mode]) => `${p} ${mode.toString(8)}`);
    expect(open).toEqual([]);
    // The data folder itself may be passed through (handlers reach their scratch folder) but never listed.
    expect(lstatSync(t.dataDir).mode & 0o026).toBe(0);
  });
});
