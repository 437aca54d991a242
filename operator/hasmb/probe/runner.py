"""The probe's workload: write-through pattern writes with read-back, measuring stalls.

One worker thread per file (smbprotocol is synchronous). Each worker cycles
over the file's blocks, writing the next generation of each with
write-through, and reads back a block now and then. The report lists every
stall, every error surfaced to the caller (what an application would see),
and every acknowledged write missing at the final verification.

With `ProbeSettings.witness` on, a WitnessAgent registers with the SVM's
witness and moves the handles when it is told to (see witness_agent.py); the
report's "witness" part says what it received and did.
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


def _stall_dict(stall: Stall) -> dict[str, Any]:
    return {
        "seconds": round(stall.seconds, 4),
        "attempts": stall.attempts,
        "reason": stall.reason,
        "at": stall.started,
        "trail": stall.trail,
    }


class Worker:
    def __init__(self, settings: ProbeSettings, index: int, stop: threading.Event) -> None:
        self.settings = settings
        self.tag = index + 1
        self.stop = stop
        self.path = f"{settings.prefix}-{index}.bin"
        self.report = WorkerReport(self.path)
        self.acked: dict[int, int] = {}  # block index -> last acknowledged generation
        self.file = CaFile(
            settings.target,
            self.path,
            reclaim_deadline=settings.reclaim_deadline,
            request_timeout=settings.request_timeout,
            connect_timeout=settings.connect_timeout,
            batch_oplock=settings.batch_oplock,
        )
        self.current_stall_since: float | None = None

    def _check(self, index: int, data: bytes) -> None:
        want = self.acked.get(index)
        if want is None:
            return
        got = parse_block(data, self.settings.block_size)
        if got is None or got.index != index or got.file_tag != self.tag:
            self._lost(f"block {index}: corrupt or missing (acked gen {want})")
        elif got.generation < want:
            self._lost(f"block {index}: gen {got.generation} < acked {want}")

    def _lost(self, what: str) -> None:
        self.report.lost.append(what)
        self.report.lost_at.append(time.monotonic())

    def _error(self, what: str) -> None:
        self.report.errors.append(what)
        self.report.error_at.append(time.monotonic())

    def run(self) -> None:
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

    def verify(self) -> None:
        size = self.settings.block_size
        for index in sorted(self.acked):
            try:
                self._check(index, self.file.read(index * size, size))
            except Exception as exc:
                self._error(f"verify block {index}: {exc!r}")


class ProbeRun:
    """The workload running in the background, observable while it runs.

    `start()` launches the workers; `current_stall()` is how long the worst-off
    worker has been waiting right now; `stalls()` every finished stall so far;
    `stop()` ends the I/O, verifies every acknowledged block and returns the report.
    """

    def __init__(self, settings: ProbeSettings, first_index: int = 0) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        self.workers = [
            Worker(settings, first_index + i, self.stop_event) for i in range(settings.files)
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

    def ready(self) -> bool:
        """Every worker has its handle open (or gave up trying)."""
        return all(w.file.handle is not None or w.report.errors for w in self.workers)

    def stop(self, timeout: float | None = None) -> ProbeReport:
        self.stop_event.set()
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
