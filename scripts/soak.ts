/**
 * Soak: one suite, started as a child process (`makewaves serve`), driven
 * with HTTP, SMTP, FTP and form posts at the same time for N minutes, with
 * a real smtp-server as its relay. Every error is counted; every message
 * and upload is tracked to its arrival (the relay for mail and form mail,
 * an HTTP GET of the uploaded file for FTP). Prints the server's RSS over
 * time; exits 1 on any error or loss, or if the server does not stop
 * cleanly on SIGTERM.
 *
 *   npm run soak -- --minutes 10 [--report-seconds 15]
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { parseArgs } from 'node:util';
import { Client } from 'basic-ftp';
import nodemailer from 'nodemailer';
import { Agent, request } from 'undici';
import { hashPassword } from '../src/lib/password.ts';
import { startSink } from '../test/helpers/mailsink.ts';
import { writeConfig } from '../test/helpers/suite.ts';
import { rssMiB, ROOT } from './bench/lib.ts';

const { values } = parseArgs({ options: { minutes: { type: 'string', default: '10' }, 'report-seconds': { type: 'string', default: '15' } } });
const minutes = Number(values.minutes);
const reportEvery = Number(values['report-seconds']) * 1000;
if (!(minutes > 0)) throw new Error(`--minutes must be a positive number, not "${values.minutes}"`);

const FTP_PASS = 'soak-ftp-password';
const counts = { http: 0, mail: 0, uploads: 0, forms: 0 };
const errors = new Map<string, number>();
const firstError = new Map<string, string>();
function fail(kind: string, err: unknown): void {
  errors.set(kind, (errors.get(kind) ?? 0) + 1);
  if (!firstError.has(kind)) firstError.set(kind, err instanceof Error ? err.message : String(err));
}

const sink = await startSink();
const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-soak-'));
chmodSync(dir, 0o755);
const { configDir } = writeConfig(dir, {
  main: {
    smtp: { listen: ['127.0.0.1:0'], relay: sink.url, maxConnectionsPerIp: 100 },
    ftp: { maxConnectionsPerIp: 50 },
    cgi: { mailPerHour: 1_000_000, mailPerIpPerHour: 1_000_000 },
  },
  tenants: {
    'soak.test': {
      domains: ['soak.test', 'www.soak.test'],
      quota: '512MiB',
      ftp: [{ user: 'up', password: await hashPassword(FTP_PASS) }],
      mail: { forward: { info: ['inbox@remote.test'] } },
      forms: { recipients: ['forms@remote.test'] },
    },
    'other.test': { domains: ['other.test'] },
  },
  files: { 'soak.test/index.html': 'soak index\n', 'other.test/index.html': `${'x'.repeat(20_000)}\n` },
});

const child = spawn(process.execPath, [path.join(ROOT, 'bin/makewaves.js'), 'serve', '--config', configDir], { stdio: ['ignore', 'pipe', 'pipe'] });
let out = '';
let errText = '';
child.stdout.on('data', (c: Buffer) => {
  // Keep only what is needed to find the listeners and failures; the log grows for the whole run otherwise.
  if (out.length < 200_000) out += c.toString();
});
child.stderr.on('data', (c: Buffer) => (errText += c.toString()));
const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));

async function listening(svc: string): Promise<string> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const m = new RegExp(`"${svc} listening on ([a-z]+://[\\d.:]+)`).exec(out);
    if (m) return m[1]!;
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no ${svc} listener (stderr: ${errText})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
const httpUrl = await listening('http');
const smtpUrl = new URL(await listening('smtp'));
const ftpUrl = new URL(await listening('ftp'));
console.log(`suite pid ${child.pid}: ${httpUrl} ${smtpUrl.href} ${ftpUrl.href}; relay ${sink.url}; ${minutes} min`);

const started = Date.now();
const until = started + minutes * 60_000;
const running = () => Date.now() < until;
const agent = new Agent({ connections: 8 });
const expectedMail = new Set<string>();
let uploadsLost = 0;

async function httpLoop(host: string, p: string, want: number): Promise<void> {
  while (running()) {
    try {
      const res = await request(`${httpUrl}${p}`, { headers: { host }, dispatcher: agent });
      const body = await res.body.text();
      if (res.statusCode !== 200 || body.length !== want) fail('http', `${host}${p}: ${res.statusCode}, ${body.length} bytes`);
      else counts.http++;
    } catch (err) {
      fail('http', err);
    }
  }
}

async function mailLoop(n: number): Promise<void> {
  const transport = nodemailer.createTransport({ host: smtpUrl.hostname, port: Number(smtpUrl.port), ignoreTLS: true, pool: true, maxConnections: 1, maxMessages: 100 });
  let i = 0;
  while (running()) {
    const id = `mail-${n}-${i++}`;
    try {
      await transport.sendMail({ envelope: { from: 'soak@elsewhere.test', to: ['info@soak.test'] }, raw: `Subject: ${id}\r\nMessage-ID: <${id}@soak>\r\n\r\nsoak body ${id}\r\n${'line\r\n'.repeat(50)}` });
      expectedMail.add(id);
      counts.mail++;
    } catch (err) {
      fail('smtp', err);
    }
  }
  transport.close();
}

async function ftpLoop(): Promise<void> {
  const c = new Client(20_000);
  let i = 0;
  while (running()) {
    try {
      if (c.closed) await c.access({ host: ftpUrl.hostname, port: Number(ftpUrl.port), user: 'up@soak.test', password: FTP_PASS });
      const name = `up-${i % 200}.txt`;
      const data = Buffer.from(`upload ${i} ${'y'.repeat(1000 + (i % 7) * 4000)}\n`);
      i++;
      const stream = new PassThrough();
      stream.end(data);
      await c.uploadFrom(stream, name);
      counts.uploads++;
      // Arrival: the file is served whole at once (FTP tells HTTP about the change).
      const res = await request(`${httpUrl}/${name}`, { headers: { host: 'soak.test' }, dispatcher: agent });
      const got = Buffer.from(await res.body.arrayBuffer());
      if (res.statusCode !== 200 || !got.equals(data)) {
        uploadsLost++;
        fail('ftp-arrival', `${name}: ${res.statusCode}, ${got.length} of ${data.length} bytes`);
      }
    } catch (err) {
      fail('ftp', err);
      c.close();
    }
  }
  c.close();
}

async function formLoop(): Promise<void> {
  let i = 0;
  while (running()) {
    const id = `form-${i++}`;
    const body = new URLSearchParams({ name: 'Soak Visitor', email: 'visitor@elsewhere.test', subject: id, message: `soak form ${id}` }).toString();
    try {
      const res = await request(`${httpUrl}/cgi-bin/formmail`, {
        method: 'POST',
        headers: { host: 'soak.test', 'content-type': 'application/x-www-form-urlencoded' },
        body,
        dispatcher: agent,
      });
      const text = await res.body.text();
      if (res.statusCode !== 200) fail('forms', `${res.statusCode}: ${text.slice(0, 200)}`);
      else {
        expectedMail.add(id);
        counts.forms++;
      }
    } catch (err) {
      fail('forms', err);
    }
  }
}

const rss: Array<[number, number]> = [];
// Arrivals are taken off the relay as they come, so the sink does not hold every message of a long run.
const subjectOf = (raw: Buffer) => /^Subject: ([^\r\n]+)/m.exec(raw.toString('latin1'))?.[1]?.trim();
const arrived = new Set<string>();
const takeArrivals = () => {
  for (const m of sink.messages.splice(0)) {
    const s = subjectOf(m.raw);
    if (s) arrived.add(s);
  }
};
const report = () => {
  takeArrivals();
  const s = Math.round((Date.now() - started) / 1000);
  const r = rssMiB(child.pid);
  rss.push([s, r]);
  const errs = [...errors].map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  console.log(`${String(s).padStart(5)}s  rss ${r.toFixed(1)} MiB  http ${counts.http}  mail ${counts.mail}  uploads ${counts.uploads}  forms ${counts.forms}  relay got ${arrived.size}  errors: ${errs}`);
};
report();
const timer = setInterval(report, reportEvery);
await Promise.all([httpLoop('soak.test', '/', 11), httpLoop('other.test', '/', 20_001), mailLoop(1), mailLoop(2), ftpLoop(), formLoop()]);
clearInterval(timer);
report();

// Arrival of every accepted message and form mail at the relay, within a bounded wait.
const deadline = Date.now() + 60_000;
while (Date.now() < deadline) {
  takeArrivals();
  if ([...expectedMail].every((id) => arrived.has(id))) break;
  await new Promise((r) => setTimeout(r, 200));
}
const lost = [...expectedMail].filter((id) => !arrived.has(id));

child.kill('SIGTERM');
const code = await exited;
await sink.close();
await agent.close();
rmSync(dir, { recursive: true, force: true });

const first = rss.find(([s]) => s >= Math.min(30, minutes * 15))?.[1] ?? rss[0]![1];
const last = rss.at(-1)![1];
const peak = Math.max(...rss.map(([, r]) => r));
console.log('\nsummary');
console.log(`  requests ${counts.http} HTTP, ${counts.mail} mails accepted, ${counts.uploads} FTP uploads, ${counts.forms} form posts in ${minutes} min`);
console.log(`  mail and form mail expected at the relay ${expectedMail.size}, arrived ${expectedMail.size - lost.length}, lost ${lost.length}${lost.length ? ` (first: ${lost.slice(0, 5).join(', ')})` : ''}`);
console.log(`  uploads not served whole right after 226: ${uploadsLost}`);
console.log(`  errors: ${[...errors].map(([k, v]) => `${k} ${v} (first: ${firstError.get(k)})`).join('; ') || 'none'}`);
console.log(`  rss: after warm-up ${first.toFixed(1)} MiB, end ${last.toFixed(1)} MiB, peak ${peak.toFixed(1)} MiB`);
console.log(`  server exit on SIGTERM: ${code}${errText ? `; stderr: ${errText.trim()}` : ''}`);
const ok = errors.size === 0 && lost.length === 0 && uploadsLost === 0 && code === 0;
console.log(ok ? 'PASS' : 'FAIL');
process.exitCode = ok ? 0 : 1;
