"""file: backend specifics: crash leftovers, compaction, following through compaction."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from hasmb.handles import PersistentOpenRecord, StoreError, StoreMirror
from hasmb.handles.file_store import LOG_FILE, SNAPSHOT_FILE, FileHandleStore, encode_log_line


def rec(pid: int) -> PersistentOpenRecord:
    return PersistentOpenRecord(
        persistent_id=pid,
        volatile_id=pid,
        create_guid=uuid.uuid4().bytes,
        client_guid=bytes(16),
        share="data",
        path=f"f{pid}",
        desired_access=1,
        share_access=7,
        create_options=0,
        file_attributes=0x20,
        oplock_level=0,
        durable_timeout_ms=60000,
        user="alice",
    )


async def wait_for(pred: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_torn_tail_is_cut_off_by_the_next_owner(tmp_path: Path) -> None:
    store = FileHandleStore(tmp_path)
    await store.take_ownership("a")
    for pid in range(1, 6):
        await store.put(rec(pid))
    await store.close()
    # A crash in the middle of appending a batch leaves half a line.
    torn = encode_log_line({"e": 1, "p": rec(6).to_dict()})[:40]
    log = tmp_path / LOG_FILE
    log.write_bytes(log.read_bytes() + torn)

    new = FileHandleStore(tmp_path)
    assert await new.take_ownership("b") == 2
    assert sorted(r.persistent_id for r in await new.load_all()) == [1, 2, 3, 4, 5]
    # Appends after the recovery must not be glued to the torn half line.
    await new.put(rec(7))
    await new.close()
    again = FileHandleStore(tmp_path)
    assert sorted(r.persistent_id for r in await again.load_all()) == [1, 2, 3, 4, 5, 7]


async def test_compaction_keeps_state_and_bounds_the_log(tmp_path: Path) -> None:
    store = FileHandleStore(tmp_path, compact_bytes=20_000)
    await store.take_ownership("a")
    for round_ in range(5):
        await asyncio.gather(*(store.put(rec(pid)) for pid in range(round_ * 50, round_ * 50 + 60)))
        await asyncio.gather(*(store.delete(pid) for pid in range(round_ * 50, round_ * 50 + 30)))
    expected = {pid for pid in range(0, 260)} - {
        pid for r in range(5) for pid in range(r * 50, r * 50 + 30)
    }
    assert {r.persistent_id for r in await store.load_all()} == expected
    assert (tmp_path / LOG_FILE).stat().st_size <= 2 * max(
        20_000, (tmp_path / SNAPSHOT_FILE).stat().st_size
    ) + 50_000
    snapshot = json.loads((tmp_path / SNAPSHOT_FILE).read_bytes())
    assert snapshot["epoch"] == 1 and snapshot["records"]
    await store.close()
    reopened = FileHandleStore(tmp_path)
    assert {r.persistent_id for r in await reopened.load_all()} == expected


async def test_follower_stays_correct_across_compactions(tmp_path: Path) -> None:
    owner = FileHandleStore(tmp_path, compact_bytes=8_000)
    await owner.take_ownership("a")
    follower = FileHandleStore(tmp_path, poll_interval=0.01)
    mirror = StoreMirror()
    resets = 0

    async def run() -> None:
        nonlocal resets
        async for change in follower.follow():
            resets += change.kind == "reset"
            mirror.apply(change)

    task = asyncio.create_task(run())
    try:
        await wait_for(lambda: mirror.synced, "first reset")
        for pid in range(200):
            await owner.put(rec(pid))
            if pid % 3 == 0:
                await owner.delete(pid)
        want = {r.persistent_id for r in await owner.load_all()}
        await wait_for(lambda: set(mirror.records) == want, "mirror converges")
        assert resets >= 2, "the log was compacted, so the follower must have reloaded"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await owner.close()


async def test_every_write_is_on_disk_when_acknowledged(tmp_path: Path) -> None:
    store = FileHandleStore(tmp_path)
    await store.take_ownership("a")
    await store.put(rec(42))
    # Read the files directly, as another node mounting the volume would.
    other = FileHandleStore(tmp_path)
    assert [r.persistent_id for r in await other.load_all()] == [42]
    assert os.stat(tmp_path / LOG_FILE).st_size > 0
    await store.close()


async def test_a_hung_lock_holder_makes_writers_fail_not_hang(tmp_path: Path) -> None:
    store = FileHandleStore(tmp_path, lock_timeout=0.3)
    await store.take_ownership("a")
    fd = os.open(tmp_path / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another writer, frozen while holding it
        started = time.monotonic()
        with pytest.raises(StoreError, match="held by another writer"):
            await store.put(rec(1))
        assert time.monotonic() - started < 5
        fcntl.flock(fd, fcntl.LOCK_UN)
        await store.put(rec(1))
        assert [r.persistent_id for r in await store.load_all()] == [1]
    finally:
        os.close(fd)
        await store.close()


async def test_the_log_is_zero_filled_ahead_and_readers_stop_at_the_data(tmp_path: Path) -> None:
    store = FileHandleStore(tmp_path)
    await store.take_ownership("a")
    for pid in range(1, 4):
        await store.put(rec(pid))
    await store.delete(2)
    data = (tmp_path / LOG_FILE).read_bytes()
    end = data.rindex(b"\n") + 1
    # commits overwrite blocks that already exist instead of growing the file
    assert len(data) >= 64 * 1024 and end < len(data) and not data[end:].strip(b"\0")
    other = FileHandleStore(tmp_path)
    assert sorted(r.persistent_id for r in await other.load_all()) == [1, 3]
    await store.close()
    # the next owner compacts and writes after the data, not after the fill
    new = FileHandleStore(tmp_path)
    await new.take_ownership("b")
    await new.put(rec(4))
    await new.close()
    assert sorted(r.persistent_id for r in await other.load_all()) == [1, 3, 4]


async def test_a_follower_reads_a_line_longer_than_its_read_chunk(tmp_path: Path) -> None:
    owner = FileHandleStore(tmp_path)
    await owner.take_ownership("a")
    follower = FileHandleStore(tmp_path, poll_interval=0.01)
    mirror = StoreMirror()

    async def run() -> None:
        async for change in follower.follow():
            mirror.apply(change)

    task = asyncio.create_task(run())
    try:
        await wait_for(lambda: mirror.synced, "first reset")
        big = rec(1)
        big.extra = {"pad": "x" * 300_000}
        await owner.put(big)
        await owner.put(rec(2))
        await wait_for(lambda: set(mirror.records) == {1, 2}, "mirror converges")
        assert mirror.records[1].extra["pad"] == "x" * 300_000
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await owner.close()


async def test_lines_of_a_failed_batch_never_count_as_stored(tmp_path: Path) -> None:
    store = FileHandleStore(tmp_path)
    await store.take_ownership("a")
    await store.put(rec(1))
    log_fd = store._log_fd
    assert log_fd is not None
    # The next batch fails: its log descriptor refuses writes (EBADF) ...
    store._log_fd = os.open(tmp_path / LOG_FILE, os.O_RDONLY)
    with pytest.raises(StoreError):
        await store.put(rec(2))
    os.close(store._log_fd)
    store._log_fd = log_fd
    # ... after whole lines of it reached the file (as a short write would leave them).
    data = (tmp_path / LOG_FILE).read_bytes()
    end = data.rindex(b"\n") + 1
    ghosts = b"".join(encode_log_line({"e": 1, "p": rec(pid).to_dict()}) for pid in (2, 4))
    fd = os.open(tmp_path / LOG_FILE, os.O_WRONLY)
    try:
        os.pwrite(fd, ghosts, end)
    finally:
        os.close(fd)
    await store.put(rec(3))
    other = FileHandleStore(tmp_path)
    assert sorted(r.persistent_id for r in await other.load_all()) == [1, 3]
    await store.close()
