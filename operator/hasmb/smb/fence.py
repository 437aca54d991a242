"""The data-path fence: a server mutates the volume only while it is sure it owns it.

The handle store refuses a stale epoch, but nothing below hasmb-smbd fences the
data on a shared RWX volume: a process that froze (SIGSTOP, a cgroup freeze, a VM
stall) and thawed after its partner took over would otherwise execute the WRITE
still waiting in its socket buffer and put an old block over a newer one.

So ownership is a deadline on this process's own clock (CLOCK_BOOTTIME: it keeps
counting while the process, its cgroup or the whole machine is stopped or
suspended; CLOCK_MONOTONIC does not count a suspend). Grants extend it, each
computed from the moment its request was *sent* (so a grant that arrives late,
after a freeze, is already expired); the partner promises not to take over
until the same span has passed from when it *received* the request, which is
later. Every mutating system call (write, truncate, create, rename, unlink,
set attributes or times, allocate, punch hole, copy) runs inside `mutation()`,
in the thread that makes the call: the deadline is checked immediately before
it, and again right after (a call that finished past the deadline is counted
and logged as critical: the one window left, a freeze between the check and
the kernel entering the call, never stays silent). The rule and the timing
argument: docs/continuous-availability.md "Fencing".

The window between the check and the kernel entering the call is closed by the
kernel itself where it matters (`KillSwitch`, enabled in the hasmb-smbd process):
while any mutation is between its check and its end, a real-time timer is armed to
deliver SIGALRM (default action: terminate the process) KILL_SLACK after the
deadline. A thread frozen inside the window (SIGSTOP, a cgroup freeze) therefore
finds a fatal signal pending when it is thawed, and the process dies before that
thread runs another instruction in user space (a buffered write already under way
checks for a fatal signal before copying each page). A mutation that ends in time
disarms it; the timer costs two system calls per mutation.

A lapse is final for the holding: the server stops serving (the caller decides
how: exit 3, or hand over), and only `hold()` after a new ownership decision
arms the fence again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

log = logging.getLogger("hasmb.smb.fence")


def now() -> float:
    """Seconds on CLOCK_BOOTTIME: elapsed real time, suspend and freezes included."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class KillSwitchUnavailable(RuntimeError):
    """This process cannot be killed by its own timer (it is a PID namespace's init)."""


class Fenced(Exception):
    """This server may not mutate the volume: it does not own it, or cannot be sure.

    Raised before any system call was made. A request that meets it gets no
    reply: its connection is aborted, so the client replays to the new owner.
    """


# The kill timer fires this long after the deadline: before the partner's promise
# ends (hasmb.smb.pair.MARGIN, 0.05 s, after the deadline), so a thread frozen in the
# window always has its fatal signal pending before any successor can serve.
KILL_SLACK = 0.02


@dataclass(eq=False)
class KillSwitch:
    """One per process (the real-time interval timer is process-wide): the earliest
    deadline + KILL_SLACK among the mutations between their check and their end, armed
    with setitimer(ITIMER_REAL); SIGALRM must keep its default action (terminate)."""

    _armed: dict[int, float] = field(default_factory=dict)  # id(fence) -> BOOTTIME kill time
    _lock: threading.Lock = field(default_factory=threading.Lock)
    armings: int = 0

    @classmethod
    def for_this_process(cls) -> KillSwitch:
        # a handler would turn the kill into a Python callback run by the main thread
        # whenever it gets to it: the default action is the point
        if os.getpid() == 1:
            # a PID namespace's init never gets a signal of default action from inside
            # it: the timer would fire and nothing would happen (hasmb.cli.pid1)
            raise KillSwitchUnavailable(
                "the fence's kill switch cannot work in PID 1 (the kernel ignores its "
                "SIGALRM there): start hasmb-smbd through hasmb.cli.pid1.step_aside()"
            )
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        return cls()

    def arm(self, key: int, deadline: float) -> None:
        if math.isinf(deadline):
            return
        with self._lock:
            self._armed[key] = deadline + KILL_SLACK
            self._set_locked()
            self.armings += 1

    def disarm(self, key: int) -> None:
        with self._lock:
            if self._armed.pop(key, None) is not None:
                self._set_locked()

    def _set_locked(self) -> None:
        if not self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return
        # ITIMER_REAL counts real time; a past kill time fires at once
        left = min(self._armed.values()) - now()
        signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6))


@dataclass(eq=False)
class Fence:
    deadline: float = -math.inf  # CLOCK_BOOTTIME; +inf: unconditional (a lone owner)
    holding: bool = False
    source: str = "standby"  # what the last grant came from (for logs and /status)
    refused: int = 0  # mutations refused by the fence
    late: int = 0  # mutations that completed after the deadline (see module doc)
    # the most any of them overshot it: under KILL_SLACK in a process that is still
    # alive with the kill switch on (measured before the timer is disarmed)
    late_by: float = 0.0
    mutations: int = 0
    first_mutation: float = 0.0  # CLOCK_BOOTTIME of this holding's first mutation
    last_mutation: float = 0.0  # ... and of the end of its last one
    held_since: float = 0.0
    lapsed: asyncio.Event = field(default_factory=asyncio.Event)
    lapse_reason: str = ""
    _inflight: int = 0
    _lapsed_deadline: float = -math.inf  # the deadline a lapse ended (for late_by)
    _waiting: bool = False
    _drained: asyncio.Event = field(default_factory=asyncio.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    kill_switch: KillSwitch | None = None  # see the module doc

    # ------------------------------------------------------------ decisions
    def hold(self, until: float, source: str) -> None:
        """Start a holding (this server became the owner) with a first grant."""
        with self._lock:
            self.holding = True
            self.deadline = until
            self.source = source
            self.held_since = now()
            self.first_mutation = self.last_mutation = 0.0
            self.lapse_reason = ""
        self.lapsed.clear()
        self._bind_loop()
        log.info("fence armed (%s), valid %.2f s", source, until - now())

    def unconditional(self, source: str = "lone owner") -> None:
        """An owner nothing else can take over from (no partner configured)."""
        self.hold(math.inf, source)

    def grant(self, until: float, source: str) -> bool:
        """Extend the holding to `until` (never shortens it). False: it had lapsed."""
        with self._lock:
            if not self.holding:
                return False
            if now() >= self.deadline:
                self._lapse_locked(f"authority expired before a grant from {source} arrived")
                return False
            if until > self.deadline:
                self.deadline = until
                self.source = source
                if self._inflight and self.kill_switch is not None:
                    self.kill_switch.arm(id(self), until)
        return True

    def narrow(self, until: float, source: str) -> None:
        """Give up an unconditional holding for a bounded one (a standalone owner whose
        partner just confirmed it for the first time: from now on only grants count)."""
        with self._lock:
            if self.holding:
                self.deadline = until
                self.source = source

    def revoke(self, why: str) -> None:
        """Stop mutating now (handover, self-fencing, shutdown). Mutations already past
        their check finish; `quiesce()` waits for them."""
        with self._lock:
            was = self.holding
            self.holding = False
            self.deadline = -math.inf
            self.source = why
        if was:
            log.warning("fence revoked: %s", why)

    async def quiesce(self, limit: float = 5.0) -> bool:
        """Wait until no mutation is between its check and its end; True when none is."""
        self._bind_loop()
        with self._lock:
            if not self._inflight:
                return True
            self._drained.clear()
            self._waiting = True
        try:
            await asyncio.wait_for(self._drained.wait(), limit)
        except TimeoutError:
            log.error("%d mutation(s) still running %.1f s after the revoke", self._inflight, limit)
        finally:
            self._waiting = False
        return self._inflight == 0

    def remaining(self) -> float:
        return self.deadline - now()

    def valid(self) -> bool:
        return self.holding and now() < self.deadline

    # ------------------------------------------------------------ the check
    @contextlib.contextmanager
    def mutation(self, what: str) -> Iterator[None]:
        """Wrap exactly one mutating system call (any thread)."""
        with self._lock:
            t = now()
            if not self.holding or t >= self.deadline:
                self.refused += 1
                if self.holding:
                    self._lapse_locked(f"authority expired ({self.source}) before {what}")
                raise Fenced(f"{what} refused: not the owner ({self.source})")
            self._inflight += 1
            if self._inflight == 1 and self.kill_switch is not None:
                self.kill_switch.arm(id(self), self.deadline)
            if not self.first_mutation:
                self.first_mutation = t
        try:
            yield
        finally:
            with self._lock:
                # the end is read before the timer is disarmed: a process still alive
                # then ended every call before the kill time (deadline + KILL_SLACK)
                t = now()
                self._inflight -= 1
                if not self._inflight and self.kill_switch is not None:
                    self.kill_switch.disarm(id(self))
                if not self._inflight and self._waiting:
                    self._call_soon(self._drained.set)
                self.last_mutation = t
                self.mutations += 1
                # a revoke meanwhile is planned (quiesce waits for this call); a lapse
                # meanwhile, or a deadline passed during the call, is the residual window
                if (self.holding and t >= self.deadline) or (
                    not self.holding and self.lapse_reason
                ):
                    self.late += 1
                    ended = self.deadline if self.holding else self._lapsed_deadline
                    self.late_by = max(self.late_by, t - ended)
                    log.critical(
                        "%s completed %.3f s after this server's authority ended (%s): "
                        "it may have landed after a new owner served",
                        what,
                        t - ended,
                        self.source,
                    )
                    if self.holding:
                        self._lapse_locked(f"{what} outlived the authority")

    def check(self, what: str) -> None:
        """For steps that are not one system call but must not start unfenced."""
        with self.mutation(what):
            pass

    # ------------------------------------------------------------ lapse
    async def watch(self) -> None:
        """Fire `lapsed` when the deadline passes without a new grant."""
        self._bind_loop()
        while True:
            left = self.deadline - now() if self.holding else math.inf
            if self.holding and left <= 0:
                with self._lock:
                    if self.holding and now() >= self.deadline:
                        self._lapse_locked(f"no grant renewed it ({self.source})")
                continue
            await asyncio.sleep(min(max(left, 0.001), 0.05))

    def _lapse_locked(self, why: str) -> None:
        if self.holding:
            self._lapsed_deadline = self.deadline
        self.holding = False
        self.deadline = -math.inf
        if not self.lapse_reason:
            self.lapse_reason = why
            log.critical("fence lapsed: %s: no mutation from here on", why)
        self._call_soon(self.lapsed.set)

    def _call_soon(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn)

    def _bind_loop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()

    def status(self) -> dict[str, object]:
        left = self.deadline - now()
        return {
            "holding": self.holding,
            "validSeconds": (None if math.isinf(left) and left > 0 else round(max(left, 0.0), 3)),
            "source": self.source,
            "refused": self.refused,
            "late": self.late,
            "lateBy": round(self.late_by, 6),
            "mutations": self.mutations,
            "firstMutation": self.first_mutation,
            "lastMutation": self.last_mutation,
            "heldSince": self.held_since,
            "lapse": self.lapse_reason,
        }
