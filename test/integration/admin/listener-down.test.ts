import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../helpers/cli.ts';
import { startTestSuite, type TestSuite } from '../../helpers/suite.ts';

// A listener that stops serving under a running suite makes /healthz 503
// `down`, naming the service and address, and `makewaves status` says DOWN.

let t: TestSuite;
let admin: string;

beforeAll(async () => {
  t = await startTestSuite({
    main: { admin: { listen: '127.0.0.1:0' }, smtp: { listen: ['127.0.0.1:0'] } },
    tenants: { 'a.test': { domains: ['a.test'] } },
  });
  admin = t.suite.urls.admin![0]!;
});
afterAll(() => t?.stop());

/** The suite's own listening server on `port`, found among this process's open handles. */
function serverOn(port: number): net.Server {
  const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
  const found = handles.find((h): h is net.Server => h instanceof net.Server && (h.address() as net.AddressInfo | null)?.port === port);
  if (!found) throw new Error(`no server listens on ${port} in this process`);
  return found;
}

describe('health: a listener that is not serving', () => {
  it('answers ok while every listener accepts connections', async () => {
    const res = await fetch(`${admin}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ok' });
  });

  it('answers 503 down naming the service and address once the SMTP listener is closed; status says DOWN and exits 1', async () => {
    const smtp = new URL(t.suite.urls.smtp![0]!);
    const server = serverOn(Number(smtp.port));
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const res = await fetch(`${admin}/healthz`);
    expect(res.status).toBe(503);
    const body = (await res.json()) as { status: string; problems: Array<{ key: string; severity: string; message: string }> };
    expect(body.status).toBe('down');
    expect(body.problems).toContainEqual({
      key: `listener:smtp:127.0.0.1:${smtp.port}`,
      severity: 'down',
      message: `smtp is not accepting connections on 127.0.0.1:${smtp.port} (ECONNREFUSED)`,
    });
    const s = await runCli('status', '--config', t.configDir);
    expect(s.code).toBe(1);
    expect(s.out).toMatch(/^makewaves down:/);
    expect(s.out).toContain(`DOWN: smtp is not accepting connections on 127.0.0.1:${smtp.port} (ECONNREFUSED)`);
  });
});
