import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../src/lib/listen.ts';
import { waitFor } from './suite.ts';

/** Pebble (Let's Encrypt's test ACME server) and its mock DNS, when installed. */
export const havePebble = ['pebble', 'pebble-challtestsrv'].every((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status === 0);
export const PEBBLE_MISSING = 'needs pebble and pebble-challtestsrv on PATH (Debian: apt-get install -y pebble pebble-challtestsrv; bookworm ships both in pebble)';

export interface Pebble {
  /** The ACME directory URL. */
  directory: string;
  /** PEM file of Pebble's own HTTPS certificate (for acme.ca). */
  tlsCa: string;
  /** Its key (a stand-in server on loopback can present the same certificate). */
  tlsKey: string;
  /** The root that signs what Pebble issues (from its management port), PEM. */
  root(): Promise<string>;
  /** {@link root} written to `dir`/pebble-root.pem (for curl's or openssl's CA file); its path. */
  writeRoot(dir: string): Promise<string>;
  /** Makes the mock DNS answer `host` with `address` (a domain that does not point at us). */
  pointAt(host: string, address: string): Promise<void>;
  /** Stops Pebble (by pid) and waits for it to exit; the mock DNS keeps running. */
  stopCa(): Promise<void>;
  /** Stops both and removes Pebble's folder. */
  stop(): Promise<void>;
}

function request(url: string, ca: string, body?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = (u.protocol === 'https:' ? https.request : http.request)(
      url,
      { method: body === undefined ? 'GET' : 'POST', ca, headers: body === undefined ? {} : { 'content-type': 'application/json' } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => ((res.statusCode ?? 500) < 300 ? resolve(Buffer.concat(chunks).toString()) : reject(new Error(`${url}: ${res.statusCode}`))));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/**
 * Starts pebble-challtestsrv (mock DNS only: every name is 127.0.0.1 unless
 * told otherwise) and Pebble on free loopback ports, validating HTTP-01 on
 * `httpPort` and TLS-ALPN-01 on `tlsPort` (a free port when not given). The config file and Pebble's TLS certificate are written
 * in a temporary folder of its own, removed by stop (or when it fails to start).
 */
export async function startPebble(opts: { httpPort: number; tlsPort?: number; alwaysValid?: boolean }): Promise<Pebble> {
  for (let attempt = 1; ; attempt++) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-pebble-'));
    try {
      return await pebbleIn(dir, opts);
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      // A port freePort gave was taken before Pebble bound it (other tests start servers too): new ports, twice more.
      if (attempt < 3 && /pebble exited .*address already in use/s.test((err as Error).message)) continue;
      throw err;
    }
  }
}

async function pebbleIn(dir: string, opts: { httpPort: number; tlsPort?: number; alwaysValid?: boolean }): Promise<Pebble> {
  const [acmePort, mgmtPort, dnsPort, dnsMgmtPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const tlsPort = opts.tlsPort ?? (await freePort());
  const cert = path.join(dir, 'pebble.crt');
  const key = path.join(dir, 'pebble.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  const config = path.join(dir, 'pebble.json');
  writeFileSync(
    config,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${mgmtPort}`,
        certificate: cert,
        privateKey: key,
        httpPort: opts.httpPort,
        tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
      },
    }),
  );
  const dns = spawn('pebble-challtestsrv', ['-dns01', `127.0.0.1:${dnsPort}`, '-http01', '', '-https01', '', '-tlsalpn01', '', '-management', `127.0.0.1:${dnsMgmtPort}`, '-defaultIPv6', ''], { stdio: 'ignore' });
  const env = { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', ...(opts.alwaysValid ? { PEBBLE_VA_ALWAYS_VALID: '1' } : {}) };
  const output: string[] = [];
  const ca = spawn('pebble', ['-config', config, '-dnsserver', `127.0.0.1:${dnsPort}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  ca.stdout!.on('data', (c: Buffer) => output.push(c.toString()));
  ca.stderr!.on('data', (c: Buffer) => output.push(c.toString()));
  const tlsCa = readFileSync(cert, 'utf8');
  const directory = `https://127.0.0.1:${acmePort}/dir`;
  // Pebble ending early (a port taken between freePort and its bind, under load) fails at once, with what it said.
  let ended: string | undefined;
  ca.once('exit', (code, signal) => (ended = `pebble exited (${code ?? signal}): ${output.join('').slice(-500)}`));
  try {
    await waitFor(
      () => {
        if (ended) throw new Error(ended);
        return request(directory, tlsCa).then(() => true, () => false);
      },
      20_000,
      `pebble at ${directory}`,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; pebble said: ${output.join('').slice(-500) || 'nothing'}`);
    });
    await waitFor(
      () => request(`http://127.0.0.1:${dnsMgmtPort}/clear-a`, tlsCa, '{"host":"nothing.test."}').then(() => true, () => false),
      20_000,
      'pebble-challtestsrv management',
    );
  } catch (err) {
    await exited(ca);
    await exited(dns);
    throw err;
  }
  const root = () => request(`https://127.0.0.1:${mgmtPort}/roots/0`, tlsCa);
  return {
    directory,
    tlsCa: cert,
    tlsKey: key,
    root,
    writeRoot: async (to) => {
      const file = path.join(to, 'pebble-root.pem');
      writeFileSync(file, await root());
      return file;
    },
    pointAt: async (host, address) => {
      await request(`http://127.0.0.1:${dnsMgmtPort}/add-a`, tlsCa, JSON.stringify({ host: `${host}.`, addresses: [address] }));
    },
    stopCa: () => exited(ca),
    async stop() {
      await exited(ca);
      await exited(dns);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
