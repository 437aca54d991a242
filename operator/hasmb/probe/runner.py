"""The probe's workload: write-through pattern writes with read-back, measuring stalls.

One worker thread per file (smbprotocol is synchronous). Each worker cycles
over the file's blocks, writing the next generation of each with
write-through, and reads back a block now and then. The report lists every
stall, every error surfaced to the caller (what an application would see),
and every acknowledged write missing at the final verification.

With `ProbeSettings.witness` on, a WitnessAgent registers with the SVM's
witness and moves the handles when it is told to (see witness_agent.py); the
report's "witness" part says what it received and did.

A driver can hold the writers still and check the volume at a moment of its
choosing (hack/chaos does, around a thaw): `ProbeRun.pause()` returns once no
worker has a request in flight (each worker parks at a `Gate` before its next
request), `ProbeRun.verify()` then reads every acknowledged block back through a
fresh connection (a DH2C reclaim, retried like any other request) and reports each
block older than its last acknowledged generation, and `ProbeRun.resume()` lets
the workers go on. A stale overwrite (an old owner applying a write after clients
wrote newer data elsewhere) is only visible that way: a block rewritten after it
hides it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from hasmb.probe.ca_client import CaFile, CaTarget, Stall
from hasmb.probe.pattern import BlockId, make_block, parse_block
from hasmb.probe.witness_agent import WitnessAgent, WitnessSettings


@dataclass(frozen=True)
class ProbeSettings:
    target: CaTarget
    files: int = 1
    blocks: int = 64
    block_size: int = 64 * 1024
    duration: float = 10.0
    read_every: int = 8
    prefix: str = "hasmb-probe"
    reclaim_deadline: float = 60.0
    request_timeout: float = 5.0
    connect_timeout: float | None = None  # None = request_timeout
    batch_oplock: bool = False  # only to get durable handles from non-CA servers
    # off by default for library callers; the hasmb-probe CLI defaults to "auto"
    witness: WitnessSettings = field(default_factory=WitnessSettings)


@dataclass
class WorkerReport:
    path: str
    persistent: bool = False
    writes: int = 0
    reads: int = 0
    errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    stalls: list[dict[str, Any]] = field(default_factory=list)
    # time.monotonic() of each entry of errors / lost, so a driver can tell which
    # event of its own it belongs to
    error_at: list[float] = field(default_factory=list)
    lost_at: list[float] = field(default_factory=list)


@dataclass
class ProbeReport:
    workers: list[WorkerReport]
    started: float
    ended: float
    witness: dict[str, Any] | None = None  # WitnessAgent.report(); None when off

    @property
    def errors(self) -> int:
        return sum(len(w.errors) for w in self.workers)

    @property
    def lost(self) -> int:
        return sum(len(w.lost) for w in self.workers)

    @property
    def stall_seconds(self) -> list[float]:
        return sorted(s["seconds"] for w in self.workers for s in w.stalls)

    def to_json(self) -> str:
        return json.dumps(
            {
                "errors": self.errors,
                "lost": self.lost,
                "stalls": self.stall_seconds,
                "workers": [asdict(w) for w in self.workers],
                "seconds": self.ended - self.started,
                "witness": self.witness,
            },
            indent=2,
        )


@dataclass
class VerifyResult:
    """One on-demand read-back of every acknowledged block of one file."""

    path: str
    started: float  # time.monotonic()
    seconds: float = 0.0
    blocks: int = 0  # acknowledged blocks read back
    lost: list[str] = field(default_factory=list)  # every block found behind its ack
    errors: list[str] = field(default_factory=list)  # reads that failed


def judge_block(data: bytes, index: int, acked: int, tag: int, size: int) -> str | None:
    """Why block `index` read back as `data` breaks the acknowledgement of generation
    `acked` of file `tag` (a lost write), or None when it holds that generation or a
    newer one. A newer one is fine: a write whose reply never came may have been applied."""
    got = parse_block(data, size)
    if got is None or got.index != index or got.file_tag != tag:
        return f"block {index}: corrupt or missing (acked gen {acked})"
    if got.generation < acked:
        return f"block {index}: gen {got.generation} < acked {acked}"
    return None


class Gate:
    """Parks worker threads between their requests while a driver holds them paused.

    Each worker calls `checkpoint()` before every request it makes and `leave()` when
    it ends. While paused, `checkpoint()` blocks and the worker counts as parked;
    `pause()` returns True once every worker still running is parked, so none has a
    request in flight. A worker inside a request parks when that request ends: it is
    bounded by the request's own reclaim deadline, and `pause()` returns False when
    its timeout comes first (the gate stays paused: call it again, or `resume()`).
    `close()` (the workload stopping) releases every worker for good.
    """

    def __init__(self, workers: int) -> None:
        self._cond = threading.Condition()
        self._workers = workers
        self._parked = 0
        self._left = 0
        self._paused = False
        self._closed = False

    def checkpoint(self) -> None:
        with self._cond:
            if not self._paused or self._closed:
                return
            self._parked += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: not self._paused or self._closed)
            finally:
                self._parked -= 1

    def leave(self) -> None:
        with self._cond:
            self._left += 1
            self._cond.notify_all()

    def _all_parked(self) -> bool:
        return self._paused and self._parked + self._left >= self._workers

    def pause(self, timeout: float | None = None) -> bool:
        with self._cond:
            if self._closed:
                return False
            self._paused = True
            return self._cond.wait_for(self._all_parked, timeout)

    @property
    def held(self) -> bool:
        """Paused, and every running worker is parked (nothing in flight)."""
        with self._cond:
            return not self._closed and self._all_parked()

    @property
    def paused(self) -> bool:
        with self._cond:
            return self._paused

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _stall_dict(stall: Stall) -> dict[str, Any]:
    return {
        "seconds": round(stall.seconds, 4),
        "attempts": stall.attempts,
        "reason": stall.reason,
        "at": stall.started,
        "trail": stall.trail,
    }


class Worker:
    def __init__(
        self,
        settings: ProbeSettings,
        index: int,
        stop: threading.Event,
        gate: Gate | None = None,
    ) -> None:
        self.settings = settings
        self.tag = index + 1
        self.stop = stop
        self.gate = gate or Gate(1)
        self.path = f"{settings.prefix}-{index}.bin"
        self.report = WorkerReport(self.path)
        self.acked: dict[int, int] = {}  # block index -> last acknowledged generation
        # (block, acked generation) already reported lost: a later read-back that finds
        # the same stale block again (nothing rewrote it yet) is not a second loss
        self._reported: set[tuple[int, int]] = set()
        self.file = CaFile(
            settings.target,
            self.path,
            reclaim_deadline=settings.reclaim_deadline,
            request_timeout=settings.request_timeout,
            connect_timeout=settings.connect_timeout,
            batch_oplock=settings.batch_oplock,
        )
        self.current_stall_since: float | None = None

    def _check(self, index: int, data: bytes) -> str | None:
        """The block's verdict (None: fine); a loss not reported before is recorded."""
        want = self.acked.get(index)
        if want is None:
            return None
        verdict = judge_block(data, index, want, self.tag, self.settings.block_size)
        if verdict is not None and (index, want) not in self._reported:
            self._reported.add((index, want))
            self._lost(verdict)
        return verdict

    def _lost(self, what: str) -> None:
        self.report.lost.append(what)
        self.report.lost_at.append(time.monotonic())

    def _error(self, what: str) -> None:
        self.report.errors.append(what)
        self.report.error_at.append(time.monotonic())

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.gate.leave()

    def _run(self) -> None:
        size = self.settings.block_size
        rng = random.Random(self.tag)
        try:
            info = self.file.open()
            self.report.persistent = info.persistent
        except Exception as exc:
            self._error(f"open: {exc!r}")
            return
        generation = 0
        try:
            while not self.stop.is_set():
                generation += 1
                for index in range(self.settings.blocks):
                    self.gate.checkpoint()
                    if self.stop.is_set():
                        break
                    data = make_block(BlockId(self.tag, index, generation), size)
                    try:
                        self.file.write(index * size, data)
                    except Exception as exc:
                        self._error(f"write block {index}: {exc!r}")
                        continue
                    self.acked[index] = generation
                    self.report.writes += 1
                    if self.report.writes % self.settings.read_every == 0 and self.acked:
                        probe = rng.choice(list(self.acked))
                        self.gate.checkpoint()
                        if self.stop.is_set():
                            break
                        try:
                            self._check(probe, self.file.read(probe * size, size))
                            self.report.reads += 1
                        except Exception as exc:
                            self._error(f"read block {probe}: {exc!r}")
            self.verify()
        finally:
            self.report.stalls = [_stall_dict(s) for s in self.file.stalls]
            try:
                self.file.close()
            except Exception as exc:
                self._error(f"close: {exc!r}")

    def verify(self) -> tuple[int, list[str]]:
        """Read back every acknowledged block: (blocks read, verdicts of those found lost)."""
        size = self.settings.block_size
        read, lost = 0, []
        for index in sorted(self.acked):
            try:
                verdict = self._check(index, self.file.read(index * size, size))
            except Exception as exc:
                self._error(f"verify block {index}: {exc!r}")
                continue
            read += 1
            if verdict is not None:
                lost.append(verdict)
        return read, lost

    def verify_now(self) -> VerifyResult:
        """Between requests (the worker parked at its gate, so no other thread uses the
        file): reconnect afresh (a new connection and a DH2C reclaim, through whoever
        serves the address now), then read back every acknowledged block."""
        result = VerifyResult(self.path, started=time.monotonic())
        errors_before = len(self.report.errors)
        if self.file.handle is None:
            self._error("verify: no open handle")
        else:
            try:
                self.file.reclaim("verify on demand: a fresh connection")
            except Exception as exc:
                self._error(f"verify: reconnect: {exc!r}")
            else:
                result.blocks, result.lost = self.verify()
        result.errors = self.report.errors[errors_before:]
        result.seconds = time.monotonic() - result.started
        return result


class ProbeRun:
    """The workload running in the background, observable while it runs.

    `start()` launches the workers; `current_stall()` is how long the worst-off
    worker has been waiting right now; `stalls()` every finished stall so far;
    `pause()` / `verify()` / `resume()` hold the writers still and read every block
    back on demand; `stop()` ends the I/O, verifies every acknowledged block and
    returns the report.
    """

    def __init__(self, settings: ProbeSettings, first_index: int = 0) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        self.gate = Gate(settings.files)
        self.workers = [
            Worker(settings, first_index + i, self.stop_event, self.gate)
            for i in range(settings.files)
        ]
        self._threads = [
            threading.Thread(target=w.run, name=f"probe-{w.path}", daemon=True)
            for w in self.workers
        ]
        self.started = 0.0
        self.witness = WitnessAgent(
            settings.witness,
            settings.target,
            files=lambda: [w.file for w in self.workers],
            ready=self.ready,
            tag=f"-{first_index}" if first_index else "",
        )

    def start(self) -> ProbeRun:
        self.started = time.time()
        for thread in self._threads:
            thread.start()
        self.witness.start()
        return self

    def current_stall(self) -> float:
        now = time.monotonic()
        return max((w.file.current_stall(now) for w in self.workers), default=0.0)

    def stalls(self) -> list[Stall]:
        return [s for w in self.workers for s in list(w.file.stalls)]

    def writes(self) -> int:
        return sum(w.report.writes for w in self.workers)

    def errors(self) -> int:
        return sum(len(w.report.errors) for w in self.workers)

    def acked(self) -> dict[str, dict[int, int]]:
        """Per file, the last acknowledged generation of each block written so far."""
        return {w.path: dict(w.acked) for w in self.workers}

    def pause(self, timeout: float | None = None) -> bool:
        """Stop issuing requests. True once no worker has a request in flight; False when
        `timeout` passed first (a request still running: it ends within its reclaim
        deadline; the probe stays paused either way until `resume()`)."""
        return self.gate.pause(timeout)

    def verify(self) -> list[VerifyResult]:
        """While paused (after a `pause()` that returned True): read back every
        acknowledged block of every file through a fresh connection. Losses also go
        to the report (`WorkerReport.lost` with `lost_at`), once per block and ack."""
        if not self.gate.held:
            raise RuntimeError("ProbeRun.verify() needs the probe paused with nothing in flight")
        return [w.verify_now() for w in self.workers]

    def resume(self) -> None:
        self.gate.resume()

    def ready(self) -> bool:
        """Every worker has its handle open (or gave up trying)."""
        return all(w.file.handle is not None or w.report.errors for w in self.workers)

    def stop(self, timeout: float | None = None) -> ProbeReport:
        self.stop_event.set()
        self.gate.close()  # a paused worker goes on to its final verification
        for thread in self._threads:
            thread.join(timeout)
        witness = self.witness.stop() if self.settings.witness.mode != "off" else None
        return ProbeReport([w.report for w in self.workers], self.started, time.time(), witness)


def run_probe(settings: ProbeSettings, stop: threading.Event | None = None) -> ProbeReport:
    """Run the workload for settings.duration seconds (or until stop is set)."""
    stop = stop or threading.Event()
    run = ProbeRun(settings).start()
    stop.wait(settings.duration)
    return run.stop()
