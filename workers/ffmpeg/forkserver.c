/* A fork server for ffmpeg and ffprobe (workers/ffmpeg/forkserver.py starts it; see its Forkserver),
 * and the sandbox's entry for runs that are exec'd (workers/ffmpeg/sandbox.py).
 *
 * Debian's ffmpeg links 215 shared libraries. Binding their symbols at start-up is about
 * 200 million instructions: most of the CPU that converting a five-second clip costs. Loaded
 * with LD_PRELOAD and FORKSERVER_FD set, this library stops the program after the dynamic
 * loader is done and before its main(), and waits on that socket. Each request carries an
 * argv and the descriptors to run it with; the server forks a keeper, which forks the run.
 * The run starts a session of its own (its process group, which the runner kills on time-out
 * or cancel), moves the descriptors into place, closes every other one, and calls the
 * program's main() with the request's argv: the same program, already linked.
 *
 * The run also writes its argv over the server's own (a blank the runner starts it with), so
 * that ps and /proc/<pid>/cmdline show each run's command line, as they would after an exec.
 *
 * The keeper writes the run's pid, then its exit, to the request's status socket; it reaps
 * the run only when the runner closes that socket, so the runner can never signal a pid that
 * was reused. The server exits when its socket closes (the runner's process is gone).
 *
 * Each run enters its sandbox (sandbox.c) before main(): the program reads hostile input only
 * inside it. An exec'd run with this library preloaded enters it too: see __libc_start_main.
 * Every program started with it first drops a stop that was meant for the worker: see
 * release_stop_signals.
 *
 * Request: one SOCK_SEQPACKET message of NUL-separated strings: the working directory, the
 * target numbers of the extra descriptors ("" or "5,7"), the sandbox ("-" for none), then
 * argv. Its descriptors (SCM_RIGHTS): stdin, stdout, stderr, the status socket, the extras.
 * Status: "pid <n>\n", then "exit <code>\n" or "signal <n>\n".
 *
 * Keeper and run each ask the kernel for SIGKILL when their parent dies (PR_SET_PDEATHSIG): when
 * the worker dies, the server sees its socket close and exits, and so do its keepers and runs.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox.h"

#define MAX_REQUEST (256 * 1024)
#define MAX_FDS 16
#define MAX_ARGS 4096

typedef int (*main_fn)(int, char **, char **);
typedef int (*start_fn)(main_fn, int, char **, void (*)(void), void (*)(void), void (*)(void), void *);

/* What libc's own __libc_start_main was to be called with: each run calls it with its argv. */
static struct {
    start_fn start;
    main_fn main;
    int argc;
    char **argv;  /* the server's own, whose space each run's argv is written over */
    void (*init)(void), (*fini)(void), (*rtld_fini)(void);
    void *stack_end;
} program;

static void say(int fd, const char *format, long value) {
    char line[64];
    int length = snprintf(line, sizeof line, format, value);
    if (write(fd, line, (size_t)length) < 0) {
        /* the runner is gone: nobody to tell */
    }
}

/* In the run: stdin, stdout, stderr and the extras at their numbers; every other one closed. */
static void arrange(const int *fds, int count, const int *targets) {
    int wanted[MAX_FDS + 3], kept = 0, highest = 2;
    for (int i = 0; i < count; i++) {
        if (i == 3) continue;  /* the status socket is the keeper's */
        wanted[kept] = i < 3 ? i : targets[i - 4];
        if (wanted[kept] > highest) highest = wanted[kept];
        kept++;
    }
    int moved[MAX_FDS + 3];
    for (int k = 0, i = 0; i < count; i++)  /* above every target first: no dup2 clobbers one */
        if (i != 3) moved[k++] = fcntl(fds[i], F_DUPFD, highest + 1);
    for (int k = 0; k < kept; k++)
        if (moved[k] < 0 || dup2(moved[k], wanted[k]) < 0) _exit(127);
    for (int k = 1; k < kept; k++)  /* in order, to close the gaps between them */
        for (int j = k; j > 0 && wanted[j - 1] > wanted[j]; j--) {
            int swap = wanted[j];
            wanted[j] = wanted[j - 1];
            wanted[j - 1] = swap;
        }
    for (int k = 0; k < kept; k++) {
        unsigned from = (unsigned)wanted[k] + 1, to = k + 1 < kept ? (unsigned)wanted[k + 1] - 1 : ~0U;
        if (from <= to) close_range(from, to, 0);
    }
}

/* In the run: its argv where ps reads a process's command line, cut to the space there is. */
static void retitle(char **args, int count) {
    char *area = program.argv[0], *last = program.argv[program.argc - 1];
    size_t size = (size_t)(last + strlen(last) + 1 - area);
    size_t used = 0;
    for (int i = 0; i < count && used < size; i++) {
        size_t length = strlen(args[i]) + 1;
        if (length > size - used) length = size - used;
        memcpy(area + used, args[i], length);
        used += length;
    }
    memset(area + used, 0, size - used);
    area[size - 1] = '\0';
}

/* The keeper: start the run, report it, wait for the runner to let go, reap. */
static void keep(const char *folder, char *sandbox, char **argv, int argc, int *fds, int count, const int *targets) {
    signal(SIGCHLD, SIG_DFL);
    int status_fd = fds[3];
    pid_t keeper = getpid();
    pid_t run = fork();
    if (run < 0) _exit(1);
    if (run == 0) {
        /* Nothing outlives its worker: the run dies with its keeper, as the keeper with the server. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != keeper) _exit(127);
        setsid();
        if (chdir(folder) < 0) _exit(127);
        arrange(fds, count, targets);
        if (strcmp(sandbox, "-") != 0 && sandbox_enter(sandbox) != 0) _exit(SANDBOX_FAILED);
        retitle(argv, argc);
        unsetenv("FORKSERVER_FD");
        unsetenv("LD_PRELOAD");
        exit(program.start(program.main, argc, argv, program.init, program.fini, program.rtld_fini,
                           program.stack_end));
    }
    for (int i = 0; i < count; i++)
        if (i != 3) close(fds[i]);
    say(status_fd, "pid %ld\n", (long)run);
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int waited;
    while ((waited = waitid(P_PID, (id_t)run, &info, WEXITED | WNOWAIT)) < 0 && errno == EINTR) {
    }
    if (waited == 0 && info.si_code == CLD_EXITED)
        say(status_fd, "exit %ld\n", (long)info.si_status);
    else if (waited == 0)
        say(status_fd, "signal %ld\n", (long)info.si_status);
    /* else no report: the runner then kills the run itself */
    char ignored[64];
    while (read(status_fd, ignored, sizeof ignored) > 0) {
    }
    waitpid(run, NULL, 0);
    _exit(0);
}

/* The runner starts each exec'd run, and each server, with the signals that stop the worker
 * held (sandbox.py, stop_signals_held). Until its setsid() the child is still in the worker's
 * process group: a stop sent to that group in that moment waits here, pending. It was meant
 * for the worker, which stops its runs itself; it is dropped (setting a pending signal to
 * SIG_IGN discards it), and the signals are the program's again. */
static void release_stop_signals(void) {
    static const int stops[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    sigset_t held, release;
    if (sigprocmask(SIG_SETMASK, NULL, &held) < 0) return;
    sigemptyset(&release);
    for (size_t i = 0; i < sizeof stops / sizeof stops[0]; i++) {
        if (!sigismember(&held, stops[i])) continue;
        struct sigaction ignore = {.sa_handler = SIG_IGN}, was;
        if (sigaction(stops[i], &ignore, &was) == 0) sigaction(stops[i], &was, NULL);
        sigaddset(&release, stops[i]);
    }
    sigprocmask(SIG_UNBLOCK, &release, NULL);
}

/* An exec'd run: the sandbox in SANDBOX, entered by the program SANDBOX_PROGRAM names. Programs
 * that exec it (setpriv, prlimit) pass the environment on untouched. */
static void enter_named_sandbox(const char *argv0) {
    const char *spec = getenv("SANDBOX"), *program = getenv("SANDBOX_PROGRAM");
    if (spec == NULL || program == NULL) return;
    const char *name = strrchr(argv0, '/');
    if (strcmp(name ? name + 1 : argv0, program) != 0) return;
    char *copy = strdup(spec);
    unsetenv("SANDBOX");
    unsetenv("SANDBOX_PROGRAM");
    unsetenv("LD_PRELOAD");
    if (copy == NULL || sandbox_enter(copy) != 0) _exit(SANDBOX_FAILED);
    free(copy);
}

int __libc_start_main(main_fn main_, int argc, char **argv, void (*init)(void), void (*fini)(void),
                      void (*rtld_fini)(void), void *stack_end) {
    start_fn start = (start_fn)dlsym(RTLD_NEXT, "__libc_start_main");
    release_stop_signals();
    const char *control_env = getenv("FORKSERVER_FD");
    if (control_env == NULL) {
        enter_named_sandbox(argv[0]);
        return start(main_, argc, argv, init, fini, rtld_fini, stack_end);
    }
    program.start = start;
    program.main = main_;
    program.argc = argc;
    program.argv = argv;
    program.init = init;
    program.fini = fini;
    program.rtld_fini = rtld_fini;
    program.stack_end = stack_end;
    int control = atoi(control_env);
    signal(SIGCHLD, SIG_IGN);  /* keepers are reaped by the kernel */
    static char request[MAX_REQUEST + 1];
    for (;;) {
        union {
            char buffer[CMSG_SPACE(sizeof(int) * MAX_FDS)];
            struct cmsghdr align;
        } ancillary;
        struct iovec vector = {request, MAX_REQUEST};
        struct msghdr message = {0};
        message.msg_iov = &vector;
        message.msg_iovlen = 1;
        message.msg_control = ancillary.buffer;
        message.msg_controllen = sizeof ancillary.buffer;
        ssize_t length = recvmsg(control, &message, MSG_CMSG_CLOEXEC);
        if (length < 0 && errno == EINTR) continue;
        if (length <= 0) _exit(0);  /* the runner's process is gone */
        request[length] = '\0';
        int fds[MAX_FDS], count = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); c != NULL; c = CMSG_NXTHDR(&message, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            int here = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < here && count < MAX_FDS; i++)
                memcpy(&fds[count++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
        /* the working directory, the target numbers, then argv */
        static char *args[MAX_ARGS + 1];
        int targets[MAX_FDS], target_count = 0, arg_count = 0;
        char *cursor = request, *end = request + length;
        char *folder = cursor;
        cursor += strlen(cursor) + 1;
        char *numbers = cursor < end ? cursor : end;
        cursor += strlen(numbers) + 1;
        char *sandbox = cursor < end ? cursor : end;
        cursor += strlen(sandbox) + 1;
        int valid = !(message.msg_flags & (MSG_TRUNC | MSG_CTRUNC));
        for (char *number = strtok(numbers, ","); number != NULL && target_count < MAX_FDS;
             number = strtok(NULL, ",")) {
            targets[target_count] = atoi(number);
            valid &= targets[target_count++] > 2;  /* 0, 1 and 2 are stdin, stdout and stderr */
        }
        while (cursor < end && arg_count < MAX_ARGS) {
            args[arg_count++] = cursor;
            cursor += strlen(cursor) + 1;
        }
        args[arg_count] = NULL;
        valid &= cursor >= end && sandbox < end;  /* every argument fitted; a sandbox field is there */
        if (valid && count >= 4 && count == 4 + target_count && arg_count > 0) {
            pid_t server = getpid();
            pid_t keeper = fork();
            if (keeper == 0) {
                /* The server exits when its runner's process is gone; the keeper and its run go too. */
                if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != server) _exit(1);
                close(control);
                keep(folder, sandbox, args, arg_count, fds, count, targets);
            }
        }
        /* a request cut short or malformed gets no keeper: its status socket closes with no pid */
        for (int i = 0; i < count; i++) close(fds[i]);
    }
}
