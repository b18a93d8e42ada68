/**
 * SFTP for the tenants' FTP accounts: SSH-2 (the ssh2 library speaks it)
 * with the sftp subsystem only. No shell, exec, port or agent forwarding,
 * X11 or other subsystems: each is refused and logged. Logins go through
 * FTP's own (login.ts: same accounts, lockout and suspension), files
 * through FTP's jail (sftp-files.ts).
 */
import { createServer, type Server, type Socket } from 'node:net';
import ssh2, { type AuthContext, type Connection, type ParsedKey } from 'ssh2';
import type { MainConfig } from '../core/config/schema.ts';
import type { FtpAccount } from '../core/registry.ts';
import { DUMMY_HASH, verifyPassword } from '../lib/password.ts';
import { clientFields, clientKey, PeerCounter } from '../lib/peers.ts';
import type { FtpLoginLocks } from '../state/index.ts';
import type { FtpContext } from './context.ts';
import { FtpError, JailFileSystem } from './jailfs.ts';
import { authenticate, type LoggedIn } from './login.ts';
import { serveSftp } from './sftp-files.ts';
import type { SftpBudget } from './sftp-session.ts';
import type { Logger } from '../core/log.ts';
import type { Registry } from '../core/registry.ts';

export type SftpConfig = NonNullable<MainConfig['sftp']>;

/** The authentication methods offered. */
const METHODS: AuthContext['method'][] = ['publickey', 'password'];

/** The account's keys that match the one offered, parsed once per account list. */
const parsedKeys = new WeakMap<readonly string[], ParsedKey[]>();
function keysOf(account: FtpAccount): ParsedKey[] {
  let keys = parsedKeys.get(account.keys);
  if (!keys) {
    keys = account.keys.map((line) => ssh2.utils.parseKey(line)).filter((k): k is ParsedKey => !(k instanceof Error));
    parsedKeys.set(account.keys, keys);
  }
  return keys;
}

function matchingKey(account: FtpAccount | undefined, algo: string, data: Buffer): ParsedKey | undefined {
  if (!account) return undefined;
  return keysOf(account).find((k) => k.type === algo && k.getPublicSSH().equals(data));
}

export interface SftpServer {
  readonly server: Server;
  /** Ends every session (their unfinished uploads are dropped); resolves when their requests have finished, or after `graceMs`. */
  closeAll(graceMs: number): Promise<void>;
  /** Ends the sessions a new configuration no longer allows. */
  reload(next: Registry): void;
}

/** Failed login attempts (a key offered and not taken counts, as in OpenSSH) before a connection is closed: OpenSSH's MaxAuthTries. */
const MAX_AUTH_TRIES = 6;

/** Session channels open at once on one connection (each may hold files open). */
const MAX_CHANNELS = 4;

/**
 * Key exchanges offered: those that cost the server well under a
 * millisecond (curve25519, the NIST curves) and 2048-bit Diffie-Hellman for
 * old clients. ssh2's default list adds 3072- to 8192-bit groups and group
 * exchange (up to 8192 bits), ~15 ms of modular arithmetic on the one event
 * loop every service shares, each time a client asks.
 */
const KEX = ['curve25519-sha256', 'curve25519-sha256@libssh.org', 'ecdh-sha2-nistp256', 'ecdh-sha2-nistp384', 'ecdh-sha2-nistp521', 'diffie-hellman-group14-sha256'];

/**
 * Key exchanges again after the first (a rekey): none before a login (no
 * client needs one then), after it a burst of {@link REKEY_BURST}, then one
 * per {@link REKEY_EVERY_S} seconds (OpenSSH's client rekeys every 1 to 4
 * GiB sent; at 100 MiB/s that is one each 10 s or more).
 */
const REKEY_BURST = 8;
const REKEY_EVERY_S = 10;

/**
 * OpenSSH's PerSourcePenalties (noauth): every connection that closes
 * without a login costs its client {@link NOAUTH_PENALTY_MS} (each one
 * cost us a key exchange and a host key signature on the shared event
 * loop); a client owing more than {@link PENALTY_REFUSE_MS} is refused
 * until it owes less. A client is its key (lib/peers.ts: an IPv6 client's
 * /64, as OpenSSH's PerSourceNetBlockSize 32:64 would; its default is 32:128). Owed time runs off in
 * real time, up to {@link PENALTY_MAX_MS}; at most {@link PENALTY_SOURCES}
 * clients are tracked (past that, new ones are not).
 */
const NOAUTH_PENALTY_MS = 1_000;
const PENALTY_REFUSE_MS = 15_000;
const PENALTY_MAX_MS = 600_000;
const PENALTY_SOURCES = 65_536;

class SourcePenalties {
  /** Client key (an IPv6 client by its /64) → when what it owes runs out. */
  private readonly until = new Map<string, number>();

  /** Milliseconds `ip` still owes when it is to be refused, else undefined. */
  refused(ip: string, now = Date.now()): number | undefined {
    const owed = (this.until.get(clientKey(ip)) ?? 0) - now;
    return owed > PENALTY_REFUSE_MS ? owed : undefined;
  }

  /** A connection from `ip` closed without a login. */
  noLogin(ip: string, now = Date.now()): void {
    const key = clientKey(ip);
    if (!this.until.has(key) && this.until.size >= PENALTY_SOURCES) {
      for (const [k, t] of this.until) if (t <= now) this.until.delete(k);
      if (this.until.size >= PENALTY_SOURCES) return;
    }
    this.until.set(key, Math.min(Math.max(now, this.until.get(key) ?? 0) + NOAUTH_PENALTY_MS, now + PENALTY_MAX_MS));
  }
}

export function createSftpServer(ctx: FtpContext, logins: FtpLoginLocks, cfg: SftpConfig, hostKeys: Buffer[]): SftpServer {
  const log = ctx.log.child({ proto: 'sftp' });
  /** Open SSH connections per client key (an IPv6 client by its /64). */
  const perClient = new PeerCounter();
  let openSockets = 0;
  const perAccount = new Map<string, number>();
  /** Logged-in connections: what they logged in with, so a reload can end those it no longer allows. */
  /** Channels being served, each until its requests have finished after its close. */
  const serving = new Set<Promise<void>>();
  const clients = new Map<Connection, { login?: string; method?: string; key?: { algo: string; data: Buffer }; hash?: string; log: () => Logger }>();
  /** Sockets by remote address and port (how ssh2 names a connection), and those that logged in. */
  const sockets = new Map<string, Socket>();
  const loggedInSockets = new WeakSet<Socket>();
  const ssh = new ssh2.Server({ hostKeys, ident: 'makewaves', algorithms: { kex: KEX as ssh2.KexAlgorithm[] } }, (client, info) => session(client, info.ip, sockets.get(`${info.ip}|${info.port}`)));

  function session(client: Connection, remote: string, sock: Socket | undefined): void {
    let slog = log.child({ remote });
    const info: { login?: string; method?: string; key?: { algo: string; data: Buffer }; hash?: string; log: () => Logger } = { log: () => slog };
    clients.set(client, info);
    let loggedIn: LoggedIn | undefined;
    let idle: NodeJS.Timeout | undefined;
    let channels = 0;
    const budget: SftpBudget = {
      handles: 0,
      maxHandles: cfg.maxHandles,
      closed: false,
      unsent: () => sock?.writableLength ?? 0,
      overrun(why) {
        if (budget.closed) return;
        budget.closed = true;
        slog.warn({ why }, 'sftp session closed');
        // Dropped, not ended: a client that does not read would never take a goodbye, and what is held for it is freed now.
        if (sock) sock.destroy();
        else client.end();
      },
    };
    const touched = () => {
      if (idle) clearTimeout(idle);
      idle = setTimeout(() => {
        slog.info({ why: 'idle' }, 'sftp session closed');
        client.end();
      }, cfg.idleTimeout * 1000);
      idle.unref();
    };
    const refuse = (what: string, reject?: () => void) => {
      slog.info({ why: what }, 'sftp request refused');
      reject?.();
    };

    let failures = 0;
    client.on('authentication', (auth) => {
      // OpenSSH's MaxAuthTries: past it the connection goes, so one connection cannot try (and log) without end.
      if (failures >= MAX_AUTH_TRIES) {
        if (!budget.closed) {
          budget.closed = true;
          slog.warn({ why: `more than ${MAX_AUTH_TRIES} failed login attempts on one connection` }, 'sftp connection closed');
          client.end();
        }
        return;
      }
      const reject = auth.reject.bind(auth);
      auth.reject = (...a: Parameters<typeof auth.reject>) => {
        // "none" is how a client asks which methods there are: not an attempt.
        if (auth.method !== 'none') failures++;
        return reject(...a);
      };
      const who = { remote, log: slog, protocol: 'sftp' as const };
      const done = (ok: LoggedIn) => {
        const n = perAccount.get(ok.account.login) ?? 0;
        if (n >= cfg.maxSessionsPerAccount) {
          slog.info({ user: ok.account.login, why: 'sessions per account' }, 'sftp login refused');
          return auth.reject([], false);
        }
        perAccount.set(ok.account.login, n + 1);
        loggedIn = ok;
        if (sock) loggedInSockets.add(sock);
        touched();
        Object.assign(info, { login: ok.account.login, method: auth.method, key: auth.method === 'publickey' ? { algo: auth.key.algo, data: auth.key.data } : undefined, hash: ok.account.hash });
        slog = slog.child({ tenant: ok.account.tenant.id, user: ok.account.login });
        slog.info({ method: auth.method }, 'sftp login');
        auth.accept();
      };
      const refused = (err: unknown) => {
        if (!(err instanceof FtpError)) slog.error({ err: (err as Error).message }, 'sftp login failed on our side');
        auth.reject(METHODS);
      };
      if (auth.method === 'password') {
        const password = auth.password;
        authenticate(ctx, logins, who, auth.username, (account) => verifyPassword(password, account?.hash ?? DUMMY_HASH)).then(done, refused);
      } else if (auth.method === 'publickey') {
        const { algo, data } = auth.key;
        if (!auth.signature) {
          // A query ("would this key do?"): answered without counting; only a signed attempt counts.
          return matchingKey(ctx.registry().ftpAccount(auth.username.toLowerCase()), algo, data) ? auth.accept() : auth.reject(METHODS);
        }
        const { blob, signature, hashAlgo } = auth;
        authenticate(ctx, logins, who, auth.username, async (account) => matchingKey(account, algo, data)?.verify(blob!, signature, hashAlgo) === true).then(done, refused);
      } else auth.reject(METHODS);
    });

    client.on('ready', () => {
      client.on('session', (accept, reject) => {
        // Only channels accepted count: a refused one never closes, so it must take no place.
        if (channels >= MAX_CHANNELS) return refuse(`more than ${MAX_CHANNELS} channels on one connection`, reject);
        channels++;
        const s = accept();
        s.on('close', () => channels--);
        s.on('sftp', (acceptSftp) => {
          if (!loggedIn) return;
          const { account, root, usage } = loggedIn;
          const fs = new JailFileSystem(root, usage, slog);
          const done = serveSftp(ctx, acceptSftp(), fs, { tenant: account.tenant.id, login: account.login, remote, log: slog }, budget, touched).finally(() => serving.delete(done));
          serving.add(done);
        });
        s.on('shell', (_a, reject) => refuse('shell', reject));
        s.on('exec', (_a, reject, info) => refuse(`exec ${info.command.slice(0, 60)}`, reject));
        s.on('subsystem', (_a, reject, info) => refuse(`subsystem ${info.name.slice(0, 60)}`, reject));
        s.on('pty', (_a, reject) => refuse('pty', reject));
        s.on('x11', (_a, reject) => refuse('x11', reject));
        s.on('auth-agent', (_a, reject) => refuse('agent forwarding', reject));
        s.on('env', (_a, reject) => reject?.());
      });
      client.on('tcpip', (_a, reject) => refuse('port forwarding', reject));
      client.on('openssh.streamlocal', (_a, reject) => refuse('socket forwarding', reject));
      client.on('request', (_a, reject, name) => refuse(`global request ${name}`, reject));
    });

    // Each exchange costs a key agreement and a host key signature on the shared event loop.
    let rekeys = REKEY_BURST;
    let lastRekey = Date.now();
    client.on('rekey', () => {
      if (budget.closed) return;
      if (!loggedIn) {
        budget.closed = true;
        slog.warn({ why: 'key exchange again before login' }, 'sftp connection closed');
        return void (sock ? sock.destroy() : client.end());
      }
      const now = Date.now();
      rekeys = Math.min(REKEY_BURST, rekeys + (now - lastRekey) / 1000 / REKEY_EVERY_S) - 1;
      lastRekey = now;
      if (rekeys < 0) budget.overrun(`more than ${REKEY_BURST} key exchanges, then one per ${REKEY_EVERY_S} s`);
    });

    client.on('error', (err) => slog.info({ err: err.message }, 'sftp connection error'));
    client.on('close', () => {
      slog.debug('sftp connection closed');
      if (idle) clearTimeout(idle);
      clients.delete(client);
      if (loggedIn) {
        const login = loggedIn.account.login;
        const n = (perAccount.get(login) ?? 1) - 1;
        if (n > 0) perAccount.set(login, n);
        else perAccount.delete(login);
      }
    });
  }

  // Our own listener: the per-address cap applies before any SSH work is done.
  const penalties = new SourcePenalties();
  const server = createServer((sock: Socket) => {
    const ip = sock.remoteAddress ?? '-';
    const who = clientFields(ip);
    const owed = penalties.refused(ip);
    if (owed !== undefined) {
      log.info({ ...who, seconds: Math.ceil(owed / 1000), why: 'too many connections without a login' }, 'sftp connection refused');
      // Refused already (logged above): a reset meanwhile changes nothing.
      sock.on('error', () => undefined);
      sock.destroy();
      return;
    }
    if (openSockets >= cfg.maxConnections) {
      log.warn({ ...who, open: openSockets, why: 'connection limit' }, 'sftp connection refused');
      // Refused already (logged above): a reset meanwhile changes nothing.
      sock.on('error', () => undefined);
      sock.destroy();
      return;
    }
    const admitted = perClient.acquire(ip, cfg.maxConnectionsPerIp);
    if (!admitted.ok) {
      log.info({ ...who, open: admitted.open, why: 'per-IP connection limit' }, 'sftp connection refused');
      // Refused already (logged above): a reset meanwhile changes nothing.
      sock.on('error', () => undefined);
      sock.destroy();
      return;
    }
    sock.once('close', () => {
      log.debug(who, 'sftp socket closed');
      if (!loggedInSockets.has(sock)) penalties.noLogin(ip);
      admitted.release();
    });
    // Every socket counts, logged in or not: a flood of bare connections is what the cap is for.
    openSockets++;
    const key = `${ip}|${sock.remotePort}`;
    sockets.set(key, sock);
    // OpenSSH's LoginGraceTime: a connection that has not logged in by then is closed, whatever it sends.
    const grace = setTimeout(() => {
      if (loggedInSockets.has(sock)) return;
      log.info({ ...who, why: 'no login within the grace time' }, 'sftp connection closed');
      sock.destroy();
    }, cfg.loginGrace * 1000);
    grace.unref();
    sock.once('close', () => {
      openSockets--;
      clearTimeout(grace);
      sockets.delete(key);
    });
    ssh.injectSocket(sock);
  });

  return {
    server,
    async closeAll(graceMs) {
      for (const c of clients.keys()) c.end();
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<void>((r) => (timer = setTimeout(r, graceMs)));
      await Promise.race([Promise.allSettled([...serving]), late]);
      clearTimeout(timer);
    },
    reload(next) {
      // What ended a login for FTP ends it here: a suspension, the account or the key gone, a new password.
      for (const [c, s] of clients) {
        if (!s.login) continue;
        const account = next.ftpAccount(s.login);
        const why = !account
          ? 'account removed'
          : account.tenant.suspended
            ? 'tenant suspended'
            : s.method === 'publickey' && !matchingKey(account, s.key!.algo, s.key!.data)
              ? 'key removed'
              : s.method === 'password' && account.hash !== s.hash
                ? 'password changed'
                : undefined;
        if (!why) continue;
        s.log().info({ why }, 'sftp session closed');
        c.end();
      }
    },
  };
}
