// HTTP benchmark: the suite (1,000 tenants and 1 tenant) against a bare
// node:http server and nginx (worker_processes 1) serving the same files,
// then a proxied tenant path against nginx as a reverse proxy, then HTTP/2
// over TLS with h2load (nghttp2-client) against nginx's h2, then start-up
// time and idle memory with 10,000 tenants. Every figure in one run.
//
//   node --import tsx scripts/bench/http.ts [--seconds 5]
import { type ChildProcess } from 'node:child_process';
import { linkSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, has, load, loadH2, printTable, ROOT, run, startProcess, stopProcess, treeRssMiB, waitHttp, type Row } from './lib.ts';

const seconds = Number(process.argv[process.argv.indexOf('--seconds') + 1]) || 5;
const work = mkdtempSync(path.join(os.tmpdir(), 'makewaves-bench-'));
const filesDir = path.join(work, 'files');
mkdirSync(filesDir);
const page = (size: number) => `<!doctype html><title>bench</title><p>${'x'.repeat(size - 40)}</p>\n`.slice(0, size);
writeFileSync(path.join(filesDir, '1k.html'), page(1024));
writeFileSync(path.join(filesDir, '100k.html'), page(100 * 1024));

function suiteConfig(name: string, tenants: number, port: number, proxyTo?: string, tlsPort?: number): string {
  const dir = path.join(work, name);
  mkdirSync(path.join(dir, 'config', 'tenants'), { recursive: true });
  const tls = tlsPort ? `  tls: { listen: ["127.0.0.1:${tlsPort}"], certs: ../certs, selfSigned: true }\n` : '';
  writeFileSync(path.join(dir, 'config', 'makewaves.yaml'), `hostname: mx.bench.test\ndata: ../data\nsites: ../sites\nhttp:\n  listen: ["127.0.0.1:${port}"]\n${tls}`);
  for (let i = 0; i < tenants; i++) {
    const id = `t${i}.test`;
    const proxy = proxyTo && i === Math.floor(tenants / 2) ? `proxy:\n  - { path: /app/, to: "${proxyTo}" }\n` : '';
    writeFileSync(path.join(dir, 'config', 'tenants', `${id}.yaml`), `domains: [${id}, www.${id}]\nquota: 10MiB\n${proxy}`);
    const site = path.join(dir, 'sites', id);
    mkdirSync(site, { recursive: true });
    for (const f of ['1k.html', '100k.html']) linkSync(path.join(filesDir, f), path.join(site, f));
  }
  return path.join(dir, 'config');
}

/** The suite as `npm start` runs it: the bundle built by scripts/build.mjs. */
function startSuite(config: string): ChildProcess {
  return startProcess(process.execPath, [path.join(ROOT, 'dist/makewaves.mjs'), 'serve', '--config', config], { MAKEWAVES_LOG_LEVEL: 'warn' });
}

function nginxConf(port: number, body: string): string {
  const dir = mkdtempSync(path.join(work, 'nginx-'));
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `worker_processes 1;\ndaemon off;\nuser root;\npid ${dir}/nginx.pid;\nerror_log stderr error;\nevents { worker_connections 4096; }\n` +
      `http {\n  access_log ${dir}/access.log combined buffer=64k flush=1s;\n  sendfile on; tcp_nopush on; keepalive_requests 1000000;\n` +
      `  client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;\n` +
      `  types { text/html html; }\n  server {\n    listen 127.0.0.1:${port};\n${body}\n  }\n}\n`,
  );
  return conf;
}

async function measure(rows: Row[], caseName: string, server: string, child: ChildProcess | undefined, url: string, host: string): Promise<Row> {
  await load(url, host, 1); // warm-up (JIT, caches, keep-alive pools)
  const r = await load(url, host, seconds);
  const row: Row = { case: caseName, server, rps: r.rps, p50: r.p50, p99: r.p99, rss: treeRssMiB(child?.pid) };
  if (r.errors > 0) row.server += ` (${r.errors} errors)`;
  rows.push(row);
  process.stderr.write(`  ${caseName} / ${server}: ${r.rps.toFixed(0)} req/s\n`);
  return row;
}

const ratio = (a: Row | undefined, b: Row | undefined) => (a && b ? `${(a.rps / b.rps).toFixed(2)}×` : '');

async function main(): Promise<void> {
  const nginx = has('nginx');
  process.stderr.write(`HTTP bench: ${seconds} s per case, load by ${has('wrk') ? 'wrk -t2 -c64' : 'autocannon -c64'}${nginx ? ', nginx present' : ', no nginx (apt-get install nginx-light)'}\n`);
  await run(process.execPath, [path.join(ROOT, 'scripts/build.mjs')]);
  const rows: Row[] = [];
  const children: ChildProcess[] = [];
  try {
    // --- static files ---------------------------------------------------
    const ref: Record<string, Row | undefined> = {};
    if (nginx) {
      const port = await freePort();
      const child = startProcess('nginx', ['-c', nginxConf(port, `    root ${filesDir};`)]);
      children.push(child);
      await waitHttp(`http://127.0.0.1:${port}/1k.html`, 'x');
      for (const f of ['1k', '100k']) ref[`nginx${f}`] = await measure(rows, `static ${f}`, 'nginx, 1 worker', child, `http://127.0.0.1:${port}/${f}.html`, 'x');
      await stopProcess(child);
    }
    {
      const port = await freePort();
      const child = startProcess(process.execPath, ['--import', 'tsx', path.join(ROOT, 'scripts/bench/bare-http.ts'), filesDir, String(port)]);
      children.push(child);
      await waitHttp(`http://127.0.0.1:${port}/1k.html`, 'x');
      for (const f of ['1k', '100k']) ref[`bare${f}`] = await measure(rows, `static ${f}`, 'bare node:http, in memory', child, `http://127.0.0.1:${port}/${f}.html`, 'x');
      await stopProcess(child);
    }
    const suiteRows: Record<string, Row> = {};
    for (const [tenants, label] of [
      [1000, 'makewaves, 1,000 tenants'],
      [1, 'makewaves, 1 tenant'],
    ] as const) {
      const port = await freePort();
      const child = startSuite(suiteConfig(`suite${tenants}`, tenants, port));
      children.push(child);
      const host = `t${Math.floor(tenants / 2)}.test`;
      await waitHttp(`http://127.0.0.1:${port}/1k.html`, host);
      for (const f of tenants === 1 ? ['1k'] : ['1k', '100k']) {
        suiteRows[`${tenants}-${f}`] = await measure(rows, `static ${f}`, label, child, `http://127.0.0.1:${port}/${f}.html`, host);
      }
      await stopProcess(child);
    }
    for (const r of rows) {
      const f = r.case.endsWith('100k') ? '100k' : '1k';
      r.ratio = ref[`nginx${f}`] ? `${ratio(r, ref[`nginx${f}`])} nginx` : `${ratio(r, ref[`bare${f}`])} bare`;
    }
    const routing = suiteRows['1000-1k'] && suiteRows['1-1k'] ? 1 - suiteRows['1000-1k'].rps / suiteRows['1-1k'].rps : NaN;

    // --- reverse proxy ----------------------------------------------------
    const proxyRows: Row[] = [];
    const backendPort = await freePort();
    const backend = nginx
      ? startProcess('nginx', ['-c', nginxConf(backendPort, `    root ${filesDir};`)])
      : startProcess(process.execPath, ['--import', 'tsx', path.join(ROOT, 'scripts/bench/bare-http.ts'), filesDir, String(backendPort)]);
    children.push(backend);
    await waitHttp(`http://127.0.0.1:${backendPort}/1k.html`, 'x');
    const backendName = nginx ? 'nginx' : 'node:http';
    await measure(proxyRows, 'proxy 1k', `${backendName} backend, direct`, backend, `http://127.0.0.1:${backendPort}/1k.html`, 'x');
    let nginxProxy: Row | undefined;
    if (nginx) {
      const port = await freePort();
      const child = startProcess('nginx', [
        '-c',
        nginxConf(
          port,
          `    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }\n  }\n  upstream backend { server 127.0.0.1:${backendPort}; keepalive 64;`,
        ),
      ]);
      children.push(child);
      await waitHttp(`http://127.0.0.1:${port}/1k.html`, 'x');
      nginxProxy = await measure(proxyRows, 'proxy 1k', 'nginx as proxy (keep-alive)', child, `http://127.0.0.1:${port}/1k.html`, 'x');
      await stopProcess(child);
    }
    {
      const port = await freePort();
      const child = startSuite(suiteConfig('suiteproxy', 1000, port, `http://127.0.0.1:${backendPort}/`));
      children.push(child);
      await waitHttp(`http://127.0.0.1:${port}/app/1k.html`, 't500.test');
      const row = await measure(proxyRows, 'proxy 1k', 'makewaves proxy, 1,000 tenants', child, `http://127.0.0.1:${port}/app/1k.html`, 't500.test');
      row.ratio = nginxProxy ? `${ratio(row, nginxProxy)} nginx proxy` : '';
      await stopProcess(child);
    }
    await stopProcess(backend);

    // --- HTTP/2 over TLS ---------------------------------------------------
    const h2Rows: Row[] = [];
    if (has('h2load')) {
      let nginxH2: Row | undefined;
      if (nginx && has('openssl')) {
        const port = await freePort();
        const plainPort = await freePort();
        const certDir = mkdtempSync(path.join(work, 'cert-'));
        await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=t0.test', '-keyout', `${certDir}/k.pem`, '-out', `${certDir}/c.pem`]);
        // One server on a plain port (to see it is up) and a TLS one with h2.
        const tlsListen = `listen 127.0.0.1:${port} ssl http2;\n    ssl_certificate ${certDir}/c.pem;\n    ssl_certificate_key ${certDir}/k.pem;`;
        const conf = nginxConf(plainPort, `    root ${filesDir};\n    ${tlsListen}`);
        const child = startProcess('nginx', ['-c', conf]);
        children.push(child);
        await waitHttp(`http://127.0.0.1:${plainPort}/1k.html`, 'x');
        const r = await loadH2(`https://127.0.0.1:${port}/1k.html`, 't0.test', seconds);
        nginxH2 = { case: 'h2 static 1k', server: 'nginx, 1 worker, h2', rps: r.rps, p50: r.p50, p99: r.p99, rss: treeRssMiB(child.pid) };
        h2Rows.push(nginxH2);
        await stopProcess(child);
      }
      const port = await freePort();
      const tlsPort = await freePort();
      const child = startSuite(suiteConfig('suiteh2', 1, port, undefined, tlsPort));
      children.push(child);
      await waitHttp(`http://127.0.0.1:${port}/1k.html`, 't0.test');
      const r = await loadH2(`https://127.0.0.1:${tlsPort}/1k.html`, 't0.test', seconds);
      const row: Row = { case: 'h2 static 1k', server: 'makewaves, 1 tenant, h2', rps: r.rps, p50: r.p50, p99: r.p99, rss: treeRssMiB(child.pid) };
      if (r.errors > 0) row.server += ` (${r.errors} errors)`;
      row.ratio = nginxH2 ? `${ratio(row, nginxH2)} nginx h2` : '';
      h2Rows.push(row);
      await stopProcess(child);
    } else {
      process.stderr.write('  no h2load: HTTP/2 cases skipped (apt-get install nghttp2-client)\n');
    }

    // --- 10,000 tenants: start-up and idle memory --------------------------
    const port = await freePort();
    const config = suiteConfig('suite10k', 10_000, port);
    const t0 = performance.now();
    const child = startSuite(config);
    children.push(child);
    await waitHttp(`http://127.0.0.1:${port}/1k.html`, 't9999.test', 60_000);
    const startMs = performance.now() - t0;
    await new Promise((r) => setTimeout(r, 2_000));
    const idle = treeRssMiB(child.pid);
    await stopProcess(child);

    printTable('Static files', rows);
    printTable('Reverse proxy', proxyRows);
    if (h2Rows.length > 0) printTable('HTTP/2 over TLS (h2load -c16 -m10; p50 is the mean, p99 the max)', h2Rows);
    console.log(`\nRouting cost, 1,000 tenants against 1 (1 KB file): ${(routing * 100).toFixed(1)}% fewer req/s (target ≤ 5%)`);
    console.log(`10,000 tenants: first answer ${(startMs / 1000).toFixed(2)} s after spawn (target ≤ 2 s), idle RSS ${idle.toFixed(0)} MiB (target ≤ 150 MB)`);
  } finally {
    await Promise.all(children.map((c) => stopProcess(c)));
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
