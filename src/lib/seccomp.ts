/**
 * The system call filter of every box (bwrap --seccomp): a classic BPF
 * program, as the kernel takes it (struct sock_filter: u16 code, u8 jt,
 * u8 jf, u32 k, in the machine's byte order). What it refuses, and why, is
 * what box-init refuses its runs (src/cgi/native/box-init.c): vsock
 * sockets (no network namespace holds them: from a virtual machine they
 * reach its host's services), io_uring, the key rings, perf events,
 * userfaultfd, bpf, and setsid (a session is a scheduling group of its own,
 * as heavy as the server's whole session). Each fails with an error, as
 * where the kernel lacks it; calls of another ABI (32-bit or x32 on
 * x86_64) fail whole, since the numbers below are the native ABI's.
 */

const LD_W_ABS = 0x20;
const JEQ_K = 0x15;
const JGE_K = 0x35;
const RET_K = 0x06;
const RET_ERRNO = 0x00050000;
const RET_ALLOW = 0x7fff0000;
const ENOSYS = 38;
const EACCES = 13;
const EPERM = 1;
const EAFNOSUPPORT = 97;
const AF_VSOCK = 40;
/** Offsets in struct seccomp_data: nr, arch, the first argument (its low 32 bits on a little-endian machine). */
const NR = 0;
const ARCH = 4;
const ARG0 = 16;

interface Arch {
  audit: number;
  x32: boolean;
  calls: { io_uring_setup: number; io_uring_enter: number; io_uring_register: number; add_key: number; request_key: number; keyctl: number; perf_event_open: number; userfaultfd: number; bpf: number; setsid: number; socket: number };
}

const ARCHES: Record<string, Arch> = {
  x64: {
    audit: 0xc000003e,
    x32: true,
    calls: { io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427, add_key: 248, request_key: 249, keyctl: 250, perf_event_open: 298, userfaultfd: 323, bpf: 321, setsid: 112, socket: 41 },
  },
  arm64: {
    audit: 0xc00000b7,
    x32: false,
    calls: { io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427, add_key: 217, request_key: 218, keyctl: 219, perf_event_open: 241, userfaultfd: 282, bpf: 280, setsid: 157, socket: 198 },
  },
};

type Insn = [code: number, jt: number, jf: number, k: number];

/** The filter for `arch` (Node's process.arch), or undefined where there is none (other architectures: no filter). */
export function syscallFilter(arch: string = process.arch): Buffer | undefined {
  const a = ARCHES[arch];
  if (!a || (process.platform as string) !== 'linux') return undefined;
  const c = a.calls;
  const deny = (nr: number, errno: number): Insn[] => [
    [JEQ_K, 0, 1, nr],
    [RET_K, 0, 0, RET_ERRNO | errno],
  ];
  const prog: Insn[] = [
    [LD_W_ABS, 0, 0, ARCH],
    [JEQ_K, 1, 0, a.audit],
    [RET_K, 0, 0, RET_ERRNO | ENOSYS],
    [LD_W_ABS, 0, 0, NR],
    ...(a.x32 ? ([[JGE_K, 0, 1, 0x40000000], [RET_K, 0, 0, RET_ERRNO | ENOSYS]] as Insn[]) : []),
    ...deny(c.io_uring_setup, ENOSYS),
    ...deny(c.io_uring_enter, ENOSYS),
    ...deny(c.io_uring_register, ENOSYS),
    ...deny(c.add_key, ENOSYS),
    ...deny(c.request_key, ENOSYS),
    ...deny(c.keyctl, ENOSYS),
    ...deny(c.perf_event_open, EACCES),
    ...deny(c.userfaultfd, EPERM),
    ...deny(c.bpf, EPERM),
    ...deny(c.setsid, EPERM),
    [JEQ_K, 0, 3, c.socket],
    [LD_W_ABS, 0, 0, ARG0],
    [JEQ_K, 0, 1, AF_VSOCK],
    [RET_K, 0, 0, RET_ERRNO | EAFNOSUPPORT],
    [RET_K, 0, 0, RET_ALLOW],
  ];
  const out = Buffer.alloc(prog.length * 8);
  prog.forEach(([code, jt, jf, k], i) => {
    out.writeUInt16LE(code, i * 8);
    out.writeUInt8(jt, i * 8 + 2);
    out.writeUInt8(jf, i * 8 + 3);
    out.writeUInt32LE(k >>> 0, i * 8 + 4);
  });
  return out;
}
