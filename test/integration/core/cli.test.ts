import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../helpers/cli.ts';
import { rawRequest } from '../../helpers/http.ts';
import { serveChild as serve } from '../../helpers/serve.ts';
import { waitFor, writeConfig } from '../../helpers/suite.ts';

let dir: string;
let configDir: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-cli-'));
  ({ configDir } = writeConfig(dir, { tenants: { 'a.test': { domains: ['a.test'] } }, files: { 'a.test/index.html': 'cli site' } }));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('makewaves serve', () => {
  it('prints a line per listener, reloads on SIGHUP, and exits 0 on SIGTERM after draining', async () => {
    const p = serve(configDir);
    const url = await waitFor(() => /http listening on (http:\/\/[\d.:]+)/.exec(p.out())?.[1], 15_000, 'the listening line');
    expect((await rawRequest(url, '/', { host: 'a.test' })).body.toString()).toBe('cli site');
    writeFileSync(path.join(configDir, 'tenants', 'a.test.yaml'), 'domains: [a.test, b.test]\n');
    p.child.kill('SIGHUP');
    await waitFor(async () => (await rawRequest(url, '/', { host: 'b.test' })).status === 200, 5_000, 'SIGHUP reload');
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(p.out()).toContain('"msg":"stopped"');
  });

  it('stops gracefully on a SIGTERM sent the moment HTTP listens, before the start is over (exit 0, "stopped")', async () => {
    const p = serve(configDir);
    // Sent from the output handler itself: the services after HTTP (and the launcher's readiness) are still starting.
    p.child.stdout!.on('data', () => {
      if (/http listening on/.test(p.out()) && p.child.exitCode === null && !p.child.killed) p.child.kill('SIGTERM');
    });
    expect(await p.exited).toBe(0);
    expect(p.out()).toContain('"msg":"stopped"');
  });

  it.runIf(process.getuid?.() === 0)('stops gracefully on a SIGINT to its whole process group (Ctrl-C) during the start, the root launcher included', async () => {
    const p = serve(configDir, { detached: true });
    let sent = false;
    p.child.stdout!.on('data', () => {
      if (sent || !/http listening on/.test(p.out())) return;
      sent = true;
      process.kill(-p.child.pid!, 'SIGINT');
    });
    expect(await p.exited).toBe(0);
    expect(p.out()).toContain('"msg":"stopped"');
    expect(p.out()).not.toContain('launcher gone');
  });

  it('carries out a SIGHUP sent the moment HTTP listens once the start is over (a reload, not the signal\'s default end)', async () => {
    writeFileSync(path.join(configDir, 'tenants', 'a.test.yaml'), 'domains: [a.test]\n');
    const p = serve(configDir);
    let sent = false;
    p.child.stdout!.on('data', () => {
      if (sent || !/http listening on/.test(p.out())) return;
      sent = true;
      writeFileSync(path.join(configDir, 'tenants', 'a.test.yaml'), 'domains: [a.test, c.test]\n');
      p.child.kill('SIGHUP');
    });
    const url = await waitFor(() => /http listening on (http:\/\/[\d.:]+)/.exec(p.out())?.[1], 15_000, 'the listening line');
    await waitFor(() => p.out().includes('SIGHUP: reloading configuration'), 15_000, 'the reload');
    expect((await rawRequest(url, '/', { host: 'c.test' })).body.toString()).toBe('cli site');
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
  });

  it('exits non-zero naming the address when the port is in use, leaving nothing running', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as AddressInfo).port;
    const busyDir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-busy-'));
    const { configDir: busy } = writeConfig(busyDir, { main: { http: { listen: [`127.0.0.1:${port}`] } }, tenants: {} });
    const p = serve(busy);
    expect(await p.exited).toBe(1);
    expect(p.err()).toContain(`http cannot listen: 127.0.0.1:${port} is already in use`);
    blocker.close();
    rmSync(busyDir, { recursive: true, force: true });
  });

  it('refuses to start on an invalid config, listing the problems', async () => {
    const badDir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-bad-'));
    const { configDir: bad } = writeConfig(badDir, { tenants: { 'a.test': { domains: ['a..test'] } } });
    const p = serve(bad);
    expect(await p.exited).toBe(1);
    expect(p.err()).toMatch(/a\.test\.yaml: domains\[0\]: "a\.\.test" is not a valid host name/);
    rmSync(badDir, { recursive: true, force: true });
  });
});

describe('makewaves check', () => {
  it('exits 0 for a good config and 1 with every problem for a bad one', async () => {
    const goodDir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-check-'));
    const { configDir: good } = writeConfig(goodDir, { tenants: { 'a.test': { domains: ['a.test', 'www.a.test'] }, 'b.test': { domains: ['b.test'] } } });
    const ok = await runCli('check', '--config', good);
    expect(ok).toMatchObject({ code: 0, err: '' });
    expect(ok.out).toMatch(/OK \(2 tenants, 3 domains\)/);
    rmSync(goodDir, { recursive: true, force: true });
    const badDir = mkdtempSync(path.join(os.tmpdir(), 'makewaves-check-'));
    const { configDir: bad } = writeConfig(badDir, { tenants: { 'a.test': { domains: ['a.test'], quota: 'huge' }, 'b.test': { domains: ['A.test'] } } });
    const r = await runCli('check', '--config', bad);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/a\.test\.yaml: quota: "huge" is not a size/);
    expect(r.err).toMatch(/b\.test\.yaml: domains\[0\]: "a\.test" is already claimed by tenant "a\.test"/);
    expect(r.err).toMatch(/2 problems found/);
    rmSync(badDir, { recursive: true, force: true });
  });
});
