import { closeSync, openSync, readSync, statSync, type Stats } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { resolveInJail, resolveInJailSync } from '../lib/jail.ts';
import type { Timeline } from '../lib/timeline.ts';
import type { Readable } from 'node:stream';
import { BoxPool } from './boxes.ts';
import type { SpawnSpec } from './sandbox.ts';
import type { RunResult, WorkerLimits } from './worker.ts';

/** An interpreter the box shows: a program in /usr/bin, /usr/local/bin, /bin (their sbin too). */
const INTERPRETER = /^\/(?:usr\/(?:local\/)?)?s?bin\/[A-Za-z0-9._+-]+$/;
const HEAD_BYTES = 256;
const STDERR_KEEP = 4096;

export type ScriptCheck = { ok: true; argv: string[] } | { ok: false; why: string };

/**
 * The classic CGI script `<root>/cgi-bin/<name>` (by its own file name,
 * inside the jail), checked by {@link checkScript}; undefined when there
 * is no such file.
 */
export async function findScript(root: string, name: string): Promise<ScriptCheck | undefined> {
  const found = await resolveInJail(root, ['cgi-bin', name]);
  // Gone since it was resolved: no such script.
  const st = found.ok ? await stat(found.real).catch(() => undefined) : undefined;
  if (!found.ok || !st?.isFile()) return undefined;
  return checkScript(found.real, name);
}

/**
 * {@link findScript} in one go, without a hop through the thread pool per
 * file system call (the launcher's: it checks every run, and does nothing
 * else meanwhile).
 */
export function findScriptSync(root: string, name: string): ScriptCheck | undefined {
  const found = resolveInJailSync(root, ['cgi-bin', name]);
  // Gone since it was resolved: no such script.
  const st = found.ok ? statSync(found.real, { throwIfNoEntry: false }) : undefined;
  if (!found.ok || !st?.isFile()) return undefined;
  const early = judgeScript(name, st, statSync(path.dirname(found.real)));
  if (early) return early;
  const head = Buffer.alloc(HEAD_BYTES);
  const fd = openSync(found.real, 'r');
  let n: number;
  try {
    n = readSync(fd, head, 0, HEAD_BYTES, 0);
  } finally {
    closeSync(fd);
  }
  return judgeHead(found.real, head.subarray(0, n), (f) => statSync(f, { throwIfNoEntry: false })?.isFile() === true);
}

/**
 * Whether the tenant's file `file` (a real path in its cgi-bin/, reached
 * as `name`) may run as a classic CGI script, and the command that runs
 * it. suEXEC's checks where they apply (all tenants share one uid, so its
 * owner checks do not): not a non-parsed-header script (nph-), a regular
 * file, neither it nor its folder writable by group or others, no setuid
 * or setgid bit; and a #! line naming an interpreter the box shows. The
 * execute bit is not required (FTP uploads cannot set it): the #! line
 * decides, and the suite runs the interpreter itself, as the kernel would.
 */
export async function checkScript(file: string, name: string): Promise<ScriptCheck> {
  if (/^nph-/i.test(name)) return judgeScript(name, undefined, undefined)!;
  const early = judgeScript(name, await stat(file), await stat(path.dirname(file)));
  if (early) return early;
  const head = Buffer.alloc(HEAD_BYTES);
  const fh = await open(file, 'r');
  let n: number;
  try {
    ({ bytesRead: n } = await fh.read(head, 0, HEAD_BYTES, 0));
  } finally {
    await fh.close();
  }
  const installed = new Set<string>();
  const m = /^#!\s*(\S+)/.exec(head.subarray(0, n).toString('latin1'));
  if (m && INTERPRETER.test(m[1]!) && (await stat(m[1]!).then((s) => s.isFile(), () => false))) installed.add(m[1]!);
  return judgeHead(file, head.subarray(0, n), (f) => installed.has(f));
}

/** The checks on the file and its folder (see checkScript); undefined when they pass. */
function judgeScript(name: string, st: Stats | undefined, dir: Stats | undefined): ScriptCheck | undefined {
  if (/^nph-/i.test(name)) return { ok: false, why: 'non-parsed-header scripts (nph-) are not run: the suite reads every answer itself' };
  if (!st!.isFile()) return { ok: false, why: 'not a regular file' };
  const mode = (st!.mode & 0o7777).toString(8).padStart(4, '0');
  if ((st!.mode & 0o022) !== 0) return { ok: false, why: `the script is writable by others than its owner (mode ${mode})` };
  if ((st!.mode & 0o6000) !== 0) return { ok: false, why: `the script is setuid or setgid (mode ${mode})` };
  if ((dir!.mode & 0o022) !== 0) return { ok: false, why: `its folder is writable by others than its owner (mode ${(dir!.mode & 0o7777).toString(8)})` };
  return undefined;
}

/** The #! line of `head` (the file's first bytes): the command that runs `file`, or why not. */
function judgeHead(file: string, head: Buffer, isFile: (f: string) => boolean): ScriptCheck {
  const first = head.toString('latin1').split('\n')[0]!.replace(/\r$/, '');
  // Linux reads "#!interpreter [one argument]": the rest of the line after the first blank is one argument.
  const m = /^#!\s*(\S+)(?:[ \t]+(.*?))?[ \t]*$/.exec(first);
  if (!m) return { ok: false, why: 'no #! line (e.g. #!/usr/bin/perl) in its first line' };
  const interpreter = m[1]!;
  const ok = INTERPRETER.test(interpreter) && isFile(interpreter);
  if (!ok) return { ok: false, why: `its #! line names ${JSON.stringify(interpreter.slice(0, 100))}, not an installed interpreter in /usr/bin or /bin` };
  return { ok: true, argv: [interpreter, ...(m[2] ? [m[2]] : []), file] };
}

/**
 * Runs one classic CGI script from `spec` (a box of its own, started
 * ahead by `boxes` or now, never used before): the
 * meta-variables as its environment, the body on its stdin, its stdout
 * read whole up to the output limit. The script is PID 1 of its box, so
 * whatever it left running ends with it. Over the wall time: SIGKILL and
 * `timeout`; more output or stderr than the limit: SIGKILL and `output`.
 * `timeline` gets its hand-overs: asked, started, output (the first byte),
 * exited, closed, mailed.
 */
export function runScript(
  spec: SpawnSpec,
  env: Record<string, string>,
  body: Buffer,
  limits: WorkerLimits,
  mail?: (message: ScriptMail) => Promise<unknown>,
  boxes?: BoxPool,
  timeline?: Timeline,
): Promise<{ result: RunResult; stderr: string }> {
  return new Promise((resolve) => {
    timeline?.mark('asked');
    // `env` goes to the launcher, which builds the run itself; a spec of our own carries it in `go` (scriptSpec).
    const proc = spec.launch ? spec.launch.client.start({ ...spec.launch.ask, env }) : (boxes ?? new BoxPool({ depth: 0, max: 0, idleMs: 0 })).start(spec);
    const sent = readMail(proc.stdio[3] as Readable | null | undefined, limits.maxOutput, mail);
    let killed: 'timeout' | 'output' | undefined;
    const kill = (why: 'timeout' | 'output') => {
      killed ??= why;
      // bwrap's box dies with it (--die-with-parent), and with the script every process in its PID namespace.
      proc.kill('SIGKILL');
    };
    const timer = setTimeout(() => kill('timeout'), limits.timeoutMs);
    const chunks: Buffer[] = [];
    let size = 0;
    let stderr = '';
    let stderrBytes = 0;
    if (timeline) {
      proc.once('spawn', () => timeline.mark('started'));
      proc.stdout!.once('data', () => timeline.mark('output'));
      proc.once('exit', () => timeline.mark('exited'));
    }
    proc.stdout!.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limits.maxOutput) return kill('output');
      chunks.push(c);
    });
    proc.stderr!.on('data', (c: Buffer) => {
      stderrBytes += c.length;
      if (stderrBytes > limits.maxOutput) return kill('output');
      if (stderr.length < STDERR_KEEP) stderr += c.toString('utf8').slice(0, STDERR_KEEP - stderr.length);
    });
    // A script that does not read its body (or exits first) closes stdin: nothing to report.
    proc.stdin!.on('error', () => undefined);
    proc.stdin!.end(body);
    let done = false;
    const finish = (result: RunResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      timeline?.mark('closed');
      // The mail it handed to sendmail is queued (or refused) before the answer goes out.
      void sent.then(() => {
        timeline?.mark('mailed');
        resolve({ result, stderr });
      });
    };
    proc.on('error', (err) => finish({ kind: 'crashed', detail: err.message }));
    proc.on('close', (code, signal) => {
      if (killed) return finish({ kind: killed });
      const output = Buffer.concat(chunks);
      // Like Apache: an answer is an answer, whatever the exit status; no answer at all is a failure.
      if (output.length === 0 && (code !== 0 || signal)) return finish({ kind: 'crashed', detail: `exit ${code ?? signal}` });
      finish({ kind: 'done', output });
    });
  });
}

/** A message a script gave /usr/sbin/sendmail, as the form-mail channel takes it. */
export interface ScriptMail {
  to?: string[];
  subject?: string;
  replyTo?: string;
  text: string;
}

/**
 * Reads a script's mail channel (fd 3: one line `M <base64 message>` per
 * sendmail run, up to `max` bytes in all) and hands each message, parsed
 * as `sendmail -t` would (To, Cc, Bcc; Subject; Reply-To or From), to
 * `mail`, which applies the tenant's allow-list and limits. Anything else
 * on the channel is ignored. Settles when the channel has closed and
 * every message was handed over.
 */
function readMail(channel: Readable | null | undefined, max: number, mail?: (message: ScriptMail) => Promise<unknown>): Promise<void> {
  if (!channel) return Promise.resolve();
  return new Promise((resolve) => {
    let buf = '';
    let size = 0;
    const pending: Array<Promise<unknown>> = [];
    channel.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) return;
      buf += c.toString('latin1');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = /^M ([A-Za-z0-9+/=]*)$/.exec(line);
        // The form-mail path logs what it refuses and why; the script's run does not wait on it.
        if (m && mail) pending.push(mail(parseMessage(Buffer.from(m[1]!, 'base64').toString('utf8'))).catch(() => undefined));
      }
    });
    channel.on('error', () => undefined); // the script ended mid-write: what was read whole counts
    channel.on('close', () => void Promise.all(pending).then(() => resolve()));
  });
}

/** Headers and body of an RFC 5322 message, as `sendmail -t` reads them (folded lines unfolded). */
export function parseMessage(raw: string): ScriptMail {
  const text = raw.replace(/\r\n/g, '\n');
  const split = text.indexOf('\n\n');
  const head = split >= 0 ? text.slice(0, split) : text;
  const body = split >= 0 ? text.slice(split + 2) : '';
  const fields = new Map<string, string[]>();
  for (const line of head.replace(/\n[ \t]+/g, ' ').split('\n')) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const name = line.slice(0, i).trim().toLowerCase();
    fields.set(name, [...(fields.get(name) ?? []), line.slice(i + 1).trim()]);
  }
  const addresses = (v: string) => v.split(',').map((a) => (/<([^>]*)>/.exec(a)?.[1] ?? a).trim()).filter(Boolean);
  const to = ['to', 'cc', 'bcc'].flatMap((f) => (fields.get(f) ?? []).flatMap(addresses));
  const reply = fields.get('reply-to')?.[0] ?? fields.get('from')?.[0];
  return {
    ...(to.length > 0 ? { to } : {}),
    ...(fields.has('subject') ? { subject: fields.get('subject')![0]! } : {}),
    ...(reply ? { replyTo: addresses(reply)[0] ?? reply } : {}),
    text: body,
  };
}
