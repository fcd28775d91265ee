/* The run's sandbox (sandbox.c): Landlock for files, seccomp for sockets. */
#ifndef SANDBOX_H
#define SANDBOX_H

/* A run that could not enter its sandbox exits with this status; workers/ffmpeg/runner.py
 * reads it as the service's failure, not the input's. */
#define SANDBOX_FAILED 125

/* Enter the sandbox `spec` describes (lines of "read <path>" and "write <path>"; the
 * string is cut up). 0, or -1 with the reason written to stderr. */
int sandbox_enter(char *spec);

#endif
