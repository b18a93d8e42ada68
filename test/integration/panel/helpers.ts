import { rawRequest, type RawResponse } from '../../helpers/http.ts';

export const PANEL_HOST = 'panel.makewaves.test';

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
