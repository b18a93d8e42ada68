import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../src/lib/listen.ts';
import { waitFor } from './suite.ts';

/** The rspamd binary of Debian's package `rspamd`. */
export const RSPAMD = '/usr/bin/rspamd';
export const haveRspamd = existsSync(RSPAMD);
/** Why the rspamd tests cannot run, for describe.skipIf's title. */
export const noRspamd = 'rspamd is not installed (Debian package rspamd: apt-get install rspamd)';

/** A token that our local rule scores 8: between the tests' tag (6) and reject (15) thresholds. */
export const TAG_TOKEN = 'MW-TAG-TOKEN-0123';
/** The GTUBE test string: rspamd's built-in detection rejects any message whose text has it. */
export const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

export interface Rspamd {
  /** `http://127.0.0.1:PORT` of its normal worker. */
  url: string;
  port: number;
  /** Its log (one line per scanned message, with the Queue-Id as `qid`). */
  log(): string;
  /** Stops it (SIGTERM to its main process, by pid) and waits for it to end; the temp folder stays until close(). */
  stop(): Promise<void>;
  /** stop() and removes its temp folder. */
  close(): Promise<void>;
}

// rspamd's own ('$CONFDIR' etc.) defaults point at /etc, /var/lib and /run: everything here is in the temp folder.
const config = (dir: string, port: number) => `
options {
  pidfile = "${dir}/rspamd.pid";
  tempdir = "${dir}";
  hs_cache_dir = "${dir}";
  # A few suffixes instead of the public suffix list: compiling the full one takes seconds at every start.
  url_tld = "${dir}/tld.dat";
  # No DNS: nothing here needs it, and a rule that asked would wait for nothing.
  dns { nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 0; }
}
logging { type = "file"; filename = "${dir}/rspamd.log"; level = "info"; }
actions { reject = 15; "add header" = 6; greylist = null; }
lua = "${dir}/rules.lua";
worker "normal" { bind_socket = "127.0.0.1:${port}"; count = 1; mime = true; task_timeout = 8s; }
`;

const RULES = `
rspamd_config.MW_TEST_TOKEN = {
  callback = function(task)
    for _, p in ipairs(task:get_text_parts() or {}) do
      local c = p:get_content()
      if c and tostring(c):find('${TAG_TOKEN}', 1, true) then return true end
    end
    return false
  end,
  score = 8.0,
  description = 'the test token',
}
`;

/** rspamd's /ping answered "pong". */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/ping', agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(res.statusCode === 200 && body.trim() === 'pong'));
    });
    req.on('error', () => resolve(false));
  });
}

/**
 * Starts a real rspamd (no redis, no controller) with a minimal config in a
 * temp folder: its normal worker on a free loopback port, the built-in
 * GTUBE detection (a reject) and one local rule (TAG_TOKEN scores 8).
 * Resolves once it answers /ping.
 */
export async function startRspamd(): Promise<Rspamd> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-rspamd-'));
  const port = await freePort();
  writeFileSync(path.join(dir, 'tld.dat'), 'com\nnet\norg\ntest\n');
  writeFileSync(path.join(dir, 'rules.lua'), RULES);
  writeFileSync(path.join(dir, 'rspamd.conf'), config(dir, port));
  // -f: stays in the foreground (its pid is ours to stop); -i: may run as root here (CI containers).
  const child: ChildProcess = spawn(RSPAMD, ['-f', '-i', '-c', path.join(dir, 'rspamd.conf'), '--var', `DBDIR=${dir}`, '--var', `RUNDIR=${dir}`, '--var', `LOGDIR=${dir}`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  let exited = false;
  const ended = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      resolve();
    }),
  );
  const logFile = path.join(dir, 'rspamd.log');
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  const stop = async () => {
    if (!exited && child.pid !== undefined) process.kill(child.pid, 'SIGTERM');
    await ended;
  };
  try {
    await waitFor(async () => {
      if (exited) throw new Error(`rspamd ended at start: ${stderr}\n${log().slice(-2000)}`);
      return ping(port);
    }, 60_000, `rspamd answering /ping on 127.0.0.1:${port}`);
  } catch (err) {
    await stop();
    rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
    throw err;
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    log,
    stop,
    async close() {
      await stop();
      rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
    },
  };
}
