import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { hashPassword } from '../../../src/lib/password.ts';
import { rawRequest, type RawResponse } from '../../helpers/http.ts';
import { startTestSuite, type TestSuite, type TestSuiteOptions } from '../../helpers/suite.ts';

export const PANEL_HOST = 'panel.makewaves.test';

/** The FTP users the panel tests log in as, with their passwords. */
const PASSWORDS = { alice: 'wonderland', carol: 'carol-pass', bob: 'builder' } as const;

/** FTP accounts of a tenant file (passwords hashed) for `users`, each with its password of {@link PASSWORDS}. */
export async function ftpAccounts(...users: Array<keyof typeof PASSWORDS>): Promise<Array<{ user: string; password: string }>> {
  return Promise.all(users.map(async (user) => ({ user, password: await hashPassword(PASSWORDS[user]) })));
}

/** A client of the panel at `base` logged in as alice@example.test (the login answered 303, or this throws). */
export async function asAlice(base: string): Promise<PanelClient> {
  const c = new PanelClient(base);
  const res = await c.login('alice@example.test', PASSWORDS.alice);
  if (res.status !== 303) throw new Error(`alice's login was answered ${res.status}`);
  return c;
}

/** Two tenants, each with one FTP user and a home page: example.test (alice, page "hello") and other.test (bob, page "bob"). */
export async function aliceAndBob(): Promise<Pick<TestSuiteOptions, 'tenants' | 'files'>> {
  return {
    tenants: {
      'example.test': { domains: ['example.test'], ftp: await ftpAccounts('alice') },
      'other.test': { domains: ['other.test'], ftp: await ftpAccounts('bob') },
    },
    files: { 'example.test/index.html': 'hello', 'other.test/index.html': 'bob' },
  };
}

/**
 * A suite with FTP on loopback and the panel (`panel`: its settings beside
 * the host) whose tenant example.test (quota 600KiB, FTP user alice, its
 * site `files`) is logged in to the panel as alice: the client and the CSRF
 * token of her upload page.
 */
export async function atUploadPage(panel: Record<string, unknown>, files: Record<string, string>): Promise<{ t: TestSuite; c: PanelClient; csrf: string }> {
  const t = await startTestSuite({
    main: { panel: { host: PANEL_HOST, ...panel }, ftp: { listen: '127.0.0.1:0' } },
    tenants: { 'example.test': { domains: ['example.test'], quota: '600KiB', ftp: await ftpAccounts('alice') } },
    files,
  });
  try {
    const c = new PanelClient(t.http);
    await c.login('alice@example.test', PASSWORDS.alice);
    return { t, c, csrf: await c.csrf('/t/example.test/upload') };
  } catch (err) {
    await t.stop();
    throw err;
  }
}

/** A client of the panel over plain HTTP on loopback with a cookie jar, as a browser without JavaScript would be. */
export class PanelClient {
  readonly jar = new Map<string, string>();
  constructor(
    readonly base: string,
    readonly host = PANEL_HOST,
  ) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const cookie = [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
    return { host: this.host, ...(cookie ? { cookie } : {}), ...extra };
  }

  private keep(res: RawResponse): RawResponse {
    const set = res.headers['set-cookie'] ?? [];
    for (const c of set) {
      const [pair = '', ...attrs] = c.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (attrs.some((a) => /^\s*max-age=0$/i.test(a))) this.jar.delete(name);
      else this.jar.set(name, value);
    }
    return res;
  }

  async get(path: string): Promise<RawResponse & { text: string }> {
    const res = this.keep(await rawRequest(this.base, path, this.headers()));
    return { ...res, text: res.body.toString() };
  }

  async post(path: string, fields: Record<string, string>, extra: Record<string, string> = {}): Promise<RawResponse & { text: string }> {
    const body = new URLSearchParams(fields).toString();
    const res = this.keep(await rawRequest(this.base, path, this.headers({ 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(Buffer.byteLength(body)), ...extra }), 'POST', body));
    return { ...res, text: res.body.toString() };
  }

  /** The value of the hidden csrf field of the page at `path`. */
  async csrf(path: string): Promise<string> {
    const page = await this.get(path);
    const m = /name="csrf" value="([^"]+)"/.exec(page.text);
    if (!m) throw new Error(`no csrf field on ${path} (status ${page.status})`);
    return m[1]!;
  }

  /** Logs in through the login form; resolves with the answer to the POST. */
  async login(user: string, password: string): Promise<RawResponse & { text: string }> {
    const csrf = await this.csrf('/login');
    return this.post('/login', { csrf, user, password });
  }
}

const MON = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** A Combined Log Format line as the HTTP service writes it, at `when`. */
export function logLine(o: { when: Date; path: string; status: number; bytes: number; referer?: string; method?: string }): string {
  const d = o.when;
  const p = (n: number) => String(n).padStart(2, '0');
  const stamp = `${p(d.getUTCDate())}/${MON[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
  const q = (s: string) => s.replace(/["\\]/g, (c) => `\\${c}`);
  return `192.0.2.1 - - [${stamp}] "${o.method ?? 'GET'} ${q(o.path)} HTTP/1.1" ${o.status} ${o.bytes || '-'} "${o.referer === undefined ? '-' : q(o.referer)}" "test"\n`;
}

/**
 * Requests, bytes, 4xx and 5xx per UTC day (YYYY-MM-DD) of every access log
 * in `dir` (access.log and its rotated days), counted here independently of
 * the panel: what its plots and table must show.
 */
export function countsFromLogs(dir: string): Map<string, { requests: number; bytes: number; c4xx: number; c5xx: number }> {
  const out = new Map<string, { requests: number; bytes: number; c4xx: number; c5xx: number }>();
  for (const name of readdirSync(dir).filter((n) => n.startsWith('access.log'))) {
    for (const line of readFileSync(path.join(dir, name), 'utf8').split('\n')) {
      const m = /^\S+ - - \[(\d\d)\/(\w{3})\/(\d{4}):.*" (\d{3}) (\d+|-) "/.exec(line);
      if (!m) continue;
      const day = `${m[3]}-${String(MON.indexOf(m[2]!) + 1).padStart(2, '0')}-${m[1]}`;
      const c = out.get(day) ?? { requests: 0, bytes: 0, c4xx: 0, c5xx: 0 };
      const status = Number(m[4]);
      c.requests++;
      c.bytes += m[5] === '-' ? 0 : Number(m[5]);
      if (status >= 500) c.c5xx++;
      else if (status >= 400) c.c4xx++;
      out.set(day, c);
    }
  }
  return out;
}
