/* The sandbox of every ffmpeg, ffprobe and espeak-ng run (workers/ffmpeg/sandbox.py says when).
 *
 * Entered in the run itself after the dynamic loader is done and before the program's main(),
 * so the program reads hostile input only inside it: forkserver.c enters it in each forked
 * run; an exec'd run enters it from the same library, preloaded (see __libc_start_main there).
 *
 * Files: Landlock (Linux 5.13+; the rights of later ABIs are used where the kernel has them).
 * The run may read the paths named "read" and read and write in the ones named "write";
 * nothing else, not /etc, not the storage root, not another job's files. Descriptors it was
 * given (stdin, stdout, stderr, pipes) stay usable: Landlock checks opening, not using.
 * Network: a seccomp filter refuses socket(), socketpair() and io_uring (whose requests would
 * pass the filter) with EACCES; Landlock also refuses TCP binds and connects where it can, and
 * abstract unix sockets and signals to processes outside the sandbox.
 *
 * The spec is lines of "read <path>" and "write <path>"; paths hold no newline (sandbox.py).
 */
#define _GNU_SOURCE
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Rights of later Landlock ABIs than this libc's headers know. */
#ifndef LANDLOCK_ACCESS_FS_REFER
#define LANDLOCK_ACCESS_FS_REFER (1ULL << 13)
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)
#endif
#define NET_BIND_TCP (1ULL << 0)
#define NET_CONNECT_TCP (1ULL << 1)
#define SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define SCOPE_SIGNAL (1ULL << 1)

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "sandbox.c knows the system call ABI of x86_64 and aarch64 only"
#endif

/* landlock_ruleset_attr as ABI 6 has it; older kernels are given the prefix they know. */
struct ruleset_attr {
    uint64_t handled_access_fs, handled_access_net, scoped;
};

static const uint64_t FILE_RIGHTS = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                                    LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_TRUNCATE |
                                    LANDLOCK_ACCESS_FS_IOCTL_DEV;

/* Not even in a folder the run writes in: running what it wrote, devices, sockets. */
static const uint64_t NOT_EVEN_IN_WRITE = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_MAKE_CHAR |
                                          LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SOCK |
                                          LANDLOCK_ACCESS_FS_IOCTL_DEV;

static int fail(const char *step) {
    dprintf(2, "sandbox: %s: %s\n", step, strerror(errno));
    return -1;
}

static uint64_t fs_rights(int abi) {
    uint64_t rights = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;  /* ABI 1: bits 0 to 12 */
    if (abi >= 2) rights |= LANDLOCK_ACCESS_FS_REFER;
    if (abi >= 3) rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
    if (abi >= 5) rights |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
    return rights;
}

static int allow(int ruleset, const char *path, int writable, uint64_t handled) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) return fail(path);
    struct stat info;
    if (fstat(fd, &info) < 0) {
        close(fd);
        return fail(path);
    }
    uint64_t rights = writable ? handled & ~NOT_EVEN_IN_WRITE
                               : LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
    if (!S_ISDIR(info.st_mode)) rights &= FILE_RIGHTS;  /* a file takes file rights only */
    struct landlock_path_beneath_attr beneath = {.allowed_access = rights & handled, .parent_fd = fd};
    long added = syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &beneath, 0);
    close(fd);
    return added < 0 ? fail(path) : 0;
}

static int confine_files(char *spec) {
    int abi = (int)syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    if (abi < 1) return fail("Landlock is not available");
    struct ruleset_attr attr = {.handled_access_fs = fs_rights(abi)};
    size_t size = offsetof(struct ruleset_attr, handled_access_net);
    if (abi >= 4) {
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP;
        size = offsetof(struct ruleset_attr, scoped);
    }
    if (abi >= 6) {
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL;
        size = sizeof attr;
    }
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
    if (ruleset < 0) return fail("landlock_create_ruleset");
    int result = 0;
    for (char *line = strtok(spec, "\n"); line != NULL && result == 0; line = strtok(NULL, "\n")) {
        if (strncmp(line, "read ", 5) == 0)
            result = allow(ruleset, line + 5, 0, attr.handled_access_fs);
        else if (strncmp(line, "write ", 6) == 0)
            result = allow(ruleset, line + 6, 1, attr.handled_access_fs);
        else {
            errno = EINVAL;
            result = fail(line);
        }
    }
    if (result == 0 && syscall(SYS_landlock_restrict_self, ruleset, 0) < 0) result = fail("landlock_restrict_self");
    close(ruleset);
    return result;
}

static int refuse_sockets(void) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),  /* another ABI's numbers: no way round */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#ifdef __x86_64__
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),  /* x32's numbers */
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
#endif
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socketpair, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_io_uring_setup, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_io_uring_enter, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES),
    };
    struct sock_fprog program = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) < 0) return fail("seccomp");
    return 0;
}

int sandbox_enter(char *spec) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return fail("no_new_privs");
    if (confine_files(spec) < 0) return -1;
    return refuse_sockets();
}
