import path from 'node:path';
import { loadMainConfig } from '../../core/config/load.ts';
import { hostKeyFingerprints } from '../../core/hostkeys.ts';
import { findAdmin } from '../../core/runfile.ts';

/** Sums the samples of one metric in Prometheus text, optionally grouped by a label. */
export function sumMetric(text: string, name: string, by?: string): Map<string, number> {
  const out = new Map<string, number>();
  const re = new RegExp(`^${name}(?:\\{([^}]*)\\})? ([0-9.e+-]+)$`, 'gm');
  for (const m of text.matchAll(re)) {
    const labels = m[1] ?? '';
    const key = by ? (new RegExp(`${by}="([^"]*)"`).exec(labels)?.[1] ?? '') : '';
    out.set(key, (out.get(key) ?? 0) + Number(m[2]));
  }
  return out;
}

/**
 * `makewaves status`: a short summary of the running server, from its admin
 * listener, found by the server's run file or else admin.listen (core/runfile.ts).
 */
export async function status(configDir: string): Promise<number> {
  const main = loadMainConfig(configDir);
  const found = findAdmin(configDir, main);
  if (!found.ok) {
    process.stderr.write(`makewaves: ${found.message}\n`);
    return 1;
  }
  const base = found.base;
  let health: { status: string; problems?: Array<{ severity: string; message: string }>; services: string[]; tenants: number; uptimeSeconds: number; pid: number };
  let metrics: string;
  try {
    health = (await (await fetch(`${base}/healthz`)).json()) as typeof health;
    metrics = await (await fetch(`${base}/metrics`)).text();
  } catch (err) {
    process.stderr.write(`makewaves: the server does not answer at ${base} (${(err as Error).message}); is it running? (address from ${found.from})\n`);
    return 1;
  }
  const requests = sumMetric(metrics, 'makewaves_http_requests_total', 'class');
  const total = [...requests.values()].reduce((a, b) => a + b, 0);
  const rss = sumMetric(metrics, 'makewaves_process_resident_bytes').get('') ?? 0;
  const lines = [
    `makewaves ${health.status}: pid ${health.pid}, up ${health.uptimeSeconds} s, ${health.tenants} tenants`,
    `services: ${health.services.join(', ')}`,
    `memory: ${(rss / 1048576).toFixed(0)} MiB resident`,
    `http: ${total} requests (${[...requests].sort().map(([c, n]) => `${c} ${n}`).join(', ') || 'none yet'})`,
  ];
  const queue = sumMetric(metrics, 'makewaves_mail_queue_messages').get('');
  if (queue !== undefined) lines.push(`mail queue: ${queue} messages`);
  if (main.sftp) for (const f of hostKeyFingerprints(path.resolve(configDir, main.data))) lines.push(`sftp host key: ${f.type} ${f.fingerprint}`);
  for (const p of health.problems ?? []) lines.push(`${p.severity === 'down' ? 'DOWN' : 'problem'}: ${p.message}`);
  process.stdout.write(`${lines.join('\n')}\n`);
  return health.status === 'ok' ? 0 : 1;
}
