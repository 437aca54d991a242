"""The probe's pause / verify / resume: the gate parks the writers between requests,
an on-demand read-back judges every acknowledged block, and a stale overwrite made
while the writers were held (what a thawed old owner does) is reported once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from hasmb.probe.ca_client import CaTarget, HandleInfo
from hasmb.probe.pattern import BlockId, make_block
from hasmb.probe.runner import Gate, ProbeRun, ProbeSettings, judge_block

pytestmark = pytest.mark.unit

SIZE = 4096


def test_judge_block() -> None:
    data = make_block(BlockId(1, 3, 7), SIZE)
    assert judge_block(data, 3, 7, 1, SIZE) is None
    assert judge_block(data, 3, 5, 1, SIZE) is None  # newer than acked: a lost reply, fine
    assert judge_block(data, 3, 9, 1, SIZE) == "block 3: gen 7 < acked 9"
    assert judge_block(data, 4, 7, 1, SIZE) == "block 4: corrupt or missing (acked gen 7)"
    assert judge_block(data, 3, 7, 2, SIZE) == "block 3: corrupt or missing (acked gen 7)"
    assert judge_block(bytes(SIZE), 3, 1, 1, SIZE) == "block 3: corrupt or missing (acked gen 1)"


def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_gate_pauses_only_once_every_worker_is_parked() -> None:
    gate = Gate(2)
    in_request = threading.Event()
    finish_request = threading.Event()
    passed = [0, 0]
    stop = threading.Event()

    def worker(i: int, slow: bool) -> None:
        while not stop.is_set():
            gate.checkpoint()
            if slow and passed[i] == 1:  # the second request hangs until told
                in_request.set()
                finish_request.wait()
            passed[i] += 1
            time.sleep(0.001)
        gate.leave()

    threads = [threading.Thread(target=worker, args=(i, i == 1)) for i in range(2)]
    for t in threads:
        t.start()
    in_request.wait(5)
    assert not gate.pause(timeout=0.1)  # worker 1 is inside a request
    assert gate.paused and not gate.held
    finish_request.set()
    assert gate.pause(timeout=5)
    assert gate.held
    frozen = list(passed)
    time.sleep(0.05)
    assert passed == frozen  # nobody passed a checkpoint while held
    gate.resume()
    _until(lambda: passed[0] > frozen[0] and passed[1] > frozen[1])
    stop.set()
    gate.close()
    for t in threads:
        t.join(5)


def test_gate_counts_workers_that_ended_and_close_releases() -> None:
    gate = Gate(2)
    gate.leave()  # one worker gave up (its open failed)
    parked = threading.Event()

    def worker() -> None:
        gate.checkpoint()  # not paused yet: passes
        while not gate.paused:
            time.sleep(0.001)
        parked.set()
        gate.checkpoint()  # parks until close

    t = threading.Thread(target=worker)
    t.start()
    assert gate.pause(timeout=5)
    gate.close()
    t.join(5)
    assert not t.is_alive() and parked.is_set()
    assert not gate.held and not gate.pause(timeout=0)  # a closed gate holds nothing


@dataclass
class FakeFile:
    """An in-memory stand-in for CaFile: writes land in `data` by block index."""

    size: int
    data: dict[int, bytes] = field(default_factory=dict)
    handle: HandleInfo | None = None
    stalls: list[object] = field(default_factory=list)
    reclaims: list[str] = field(default_factory=list)
    in_flight: int = 0

    def open(self) -> HandleInfo:
        self.handle = HandleInfo(b"\0" * 16, uuid.uuid4(), True, 60_000)
        return self.handle

    def write(self, offset: int, data: bytes) -> int:
        self.in_flight += 1
        time.sleep(0.0005)
        self.data[offset // self.size] = data
        self.in_flight -= 1
        return len(data)

    def read(self, offset: int, length: int) -> bytes:
        self.in_flight += 1
        got = self.data.get(offset // self.size, bytes(length))
        self.in_flight -= 1
        return got

    def reclaim(self, reason: str = "") -> int:
        self.reclaims.append(reason)
        return 1

    def current_stall(self, now: float) -> float:
        return 0.0

    def close(self) -> None:
        self.handle = None


def _run(files: int = 2, blocks: int = 8) -> tuple[ProbeRun, list[FakeFile]]:
    settings = ProbeSettings(
        target=CaTarget("127.0.0.1", 445, "vms", "u", "p"),
        files=files,
        blocks=blocks,
        block_size=SIZE,
        read_every=3,
    )
    run = ProbeRun(settings)
    fakes = []
    for w in run.workers:
        fake = FakeFile(SIZE)
        w.file = fake  # type: ignore[assignment]
        fakes.append(fake)
    return run.start(), fakes


def test_pause_verify_resume_finds_a_stale_overwrite_once() -> None:
    run, fakes = _run()
    _until(lambda: all(min(w.acked.values(), default=0) >= 3 for w in run.workers))
    assert run.pause(timeout=5)
    assert all(f.in_flight == 0 for f in fakes)
    writes = run.writes()
    acked = run.acked()
    # nothing lost yet
    results = run.verify()
    assert [r.lost for r in results] == [[], []]
    assert [r.blocks for r in results] == [8, 8]
    assert all(f.reclaims == ["verify on demand: a fresh connection"] for f in fakes)
    # a thawed old owner writes generation 1 of block 5 over the newer one
    w0 = run.workers[0]
    fakes[0].data[5] = make_block(BlockId(w0.tag, 5, 1), SIZE)
    results = run.verify()
    want = acked[w0.path][5]
    assert results[0].lost == [f"block 5: gen 1 < acked {want}"] and results[1].lost == []
    assert run.writes() == writes  # still held: nothing written meanwhile
    assert w0.report.lost == [f"block 5: gen 1 < acked {want}"]  # reported once, not twice
    assert len(w0.report.lost_at) == 1
    run.resume()
    _until(lambda: run.writes() > writes + 20)
    report = run.stop(timeout=5)
    assert report.lost == 1 and report.errors == 0  # block 5 was rewritten since


def test_verify_refuses_unless_held() -> None:
    run, _ = _run(files=1)
    with pytest.raises(RuntimeError):
        run.verify()
    assert run.pause(timeout=5)
    run.verify()
    run.resume()
    with pytest.raises(RuntimeError):
        run.verify()
    report = run.stop(timeout=5)
    assert report.lost == 0 and report.errors == 0


def test_stop_while_paused_releases_the_workers_to_their_final_check() -> None:
    run, fakes = _run(files=1)
    _until(lambda: run.writes() > 10)
    assert run.pause(timeout=5)
    report = run.stop(timeout=5)
    assert not any(t.is_alive() for t in run._threads)
    assert report.lost == 0 and report.errors == 0
    assert fakes[0].handle is None  # closed
