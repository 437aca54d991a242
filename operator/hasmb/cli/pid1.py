"""Never be PID 1: the fence's kill switch needs the kernel's default action.

The first process of a container is the init of its PID namespace, and the kernel
drops every signal sent to such a process from inside the namespace whose action is
the default one (pid_namespaces(7)), a timer's SIGALRM included. The fence's
KillSwitch (hasmb.smb.fence) is exactly such a signal, so in a container it would
never fire: a 12-freeze hack/chaos run found an owner frozen between a WRITE's check
and its system call that thawed 4.4 s after its authority ended, was not killed, and
put an old block over a newer one.

So when hasmb-smbd finds itself PID 1 it forks: the child serves, the parent only
relays the signals a kubelet sends (SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2), reaps
whatever is re-parented to it, and exits as the child did (its exit code, or 128 +
the signal that killed it, as a shell reports it).
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def exit_code(status: int) -> int:
    """A wait status as the exit code a shell (and the kubelet's report) would show."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def step_aside() -> None:
    """Return in a process that is not PID 1; as PID 1, never return (see module doc)."""
    if os.getpid() != 1:
        return
    child = os.fork()
    if child == 0:
        return

    # the parent: nothing but relaying and reaping from here on
    def relay(signum: int, _frame: FrameType | None) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in RELAYED:
        signal.signal(sig, relay)
    while True:
        pid, status = os.wait()  # the child is ours until it is reaped here
        if pid == child:
            sys.stdout.flush()
            os._exit(exit_code(status))
