import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import nodemailer from 'nodemailer';
import { generate } from 'selfsigned';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queueDrained, smtpPort, startSink, type MailSink } from '../../helpers/mailsink.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';

const execFileP = promisify(execFile);
let t: TestSuite;
let sink: MailSink;
let admin: string;
let certsDir: string;

beforeAll(async () => {
  sink = await startSink();
  t = await startTestSuite({
    main: {
      admin: { listen: '127.0.0.1:0' },
      smtp: { listen: ['127.0.0.1:0'], relay: sink.url },
      http: { tls: { listen: ['127.0.0.1:0'], certs: '../certs' } },
    },
    tenants: { 'a.test': { domains: ['a.test'], mail: { forward: { info: ['owner@elsewhere.test'] } } } },
  });
  certsDir = path.join(t.dir, 'certs');
  mkdirSync(certsDir, { recursive: true });
  admin = t.suite.urls.admin![0]!;
});
afterAll(async () => {
  await t?.stop();
  await sink?.close();
});

async function healthz(): Promise<{ code: number; body: { status: string; problems?: Array<{ key: string; severity: string; message: string }> } }> {
  const res = await fetch(`${admin}/healthz`);
  return { code: res.status, body: (await res.json()) as never };
}

/** `makewaves status` as the operator runs it: its exit code and output. */
async function status(): Promise<{ code: number; out: string }> {
  try {
    const r = await execFileP(process.execPath, [path.resolve('bin/makewaves.js'), 'status', '--config', t.configDir], { encoding: 'utf8' });
    return { code: 0, out: r.stdout };
  } catch (err) {
    const e = err as { code: number; stdout: string };
    return { code: e.code, out: e.stdout };
  }
}

describe('health: /healthz and makewaves status say what is wrong', () => {
  it('ok while nothing is wrong: 200, status exits 0', async () => {
    expect(await healthz()).toMatchObject({ code: 200, body: { status: 'ok' } });
    expect((await healthz()).body.problems).toBeUndefined();
    const s = await status();
    expect(s.code).toBe(0);
    expect(s.out).toMatch(/^makewaves ok:/);
  });

  it('a refused config on disk: degraded naming the file and key, status exits 1; fixed, ok again', async () => {
    t.writeTenant('b.test', 'domains: [b.test]\nquota: lots\n');
    expect(t.suite.reload()).toBe(false);
    const h = await healthz();
    expect(h).toMatchObject({ code: 200, body: { status: 'degraded' } });
    expect(h.body.problems).toEqual([expect.objectContaining({ key: 'config', severity: 'degraded', message: expect.stringMatching(/b\.test\.yaml: quota: "lots" is not a size/) })]);
    const s = await status();
    expect(s.code).toBe(1);
    expect(s.out).toMatch(/^makewaves degraded:/);
    expect(s.out).toMatch(/^problem: the configuration on disk is refused .*b\.test\.yaml: quota/m);
    t.writeTenant('b.test', 'domains: [b.test]\n');
    expect(t.suite.reload()).toBe(true);
    expect(((await healthz()).body.problems ?? []).filter((p) => p.key === 'restart')).toEqual([]);
  });

  it.each([
    [5, true],
    [13, true],
    [15, false],
    [200, false],
  ])('a certificate expiring in %i days makes it degraded: %s', async (days, degraded) => {
    const pems = await generate([{ name: 'commonName', value: 'soon.test' }], {
      keyType: 'ec',
      curve: 'P-256',
      algorithm: 'sha256',
      notBeforeDate: new Date(Date.now() - 86_400_000),
      notAfterDate: new Date(Date.now() + days * 86_400_000 + 3_600_000),
    });
    const file = path.join(certsDir, `soon${days}.test.crt`);
    writeFileSync(file, pems.cert);
    const h = await healthz();
    rmSync(file);
    if (!degraded) {
      expect(h.body).toEqual(expect.objectContaining({ status: 'ok' }));
      return;
    }
    expect(h.body.status).toBe('degraded');
    expect(h.body.problems).toEqual([expect.objectContaining({ key: `cert:${file}`, message: expect.stringContaining(`expires on`) })]);
    expect(h.body.problems![0]!.message).toContain(`in ${days} days`);
    expect((await healthz()).body.status).toBe('ok');
  });

  it('deliveries failing permanently above the rate: degraded with the count, status exits 1', async () => {
    sink.rcptReply.set('owner@elsewhere.test', [550, '5.1.1 no such user']);
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort(t.suite), secure: false, ignoreTLS: true });
    // The next hop's refusal reaches the sender in its session (no bounce), and still counts as a permanent failure.
    for (let i = 0; i < 6; i++) {
      await expect(transport.sendMail({ from: 'x@visitor.test', to: 'info@a.test', subject: `s${i}`, text: 'one' })).rejects.toThrow(/550 5\.1\.1/);
    }
    transport.close();
    await queueDrained(t.suite);
    const h = await healthz();
    expect(h.code).toBe(200);
    expect(h.body.status).toBe('degraded');
    expect(h.body.problems).toEqual([expect.objectContaining({ key: 'mail-permanent-failures', message: expect.stringMatching(/^6 of \d+ delivery attempts in the last 60 minutes failed permanently/) })]);
    const s = await status();
    expect(s.code).toBe(1);
    expect(s.out).toMatch(/^problem: 6 of \d+ delivery attempts/m);
  });

  it('a setting that needs a restart: degraded naming it, and the log says so; undone, ok again', async () => {
    const file = path.join(t.configDir, 'makewaves.yaml');
    const original = readFileSync(file, 'utf8');
    try {
      for (const [edit, names] of [
        [(y: string) => y.replace(/^hostname: .*$/m, 'hostname: mx2.test'), ['hostname']],
        [(y: string) => `${y}ftp:\n  listen: 127.0.0.1:0\n`, ['ftp']],
        // Read once when the HTTP service starts (its proxy and its file cache).
        [(y: string) => y.replace(/^http:\n/m, 'http:\n  proxyTimeout: 7\n  cacheRevalidate: 0\n'), ['http.cacheRevalidate', 'http.proxyTimeout']],
      ] as const) {
        writeFileSync(file, edit(original));
        expect(t.suite.reload()).toBe(true);
        const h = await healthz();
        expect(h.body.status).toBe('degraded');
        expect(h.body.problems?.filter((p) => p.key === 'restart')).toEqual([expect.objectContaining({ message: `makewaves.yaml: ${names.join(', ')} changed since the start; restart to apply` })]);
        expect(t.logs().some((l) => JSON.stringify(l.settings) === JSON.stringify(names) && String(l.msg).endsWith('take effect on restart (the rest applies now)'))).toBe(true);
      }
    } finally {
      writeFileSync(file, original);
    }
    expect(t.suite.reload()).toBe(true);
    expect(((await healthz()).body.problems ?? []).filter((p) => p.key === 'restart')).toEqual([]);
  });

  it('a listener that is not serving: 503, status exits 1 and says DOWN', async () => {
    t.suite.health.set('listen:smtp', { severity: 'down', message: 'smtp is not listening on 127.0.0.1:2525' });
    const h = await healthz();
    expect(h.code).toBe(503);
    expect(h.body.status).toBe('down');
    const s = await status();
    expect(s.code).toBe(1);
    expect(s.out).toMatch(/^DOWN: smtp is not listening on 127\.0\.0\.1:2525$/m);
    t.suite.health.set('listen:smtp', undefined);
  });
});
