import { createSocket } from 'node:dgram';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { request } from 'undici';
import { createCgi, type Cgi, type CgiDeps } from '../../src/cgi/index.ts';
import { loadConfig } from '../../src/core/config/load.ts';
import type { MailSubmitter, OutboundMessage } from '../../src/core/contracts.ts';
import { startAll, stopAll } from '../../src/core/lifecycle.ts';
import { createLogger } from '../../src/core/log.ts';
import { Registry } from '../../src/core/registry.ts';
import { BOX_PACKAGE, findExecutable } from '../../src/lib/box.ts';
import { createHttpService } from '../../src/http/index.ts';
import { openState, type State } from '../../src/state/index.ts';
import { writeConfig, type TestSuiteOptions } from './suite.ts';

/**
 * Records what reaches the MailSubmitter boundary. The durable queue is
 * another service; until it is wired in, tests stop at this interface.
 */
/**
 * True when bwrap is not installed here: every handler is refused then, so
 * tests that run handlers skip (`describe.skipIf(boxMissing)`), and say why.
 * Only a missing package skips; a bwrap that cannot build its box fails.
 */
export const boxMissing = findExecutable('bwrap') === undefined;
if (boxMissing) console.warn(`bwrap not found: tests that run handlers are skipped (install the Debian package ${BOX_PACKAGE})`);

export class RecordingSubmitter implements MailSubmitter {
  readonly messages: OutboundMessage[] = [];
  fail = false;
  async submit(msg: OutboundMessage): Promise<string> {
    if (this.fail) throw new Error('queue disk full');
    this.messages.push(msg);
    return `q${this.messages.length}`;
  }
}

export interface CgiTestSuite {
  http: string;
  port: number;
  dir: string;
  sitesDir: string;
  dataDir: string;
  cgi: Cgi;
  state: State;
  logs(): Array<Record<string, unknown>>;
  stop(): Promise<void>;
}

/**
 * The real HTTP service and the real handler gateway, composed as main.ts
 * does, with `mail` (a recording submitter, or none) at the mail boundary.
 */
export async function startCgiSuite(opts: TestSuiteOptions & { mail?: MailSubmitter; sandbox?: CgiDeps['sandbox']; launcher?: boolean }): Promise<CgiTestSuite> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-cgi-'));
  // mkdtemp makes a 0700 folder; handlers run as an unprivileged user and must reach the sites below it.
  chmodSync(dir, 0o755);
  const { configDir, sitesDir, dataDir } = writeConfig(dir, opts);
  const lines: string[] = [];
  const log = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(...chunk.toString().split('\n').filter(Boolean));
        cb();
      },
    }),
  });
  const registry = new Registry(loadConfig(configDir));
  const state = openState(registry.config.main.dataDir);
  const cgi = createCgi({ registry, log, mail: opts.mail, sandbox: opts.sandbox, launcher: opts.launcher, onSent: (f) => state.forms.add({ ...f, recipients: f.to }) });
  const http = createHttpService({ registry, state, log, gateway: cgi.gateway });
  let url = '';
  const services = [
    cgi.service,
    {
      ...http,
      start: async () => {
        const u = await http.start();
        url = u[0]!;
        return u;
      },
    },
  ];
  await startAll(services, log);
  return {
    http: url,
    port: Number(new URL(url).port),
    dir,
    sitesDir,
    dataDir,
    cgi,
    state,
    logs: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
    async stop() {
      await stopAll(services, 500);
      state.close();
      rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
    },
  };
}

/** A response read whole: undici's request lets tests set Host (fetch may not). */
export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text(): Promise<string>;
  json(): Promise<unknown>;
}

/** One HTTP request to `base` for virtual host `host`, redirects not followed. */
export async function call(
  base: string,
  host: string,
  p: string,
  init: { method?: string; body?: string | Buffer; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const res = await request(`${base}${p}`, {
    method: (init.method ?? 'GET') as 'GET',
    headers: { host, ...init.headers },
    body: init.body,
  });
  const body = await res.body.text();
  return {
    status: res.statusCode,
    headers: res.headers,
    text: async () => body,
    json: async () => JSON.parse(body) as unknown,
  };
}

/** Listeners outside the boxes that no handler may reach ({@link startOutsideListeners}). */
export interface OutsideListeners {
  /** A Unix socket by path, open to every user (mode 0777). */
  socket: string;
  /** A UDP echo server on 127.0.0.1. */
  udpPort: number;
  close(): void;
}

/**
 * Starts {@link OutsideListeners}: the Unix socket `dir`/outside.sock and
 * with `abstractName` an abstract one (a name starting with NUL), both
 * answering "hello", and the UDP echo server.
 */
export async function startOutsideListeners(dir: string, abstractName?: string): Promise<OutsideListeners> {
  const socket = path.join(dir, 'outside.sock');
  const unix = createServer((c) => c.end('hello'));
  await new Promise<void>((resolve) => unix.listen(socket, resolve));
  chmodSync(socket, 0o777);
  const abstract = abstractName === undefined ? undefined : createServer((c) => c.end('hello'));
  if (abstract) await new Promise<void>((resolve) => abstract.listen(abstractName, resolve));
  const udp = createSocket('udp4');
  udp.on('message', (m, from) => udp.send(m, from.port, from.address));
  await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
  return {
    socket,
    udpPort: udp.address().port,
    close: () => {
      unix.close();
      abstract?.close();
      udp.close();
    },
  };
}
