import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import ssh2, { type SFTPWrapper } from 'ssh2';
import { describe, expect, it } from 'vitest';
import { newHostKey } from '../../../src/core/hostkeys.ts';
import { SSH2_INTERNALS, heldAnswers } from '../../../src/ftp/ssh2-adapter.ts';

// Each ssh2 internal the adapter reads, checked on the installed ssh2: an upgrade that changes one fails here.
describe('ssh2 internals used by src/ftp/ssh2-adapter.ts', () => {
  it('names each one it reads', () => {
    expect(SSH2_INTERNALS).toEqual({ sftp: ['_buffer'] });
  });

  it('a server-side SFTP channel holds in _buffer the answers its shut window keeps back', async () => {
    const hostKey = newHostKey('ed25519').private;
    let serverSftp: SFTPWrapper | undefined;
    const ready = new Promise<SFTPWrapper>((resolve) => {
      const server = new ssh2.Server({ hostKeys: [hostKey] }, (client) => {
        client.on('authentication', (ctx) => ctx.accept());
        client.on('ready', () =>
          client.on('session', (accept) =>
            accept().on('sftp', (acceptSftp) => {
              serverSftp = acceptSftp();
              resolve(serverSftp);
            }),
          ),
        );
      });
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo;
        const c = new ssh2.Client();
        c.on('ready', () => c.sftp(() => undefined));
        c.connect({ host: '127.0.0.1', port, username: 'u', password: 'p' });
        ready.then(async () => {
          c.end();
          await once(c, 'close');
          server.close();
        }, () => undefined /* the assertions below report it */);
      });
    });
    const sftp = await ready;
    const outgoing = (sftp as unknown as { outgoing: { window: unknown } }).outgoing;
    expect(typeof outgoing.window).toBe('number');
    expect(outgoing.window).toBeGreaterThan(0);
    // The window shut (as a client that stops reading leaves it): an answer is held in _buffer (an array of Buffers) and counted.
    outgoing.window = 0;
    expect(heldAnswers(sftp, 10)).toEqual({ answers: 0, bytes: 0 });
    sftp.status(1, 0);
    const held = heldAnswers(sftp, 10);
    expect(held.answers).toBe(1);
    expect(held.bytes).toBeGreaterThan(0);
    expect(heldAnswers(sftp, 0)).toEqual({ answers: 1, bytes: 0 });
    expect(serverSftp).toBe(sftp);
  });
});
