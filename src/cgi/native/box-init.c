/*
 * box-init: PID 1 of a tenant's persistent box (see src/cgi/forkbox.ts).
 *
 * bubblewrap builds the box once per tenant (its uid, rlimits, mounts, no
 * network) and runs this program in it, with two stream sockets:
 *
 *   fd 3  control, from the one that started the box (the root launcher):
 *         R run, K kill in; X exited, F failed out (no S: the launcher is
 *         not woken at a run's start, when the CPU is the script's).
 *   fd 4  data, to the server: I stdin bytes, E stdin end, K kill in;
 *         S started, O stdout, e stderr, M mail (fd 3), C closed, X exited out.
 *
 * Every frame: u32 payload length, u32 run id, u8 type, then the payload
 * (native byte order: both ends are on this machine). Per run it clones a
 * child in fresh PID, mount, IPC and UTS namespaces (the network namespace
 * is the box's own, empty one); the child mounts a private /tmp and a /proc
 * of its own PID namespace, sets the run's rlimits, drops every capability
 * and execs the script as PID 1 of its namespace, so whatever the script
 * leaves running dies with it. The script's stdin, stdout, stderr and fd 3
 * are pipes to this process, which relays them as frames: the answer ends
 * at the script's end, never at a box's teardown. The next run's child is
 * cloned ahead, as soon as a run has started (make_spare): a request then
 * costs one write to it. Frames out never block (see outq).
 *
 * This process keeps CAP_SYS_ADMIN inside the box's user namespace (given by
 * bwrap --cap-add) to make those namespaces and mounts; it is not dumpable,
 * so the runs (same uid, no capabilities, other PID namespaces) can neither
 * trace it nor read its memory. Nothing it reads from a socket is trusted
 * for more than its own length checks.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CTL 3
#define DATA 4
#define MAX_RUNS 64
#define MAX_FRAME (256 * 1024)
#define MAX_STDIN (64 * 1024 * 1024)
#define CHUNK 65536

struct __attribute__((packed)) head { uint32_t len, id; uint8_t type; };
/* The run's limits, first in an R frame's payload; then argc, envc and the strings. */
struct __attribute__((packed)) limits { uint64_t cpu, data, fsize, nofile, tmp; uint32_t argc, envc; };

struct run {
  uint32_t id;      /* 0: a free slot */
  pid_t pid;        /* 0 once reaped */
  int in, out[3];   /* our ends: stdin to write; stdout, stderr, mail to read (-1 when closed) */
  char *buf;        /* stdin not yet written */
  size_t have, off;
  int in_end;       /* the server sent E: close stdin once buf is written */
};

static struct run runs[MAX_RUNS];
static int proc_ok = 1;   /* whether a /proc of the run's own PID namespace can be mounted here */
static int sigfd;
/* Mount points below /tmp in the box (a web root or scratch folder there: tests do): kept in each run's own /tmp. */
#define MAX_KEEP 16
static char *keep[MAX_KEEP];
static int nkeep;

static void die(const char *why) {
  dprintf(2, "box-init: %s: %s\n", why, strerror(errno));
  exit(1);
}

/*
 * What is still to go out on each socket (0: control, 1: data). Writes
 * never block: a peer that stops reading (a stalled server) leaves its
 * frames here, and box-init goes on serving the other socket, reaping and
 * killing runs. Output relayed from runs (O, e, M) pauses while the data
 * socket's queue holds more than OUT_MAX, so the scripts wait on their
 * pipes (at the server's pace) and the queue stays bounded: OUT_MAX, one
 * chunk, and a few small frames per run.
 */
#define OUT_MAX (1024 * 1024)
struct outq { char *buf; size_t len, off; };
static struct outq outq[2];

static struct outq *queue_of(int fd) {
  return &outq[fd == DATA];
}

/* Sends what it can without waiting; 0 when the socket is full; a peer gone ends the box. */
static size_t send_some(int fd, const char *p, size_t n) {
  for (;;) {
    ssize_t w = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w < 0 && errno == ENOTSOCK) w = write(fd, p, n); /* a pipe, not a socket (never so when started by the suite): blocking */
    if (w >= 0) return (size_t)w;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    die("write to a socket");
  }
}

/* Writes what the socket takes of its queue (poll said it has room). */
static void flush_out(int fd) {
  struct outq *q = queue_of(fd);
  while (q->off < q->len) {
    size_t w = send_some(fd, q->buf + q->off, q->len - q->off);
    if (w == 0) break;
    q->off += w;
  }
  if (q->off == q->len) q->off = q->len = 0;
}

/* Writes all of buf, now or later (after what is queued already): never blocks. */
static void put(int fd, const void *buf, size_t n) {
  struct outq *q = queue_of(fd);
  const char *p = buf;
  if (q->len == q->off) {
    size_t w = send_some(fd, p, n);
    p += w;
    n -= w;
    if (n == 0) return;
  }
  if (q->off > 0 && q->off >= q->len - q->off) {
    memmove(q->buf, q->buf + q->off, q->len - q->off);
    q->len -= q->off;
    q->off = 0;
  }
  char *b = realloc(q->buf, q->len + n);
  if (!b) die("no memory for a socket's queue");
  q->buf = b;
  memcpy(q->buf + q->len, p, n);
  q->len += n;
}

static void frame(int fd, uint32_t id, uint8_t type, const void *payload, uint32_t len) {
  struct head h = { len, id, type };
  static char buf[sizeof h + CHUNK];
  /* one piece, so a frame goes out in one write when the socket has room */
  if (len <= CHUNK) {
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, payload, len);
    put(fd, buf, sizeof h + len);
  } else {
    put(fd, &h, sizeof h);
    put(fd, payload, len);
  }
}

/* Reads exactly n bytes; 0 at a clean end before the first byte. */
static int get(int fd, void *buf, size_t n) {
  char *p = buf;
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die("read from a socket");
    if (r == 0) {
      if (got == 0) return 0;
      errno = EPROTO;
      die("a frame cut short");
    }
    got += (size_t)r;
  }
  return 1;
}

static struct run *find(uint32_t id) {
  if (id == 0) return NULL;
  for (int i = 0; i < MAX_RUNS; i++) if (runs[i].id == id) return &runs[i];
  return NULL;
}

static void closefd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* A slot is free again once its process is reaped and its pipes are closed. */
static void maybe_free(struct run *r) {
  if (r->pid != 0 || r->out[0] >= 0 || r->out[1] >= 0 || r->out[2] >= 0) return;
  closefd(&r->in);
  free(r->buf);
  memset(r, 0, sizeof *r);
  r->in = r->out[0] = r->out[1] = r->out[2] = -1;
}

/* ---- the child: from a clone in fresh namespaces to the script ---- */

static void fail_child(const char *what) {
  dprintf(2, "makewaves box: %s: %s\n", what, strerror(errno));
  _exit(127);
}

static void drop_caps(void) {
  struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
  struct __user_cap_data_struct d[2];
  memset(d, 0, sizeof d);
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) fail_child("clear ambient capabilities");
  for (int c = 0; c <= 63; c++) if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL) fail_child("drop a bounding capability");
  if (syscall(SYS_capset, &h, d) != 0) fail_child("drop capabilities");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail_child("no new privileges");
}

/*
 * System calls a run has no use for, each a way around the box or a large
 * part of the kernel to attack: vsock sockets (no network namespace holds
 * them: from a virtual machine they reach its host's services), io_uring,
 * the key rings (per uid: shared by every run of the tenant), perf events,
 * userfaultfd and bpf; and setsid (see below). They fail with an error, as where the kernel lacks
 * them; other ABIs (32-bit and x32 calls on x86_64) fail whole, since the
 * numbers below are the native ABI's. On other architectures: no filter.
 */
#if defined(__x86_64__)
#define BOX_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define BOX_ARCH AUDIT_ARCH_AARCH64
#endif
#define DENY(nr, err) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err))
static void deny_syscalls(void) {
#ifdef BOX_ARCH
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, BOX_ARCH, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#ifdef __x86_64__
    BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
#endif
    DENY(SYS_io_uring_setup, ENOSYS), DENY(SYS_io_uring_enter, ENOSYS), DENY(SYS_io_uring_register, ENOSYS),
    DENY(SYS_add_key, ENOSYS), DENY(SYS_request_key, ENOSYS), DENY(SYS_keyctl, ENOSYS),
    DENY(SYS_perf_event_open, EACCES), DENY(SYS_userfaultfd, EPERM), DENY(SYS_bpf, EPERM),
    /* a new session is a scheduling group of its own (autogroup), weighed as the suite's whole session: a run forking
       many that each call setsid would take most of the CPU from the server; the box is one session (bwrap --new-session) */
    DENY(SYS_setsid, EPERM),
    /* socket(AF_VSOCK, …): the first argument's low 32 bits (little-endian on both) */
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 0, 3),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_VSOCK, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAFNOSUPPORT),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = { (unsigned short)(sizeof f / sizeof f[0]), f };
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) fail_child("filter system calls");
#endif
}

static void limit(int res, uint64_t soft, uint64_t hard) {
  struct rlimit l = { soft, hard };
  if (setrlimit(res, &l) != 0) fail_child("set a limit");
}

/* Makes the mount point p (a folder, or an empty file when dir is 0) and the folders above it. */
static void mount_point(char *p, int dir) {
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = 0;
    if (mkdir(p, 0755) != 0 && errno != EEXIST) fail_child("mkdir below /tmp");
    *s = '/';
  }
  int fd = -1;
  if (dir ? mkdir(p, 0755) != 0 && errno != EEXIST : (fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0644)) < 0) fail_child("mount point below /tmp");
  if (fd >= 0) close(fd);
}

/*
 * A private /tmp: a fresh tmpfs over the box's, with the box's mounts below
 * /tmp cloned (flags and all: read-only stays read-only) before and moved
 * back onto it after.
 */
static void private_tmp(uint64_t size) {
  int fd[MAX_KEEP], dir[MAX_KEEP];
  for (int i = 0; i < nkeep; i++) {
    struct stat st;
    fd[i] = (int)syscall(SYS_open_tree, AT_FDCWD, keep[i], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (fd[i] < 0 || fstat(fd[i], &st) != 0) fail_child("clone a mount below /tmp");
    dir[i] = S_ISDIR(st.st_mode);
  }
  /*
   * Bounded in bytes and in files: a tmpfs counts neither empty files nor
   * short symbolic links against its size, and size=0 would mean no limit
   * at all (a run could fill the machine's memory with them). One file per
   * KiB of its size, 64 at least.
   */
  if (size < 4096) size = 4096;
  char opts[96];
  snprintf(opts, sizeof opts, "size=%llu,nr_inodes=%llu,mode=1777", (unsigned long long)size, (unsigned long long)(size / 1024 < 64 ? 64 : size / 1024));
  if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0) fail_child("mount /tmp");
  for (int i = 0; i < nkeep; i++) {
    mount_point(keep[i], dir[i]);
    if (syscall(SYS_move_mount, fd[i], "", AT_FDCWD, keep[i], MOVE_MOUNT_F_EMPTY_PATH) != 0) fail_child("move a mount below /tmp");
    close(fd[i]);
  }
}

/* In the child (PID 1 of its own namespace), first: the run's stdio on fds 0-3, its own /tmp and /proc. */
static void child_setup(uint64_t tmp, int fds[4]) {
  sigset_t all;
  sigemptyset(&all);
  signal(SIGPIPE, SIG_DFL);
  sigprocmask(SIG_SETMASK, &all, NULL);
  for (int i = 0; i < 4; i++) if (dup2(fds[i], i) != i) fail_child("dup2");
  /* Our mounts stay ours: nothing propagates back into the box. */
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) fail_child("make mounts private");
  private_tmp(tmp);
  /* read-only: any process may set its own scheduling group's nice from 0 to 19 (/proc/self/autogroup), so a run could
     undo box-init's nice 10 for the whole box; /proc/self/fd/N still opens what it names, as that file's mount allows */
  if (proc_ok && mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL) != 0) fail_child("mount /proc");
}

/* Then: the run's limits, no capability, the script. Never returns. */
static void child_exec(const struct limits *lim, char **strs) {
  limit(RLIMIT_CPU, lim->cpu, lim->cpu + 1);
  limit(RLIMIT_DATA, lim->data, lim->data);
  limit(RLIMIT_FSIZE, lim->fsize, lim->fsize);
  limit(RLIMIT_NOFILE, lim->nofile, lim->nofile);
  limit(RLIMIT_CORE, 0, 0);
  drop_caps();
  deny_syscalls();
  char **argv = strs + 1, **envp = strs + 1 + lim->argc + 1;
  if (chdir(strs[0]) != 0) fail_child("chdir");
  execve(argv[0], argv, envp);
  fail_child(argv[0]);
}

/*
 * An R frame's payload: limits, then argc + envc + 1 NUL-ended strings (the
 * cwd, argv, env) into strs (argv and env each NULL-ended). Why not, or NULL.
 */
#define MAX_STRS (1 + 1024 + 1 + 4096 + 1)
static const char *parse_run(char *p, uint32_t len, struct limits *lim, char **strs) {
  if (len < sizeof *lim) return "short run request";
  memcpy(lim, p, sizeof *lim);
  if (lim->argc < 1 || lim->argc > 1024 || lim->envc > 4096) return "bad argc or envc";
  uint32_t n = lim->argc + lim->envc + 1;
  char *s = p + sizeof *lim, *end = p + len;
  for (uint32_t i = 0, k = 0; i < n; i++) {
    char *z = memchr(s, 0, (size_t)(end - s));
    if (!z) return "string without its NUL";
    strs[k++] = s;
    if (i == lim->argc) strs[k++] = NULL; /* after cwd + argc strings: argv's end */
    s = z + 1;
  }
  strs[n + 1] = NULL;
  return NULL;
}

/* Reads exactly n bytes from a pipe; 0 at its end or an error. */
static int get_pipe(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0;
    p += r;
    n -= (size_t)r;
  }
  return 1;
}

/*
 * The spare: a run's process made ahead, before its request (see make_spare).
 * Set up like any run, it keeps nothing of box-init's but its own stdio and
 * the pipe its run comes on (fd 4: a u32 length, then an R frame's payload),
 * then waits there. Its pipe's end without a run: it ends, having run nothing.
 */
static void spare_child(uint64_t tmp, int fds[4], int go) {
  child_setup(tmp, fds);
  if (dup2(go, 4) != 4) fail_child("dup2");
  /* other runs' pipe ends (copies of box-init's) would keep their stdin open and their output unended while it waits */
  if (syscall(SYS_close_range, 5, ~0U, 0) != 0) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) fail_child("/proc/self/fd");
    int keep = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
      int fd = atoi(e->d_name);
      if (fd > 4 && fd != keep) close(fd);
    }
    closedir(d);
  }
  uint32_t len;
  if (!get_pipe(4, &len, sizeof len)) _exit(0);
  if (len > MAX_FRAME) _exit(127);
  char *p = malloc(len + 1);
  static char *strs[MAX_STRS];
  struct limits lim;
  if (!p || !get_pipe(4, p, len)) _exit(127);
  close(4);
  /* box-init checked it before sending it */
  if (parse_run(p, len, &lim, strs)) _exit(127);
  child_exec(&lim, strs);
}

/* ---- the server's side: runs started, their pipes relayed ---- */

/* The spare (spare_child): its pid, the pipe its run goes on, box-init's ends of its stdio, its /tmp's size. */
static struct { pid_t pid; int go; int ours[4]; uint64_t tmp; } spare = { 0, -1, { -1, -1, -1, -1 }, 0 };

/* Four pipes: the child's ends (stdin read, stdout, stderr, mail write) in fds, box-init's in ours. Why not, or NULL. */
static const char *pipes(int fds[4], int ours[4]) {
  for (int i = 0; i < 4; i++) {
    int pp[2];
    if (pipe2(pp, O_CLOEXEC) != 0) return "pipe";
    fds[i] = i == 0 ? pp[0] : pp[1];
    ours[i] = i == 0 ? pp[1] : pp[0];
  }
  return NULL;
}

static void close4(int fd[4]) {
  for (int i = 0; i < 4; i++) closefd(&fd[i]);
}

/* The spare unused (gone, or not what the next run needs): it ends at its pipe's end; reap() takes its status. */
static void drop_spare(void) {
  if (spare.pid > 0) kill(spare.pid, SIGKILL);
  spare.pid = 0;
  closefd(&spare.go);
  close4(spare.ours);
}

/*
 * The next run's process, made now: clone, namespaces, its /tmp (of `tmp`
 * bytes) and /proc, off the path of the request that takes it. Only its
 * limits, capabilities and exec are left for then.
 */
static void make_spare(uint64_t tmp) {
  int fds[4] = { -1, -1, -1, -1 }, ours[4] = { -1, -1, -1, -1 }, go[2] = { -1, -1 };
  if (pipes(fds, ours) || pipe2(go, O_CLOEXEC) != 0) goto fail;
  /* room for a whole request: it is written in one go, never blocking box-init */
  fcntl(go[1], F_SETPIPE_SZ, MAX_FRAME + 4096);
  fcntl(go[1], F_SETFL, O_NONBLOCK);
  pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD, 0, 0, 0, 0);
  if (pid == 0) spare_child(tmp, fds, go[0]);
  if (pid < 0) goto fail;
  close4(fds);
  close(go[0]);
  spare.pid = pid;
  spare.go = go[1];
  spare.tmp = tmp;
  memcpy(spare.ours, ours, sizeof ours);
  return;
fail:
  close4(fds);
  close4(ours);
  if (go[0] >= 0) close(go[0]);
  if (go[1] >= 0) close(go[1]);
}

/* Hands a checked request to the spare: its pid, or 0 when it cannot take it (gone, another /tmp size, too long). */
static pid_t use_spare(const struct limits *lim, const char *p, uint32_t len, int ours[4]) {
  if (spare.pid <= 0) return 0;
  int room = fcntl(spare.go, F_GETPIPE_SZ);
  if (spare.tmp != lim->tmp || room < 0 || (size_t)room < len + 4u) {
    drop_spare();
    return 0;
  }
  char *msg = malloc(len + 4u);
  if (!msg) return 0;
  memcpy(msg, &len, 4);
  memcpy(msg + 4, p, len);
  /* an empty pipe with room for it all: one write, whole (a spare that died meanwhile: EPIPE) */
  ssize_t w = write(spare.go, msg, len + 4u);
  free(msg);
  if (w != (ssize_t)(len + 4u)) {
    drop_spare();
    return 0;
  }
  pid_t pid = spare.pid;
  memcpy(ours, spare.ours, sizeof spare.ours);
  for (int i = 0; i < 4; i++) spare.ours[i] = -1;
  closefd(&spare.go);
  spare.pid = 0;
  return pid;
}

/*
 * The box's session is a scheduling group of its own (autogroup: bwrap
 * --new-session), weighed as the server's whole session whatever the nice
 * value of the processes in it: nice 10 only counts among the box's own.
 * So the group itself is set to nice 10 (raising it needs no privilege).
 * The kernel takes one such change in the whole system per 100 ms
 * (EAGAIN): tried again at the next run until it is taken or refused.
 */
static int autogroup_fd = -1; /* opened before this process stops being dumpable (its /proc files are root's then) */
static void nice_autogroup(void) {
  if (autogroup_fd < 0) return; /* done, or no autogroups in this kernel: nice 10 counts as it is */
  if (write(autogroup_fd, "10", 2) == 2 || errno != EAGAIN) closefd(&autogroup_fd);
}

/* An R frame (parse_run). Answers S (its pid, to both sockets) or F (why, to control). */
static void start(uint32_t id, char *p, uint32_t len) {
  nice_autogroup();
  struct limits lim;
  struct run *r = NULL;
  static char *strs[MAX_STRS];
  const char *why = parse_run(p, len, &lim, strs);
  if (!why && (id == 0 || find(id))) why = "run id in use";
  if (!why) for (int i = 0; i < MAX_RUNS && !r; i++) if (runs[i].id == 0) r = &runs[i];
  if (!why && !r) why = "too many runs in this box";
  int fds[4] = { -1, -1, -1, -1 }, ours[4] = { -1, -1, -1, -1 };
  pid_t pid = why ? -1 : use_spare(&lim, p, len, ours);
  if (!why && pid == 0) {
    why = pipes(fds, ours);
    /* Like fork (no new stack), the child PID 1 of a new PID namespace. */
    if (!why) pid = (pid_t)syscall(SYS_clone, CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) {
      child_setup(lim.tmp, fds);
      child_exec(&lim, strs);
    }
    if (!why && pid < 0) why = "clone";
  }
  close4(fds);
  if (why) {
    close4(ours);
    frame(CTL, id, 'F', why, (uint32_t)strlen(why));
    return;
  }
  r->id = id;
  r->pid = pid;
  r->in = ours[0];
  for (int i = 0; i < 3; i++) r->out[i] = ours[i + 1];
  for (int i = 0; i < 4; i++) fcntl(ours[i], F_SETFL, O_NONBLOCK);
  uint32_t p32 = (uint32_t)pid;
  /* On the data socket only: the server feeds it from here; the launcher hears of it at its X or F. */
  frame(DATA, id, 'S', &p32, 4);
  /* the next run's process, while this one runs */
  if (spare.pid == 0) make_spare(lim.tmp);
}

/* Ends a run's stdin (what is still waiting is dropped): the script reads its end. */
static void drop_in(struct run *r) {
  closefd(&r->in);
  free(r->buf);
  r->buf = NULL;
  r->have = r->off = 0;
}

/* Writes what it can of a run's pending stdin; closes it at its end, or when the script stopped reading for good. */
static void flush_in(struct run *r) {
  while (r->in >= 0 && r->off < r->have) {
    ssize_t w = write(r->in, r->buf + r->off, r->have - r->off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) return;
    if (w < 0) { drop_in(r); return; } /* EPIPE: the script closed its stdin; the rest is dropped */
    r->off += (size_t)w;
  }
  if (r->off == r->have) { r->off = r->have = 0; }
  if (r->in >= 0 && r->in_end && r->have == 0) closefd(&r->in);
}

static void stdin_bytes(struct run *r, const char *p, uint32_t len) {
  if (r->in < 0 || r->in_end) return;
  /* what the script took already leaves the buffer (once it is at least half of it: copied rarely) */
  if (r->off > 0 && r->off >= r->have - r->off) {
    memmove(r->buf, r->buf + r->off, r->have - r->off);
    r->have -= r->off;
    r->off = 0;
  }
  if (r->have + len > MAX_STDIN) { drop_in(r); return; }
  /* no memory for it (the box's own limit): that run's stdin ends, never the box with every run in it */
  char *b = realloc(r->buf, r->have + len);
  if (!b) { drop_in(r); return; }
  r->buf = b;
  memcpy(r->buf + r->have, p, len);
  r->have += len;
  flush_in(r);
}

static void kill_run(uint32_t id) {
  struct run *r = find(id);
  /* the run's PID 1: with it the kernel ends every process of its namespace */
  if (r && r->pid > 0) kill(r->pid, SIGKILL);
}

/* One frame from control (R, K) or data (I, E, K); other types are ignored. */
static void on_frame(int fd, char *buf) {
  struct head h;
  if (!get(fd, &h, sizeof h)) exit(0); /* the launcher or the server gone: the box ends (and its runs with it) */
  if (h.len > MAX_FRAME) { errno = EMSGSIZE; die("frame too long"); }
  if (h.len && !get(fd, buf, h.len)) { errno = EPROTO; die("frame cut short"); }
  if (fd == CTL && h.type == 'R') start(h.id, buf, h.len);
  else if (h.type == 'K') kill_run(h.id);
  else if (fd == DATA && h.type == 'I') { struct run *r = find(h.id); if (r) stdin_bytes(r, buf, h.len); }
  else if (fd == DATA && h.type == 'E') { struct run *r = find(h.id); if (r) { r->in_end = 1; flush_in(r); } }
}

static void reap(void) {
  struct signalfd_siginfo si;
  while (read(sigfd, &si, sizeof si) > 0) {}
  int st;
  pid_t pid;
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    /* the spare ended before a run took it (its set-up failed): the next run gets a process of its own */
    if (pid == spare.pid) {
      spare.pid = 0;
      drop_spare();
    }
    for (int i = 0; i < MAX_RUNS; i++) {
      struct run *r = &runs[i];
      if (r->id == 0 || r->pid != pid) continue;
      r->pid = 0;
      closefd(&r->in);
      int32_t s = st;
      frame(CTL, r->id, 'X', &s, 4);
      frame(DATA, r->id, 'X', &s, 4);
      maybe_free(r);
    }
  }
}

/* Relays one read of a run's stdout (O), stderr (e) or mail channel (M); C and its fd number at its end. */
static void relay(struct run *r, int k, char *buf) {
  static const uint8_t type[3] = { 'O', 'e', 'M' };
  ssize_t n = read(r->out[k], buf, CHUNK);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n > 0) return frame(DATA, r->id, type[k], buf, (uint32_t)n);
  uint8_t fd = (uint8_t)(k + 1);
  closefd(&r->out[k]);
  frame(DATA, r->id, 'C', &fd, 1);
  maybe_free(r);
}

/* The box's topmost mount points below /tmp (mountinfo's fifth field, octal escapes undone). */
static void scan_tmp(void) {
  FILE *f = fopen("/proc/self/mountinfo", "r");
  if (!f) die("/proc/self/mountinfo");
  char line[4096], mp[4096];
  while (fgets(line, sizeof line, f)) {
    char *s = line;
    for (int i = 0; i < 4 && s; i++) s = strchr(s, ' ') ? strchr(s, ' ') + 1 : NULL;
    if (!s) continue;
    size_t k = 0;
    for (; *s && *s != ' ' && k + 1 < sizeof mp; s++) {
      if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] && s[3]) { mp[k++] = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0')); s += 3; }
      else mp[k++] = *s;
    }
    mp[k] = 0;
    if (strncmp(mp, "/tmp/", 5) != 0) continue;
    int under = 0;
    for (int i = 0; i < nkeep; i++) {
      size_t n = strlen(keep[i]);
      if (strncmp(mp, keep[i], n) == 0 && (mp[n] == '/' || mp[n] == 0)) under = 1;
    }
    if (under) continue;
    if (nkeep == MAX_KEEP) { errno = E2BIG; die("too many mounts below /tmp"); }
    keep[nkeep] = strdup(mp);
    if (!keep[nkeep++]) die("strdup");
  }
  fclose(f);
}

/* Whether a /proc can be mounted in a fresh PID namespace here (one probe at start). */
static void probe_proc(void) {
  pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWPID | CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0);
  if (pid == 0) {
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) _exit(1);
    _exit(mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0 ? 0 : 1);
  }
  int st = 1;
  if (pid < 0 || waitpid(pid, &st, 0) != pid) die("probe a namespace");
  proc_ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Every open fd above DATA close-on-exec, as /proc lists them (kernels without close_range's CLOSE_RANGE_CLOEXEC). */
static void cloexec_all(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) die("/proc/self/fd");
  struct dirent *e;
  while ((e = readdir(d))) {
    int fd = atoi(e->d_name);
    if (fd > DATA && fd != dirfd(d) && fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) die("close-on-exec");
  }
  closedir(d);
}

__attribute__((noreturn)) static void box_init(void) {
  static char buf[MAX_FRAME];
  autogroup_fd = open("/proc/self/autogroup", O_WRONLY | O_CLOEXEC);
  nice_autogroup();
  /* not dumpable: the runs, same uid, may not ptrace this process or read its memory */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) die("PR_SET_DUMPABLE");
  for (int fd = CTL; fd <= DATA; fd++) if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) die("the sockets (fd 3 and 4)");
  /* bwrap leaves some of its own fds open (a pipe it watches), and so may whoever started it: no run may inherit
     any of them, whatever its number (close_range, Linux 5.11; before it every fd /proc lists) */
  if (syscall(SYS_close_range, DATA + 1, ~0U, CLOSE_RANGE_CLOEXEC) != 0) cloexec_all();
  for (int i = 0; i < MAX_RUNS; i++) runs[i].in = runs[i].out[0] = runs[i].out[1] = runs[i].out[2] = -1;
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) die("signalfd");
  scan_tmp();
  probe_proc();
  /* ready: the one that started the box knows it can ask now */
  frame(CTL, 0, 'Y', &proc_ok, 1);
  for (;;) {
    struct pollfd pf[3 + MAX_RUNS * 4];
    struct { struct run *r; int k; } who[3 + MAX_RUNS * 4];
    int n = 0;
    pf[n++] = (struct pollfd){ CTL, (short)(POLLIN | (outq[0].len > outq[0].off ? POLLOUT : 0)), 0 };
    pf[n++] = (struct pollfd){ DATA, (short)(POLLIN | (outq[1].len > outq[1].off ? POLLOUT : 0)), 0 };
    pf[n++] = (struct pollfd){ sigfd, POLLIN, 0 };
    /* the server not reading: the runs' output waits in their pipes */
    int relaying = outq[1].len - outq[1].off <= OUT_MAX;
    for (int i = 0; i < MAX_RUNS; i++) {
      struct run *r = &runs[i];
      if (r->id == 0) continue;
      for (int k = 0; k < 3 && relaying; k++) if (r->out[k] >= 0) { who[n].r = r; who[n].k = k; pf[n++] = (struct pollfd){ r->out[k], POLLIN, 0 }; }
      if (r->in >= 0 && r->have > r->off) { who[n].r = r; who[n].k = -1; pf[n++] = (struct pollfd){ r->in, POLLOUT, 0 }; }
    }
    if (poll(pf, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (pf[0].revents & POLLOUT) flush_out(CTL);
    if (pf[1].revents & POLLOUT) flush_out(DATA);
    if (pf[0].revents & ~POLLOUT) on_frame(CTL, buf);
    if (pf[1].revents & ~POLLOUT) on_frame(DATA, buf);
    if (pf[2].revents) reap();
    for (int i = 3; i < n; i++) {
      if (!pf[i].revents || who[i].r->id == 0) continue;
      if (who[i].k < 0) {
        if (pf[i].revents & (POLLERR | POLLHUP)) closefd(&who[i].r->in);
        else flush_in(who[i].r);
      } else if (who[i].r->out[who[i].k] == pf[i].fd) relay(who[i].r, who[i].k, buf);
    }
  }
}

/*
 * /usr/sbin/sendmail in a persistent box is this program, called by that
 * name: one exec per mail where the shell version (sendmail.sh, kept for
 * boxes without box-init) took three. The same contract: reads one message
 * (at most 256 KiB) on stdin, as `sendmail -t` does, and writes it to the
 * run's mail channel (fd 3) as one line `M <base64>`; the usual flags
 * (-t, -i, -oi, -f <from>, -F <name>) are accepted, recipients given as
 * arguments are not (exit 64), and without a mail channel it exits 75.
 */
#define MAIL_MAX 262144
static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int sendmail_main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (argv[i][0] == '-') continue;
    if (i > 1 && (strcmp(argv[i - 1], "-f") == 0 || strcmp(argv[i - 1], "-F") == 0)) continue;
    fputs("sendmail: recipients come from the message (-t) only\n", stderr);
    return 64;
  }
  if (fcntl(3, F_GETFD) < 0) {
    fputs("sendmail: no mail channel here\n", stderr);
    return 75;
  }
  static unsigned char msg[MAIL_MAX];
  size_t len = 0;
  while (len < MAIL_MAX) {
    ssize_t r = read(0, msg + len, MAIL_MAX - len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    len += (size_t)r;
  }
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  static char line[2 + (MAIL_MAX + 2) / 3 * 4 + 1];
  size_t o = 0;
  line[o++] = 'M';
  line[o++] = ' ';
  for (size_t i = 0; i < len; i += 3) {
    uint32_t v = (uint32_t)msg[i] << 16 | (i + 1 < len ? (uint32_t)msg[i + 1] << 8 : 0) | (i + 2 < len ? msg[i + 2] : 0);
    line[o++] = b64[v >> 18 & 63];
    line[o++] = b64[v >> 12 & 63];
    line[o++] = i + 1 < len ? b64[v >> 6 & 63] : '=';
    line[o++] = i + 2 < len ? b64[v & 63] : '=';
  }
  line[o++] = '\n';
  signal(SIGPIPE, SIG_IGN);
  if (write_all(3, line, o) != 0) {
    fputs("sendmail: the mail channel is closed\n", stderr);
    return 75;
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *name = argc > 0 && argv[0] ? strrchr(argv[0], '/') : NULL;
  name = name ? name + 1 : (argc > 0 && argv[0] ? argv[0] : "");
  if (strcmp(name, "sendmail") == 0) return sendmail_main(argc, argv);
  box_init();
}
