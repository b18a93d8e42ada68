// The program inside every handler process (plain JavaScript: it runs in
// the sandbox without the TypeScript loader, reading nothing but itself,
// the handler files and the tenant's root).
//
// It speaks length-prefixed frames with the suite over stdin/stdout (see
// src/cgi/protocol.ts for the layout). It is trusted code sharing a process
// with untrusted code: the suite believes nothing it says beyond what the
// suite itself re-checks, so a handler that tampers with it only breaks
// its own answer.
import fs from 'node:fs';
import Module, { syncBuiltinESMExports } from 'node:module';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';

// Outside what it was granted, a handler learns nothing, not even whether a
// path exists. Node's permission model checks most of fs, but its
// JavaScript realpath and the CommonJS resolver stat paths unchecked
// (ENOENT vs a result): those ask the permission model first, and answer
// for a path outside the grants as they would for one that is not there.
// The handler never holds the originals.
{
  const readable = (p) => {
    try {
      const s = p instanceof URL ? fileURLToPath(p) : Buffer.isBuffer(p) ? p.toString('utf8') : String(p);
      return process.permission.has('fs.read', path.resolve(s));
    } catch {
      return false; // not a path at all: nothing to look up
    }
  };
  const denied = (p) =>
    Object.assign(new Error('Access to this API has been restricted'), { code: 'ERR_ACCESS_DENIED', permission: 'FileSystemRead', resource: String(p) });
  const realpathSync = fs.realpathSync;
  const realpath = fs.realpath;
  const guardedSync = function (p, options) {
    if (!readable(p)) throw denied(p);
    return realpathSync(p, options);
  };
  guardedSync.native = realpathSync.native;
  const guarded = function (p, options, cb) {
    if (!readable(p)) {
      const done = typeof options === 'function' ? options : cb;
      process.nextTick(() => done(denied(p)));
      return;
    }
    return realpath(p, options, cb);
  };
  guarded.native = realpath.native;
  fs.realpathSync = guardedSync;
  fs.realpath = guarded;
  syncBuiltinESMExports();

  const findPath = Module._findPath;
  Module._findPath = function (request, paths, isMain) {
    const dirs = paths && paths.length > 0 ? paths : [''];
    const kept = dirs.filter((dir) => readable(path.resolve(dir, request)));
    return kept.length === 0 ? false : findPath.call(this, request, kept, isMain);
  };
  const stat = Module._stat;
  if (typeof stat === 'function') Module._stat = (filename) => (readable(filename) ? stat(filename) : -2);
}

// The box (bwrap) sets PWD, the only variable it adds: the process starts with an empty environment.
delete process.env.PWD;

const T_REQUEST = 0x52; // R
const T_ANSWER = 0x41; // A (answer to a mail request)
const T_OUTPUT = 0x4f; // O
const T_MAIL = 0x4d; // M
const T_END = 0x45; // E

const out = process.stdout;
const write = out.write.bind(out);

/** @param {number} type @param {number} run @param {Buffer} payload */
function send(type, run, payload) {
  const head = Buffer.allocUnsafe(9);
  head.writeUInt32BE(payload.length + 4, 0);
  head[4] = type;
  head.writeUInt32BE(run, 5);
  write(Buffer.concat([head, payload]));
}

const handlers = new Map();
async function load(file) {
  let fn = handlers.get(file);
  if (fn) return fn;
  const mod = await import(pathToFileURL(file).href);
  fn = typeof mod.default === 'function' ? mod.default : typeof mod.default?.default === 'function' ? mod.default.default : undefined;
  if (!fn) throw new Error('the handler file does not export a function (export default async function (cgi) {...})');
  handlers.set(file, fn);
  return fn;
}

// The box is a session of its own, which the kernel schedules as one group
// (autogroup), weighed as the server's whole session whatever the nice value
// of the process: the group is set to nice 10 as well (no privilege needed
// from 0 to 19, so the handler could set it back: a default, not a limit). The kernel takes one such change per 100 ms in the whole
// system (EAGAIN): tried again at each request until taken or refused.
let autogroup = -1;
try {
  autogroup = fs.openSync('/proc/self/autogroup', 'w');
} catch {
  // no autogroups in this kernel (or no /proc): the process's nice 10 counts as it is
}
function niceGroup() {
  if (autogroup < 0) return;
  try {
    fs.writeSync(autogroup, '10');
  } catch (err) {
    if (err.code === 'EAGAIN') return;
  }
  try {
    fs.closeSync(autogroup);
  } catch {
    // closed already (the handler may have): nothing left to do
  }
  autogroup = -1;
}
niceGroup();

let current = 0;
let mailSeq = 0;
const pendingMail = new Map();

async function run(runId, meta, body) {
  niceGroup();
  current = runId;
  let ended = false;
  const stdout = new Writable({
    write(chunk, _enc, cb) {
      if (current === runId && !ended) send(T_OUTPUT, runId, Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
      cb();
    },
  });
  const cgi = Object.freeze({
    env: Object.freeze({ ...meta.env }),
    body,
    stdin: Readable.from(body.length > 0 ? [body] : []),
    stdout,
    site: Object.freeze({ ...meta.site, domains: Object.freeze([...meta.site.domains]) }),
    mail(message) {
      return new Promise((resolve) => {
        const id = ++mailSeq;
        pendingMail.set(id, resolve);
        send(T_MAIL, runId, Buffer.from(JSON.stringify({ id, message })));
      });
    },
  });
  let error;
  try {
    const fn = await load(meta.handler);
    await fn(cgi);
    if (!stdout.writableEnded) stdout.end();
    await new Promise((resolve) => (stdout.writableFinished ? resolve() : stdout.once('finish', resolve)));
  } catch (err) {
    error = err instanceof Error ? (err.stack ?? err.message) : String(err);
  }
  ended = true;
  send(T_END, runId, Buffer.from(JSON.stringify(error === undefined ? {} : { error: error.slice(0, 2000) })));
}

let buf = Buffer.alloc(0);
process.stdin.on('data', (chunk) => {
  buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
  while (buf.length >= 9) {
    const len = buf.readUInt32BE(0);
    if (buf.length < 5 + len) break;
    const type = buf[4];
    const runId = buf.readUInt32BE(5);
    const payload = buf.subarray(9, 5 + len);
    buf = buf.subarray(5 + len);
    if (type === T_REQUEST) {
      const jsonLen = payload.readUInt32BE(0);
      const meta = JSON.parse(payload.subarray(4, 4 + jsonLen).toString('utf8'));
      void run(runId, meta, Buffer.from(payload.subarray(4 + jsonLen)));
    } else if (type === T_ANSWER) {
      const answer = JSON.parse(payload.toString('utf8'));
      const resolve = pendingMail.get(answer.id);
      pendingMail.delete(answer.id);
      resolve?.(answer.result);
    }
  }
});
process.stdin.on('end', () => process.exit(0));

// A failure outside the handler's own promise (a throw in a timer) ends the
// run with an error and the process with it: the suite starts a fresh one.
function fatal(err) {
  const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
  if (current !== 0) send(T_END, current, Buffer.from(JSON.stringify({ error: text.slice(0, 2000), fatal: true })));
  out.once('drain', () => process.exit(70));
  setImmediate(() => process.exit(70));
}
process.on('uncaughtException', fatal);
process.on('unhandledRejection', fatal);
