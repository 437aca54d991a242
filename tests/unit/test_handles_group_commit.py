"""Group-commit batching logic (with a recording commit function as the backend)."""

from __future__ import annotations

import asyncio

import pytest

from hasmb.handles.group_commit import GroupCommitter, WriteOp, coalesce


class RecordingBackend:
    """Commits by recording the batch; each commit takes until it is released."""

    def __init__(self) -> None:
        self.batches: list[list[WriteOp]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_with: Exception | None = None
        self.reject: dict[int, Exception] = {}

    async def commit(self, ops: list[WriteOp]) -> dict[int, Exception]:
        await self.gate.wait()
        self.batches.append(ops)
        if self.fail_with is not None:
            raise self.fail_with
        return self.reject


def test_coalesce_keeps_last_op_per_id() -> None:
    ops = [WriteOp("put", 1), WriteOp("put", 2), WriteOp("delete", 1), WriteOp("put", 3)]
    assert coalesce(ops) == [WriteOp("delete", 1), WriteOp("put", 2), WriteOp("put", 3)]


async def test_lone_writer_commits_alone() -> None:
    backend = RecordingBackend()
    gc = GroupCommitter(backend.commit)
    await gc.submit(WriteOp("put", 1))
    await gc.submit(WriteOp("put", 2))
    assert [len(b) for b in backend.batches] == [1, 1]
    assert (gc.stats.writes, gc.stats.commits) == (2, 2)


async def test_writes_arriving_during_a_commit_share_the_next() -> None:
    backend = RecordingBackend()
    backend.gate.clear()
    gc = GroupCommitter(backend.commit)
    first = asyncio.create_task(gc.submit(WriteOp("put", 0)))
    await asyncio.sleep(0)  # let the first commit start and block on the gate
    rest = [asyncio.create_task(gc.submit(WriteOp("put", i))) for i in range(1, 21)]
    await asyncio.sleep(0)
    assert not first.done()
    backend.gate.set()
    await asyncio.gather(first, *rest)
    assert [len(b) for b in backend.batches] == [1, 20]
    assert gc.stats.commits == 2 and gc.stats.writes == 21 and gc.stats.largest_batch == 20


async def test_max_batch_splits() -> None:
    backend = RecordingBackend()
    backend.gate.clear()
    gc = GroupCommitter(backend.commit, max_batch=8)
    tasks = [asyncio.create_task(gc.submit(WriteOp("put", i))) for i in range(20)]
    await asyncio.sleep(0)
    backend.gate.set()
    await asyncio.gather(*tasks)
    assert [len(b) for b in backend.batches] == [8, 8, 4]


async def test_failure_reaches_every_writer_of_the_batch_only() -> None:
    backend = RecordingBackend()
    backend.gate.clear()
    gc = GroupCommitter(backend.commit)
    tasks = [asyncio.create_task(gc.submit(WriteOp("put", i))) for i in range(5)]
    await asyncio.sleep(0)
    backend.fail_with = RuntimeError("boom")
    backend.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    backend.fail_with = None
    await gc.submit(WriteOp("put", 9))
    assert gc.stats.failed_commits == 1


async def test_cancelled_caller_does_not_cancel_the_shared_commit() -> None:
    backend = RecordingBackend()
    backend.gate.clear()
    gc = GroupCommitter(backend.commit)
    a = asyncio.create_task(gc.submit(WriteOp("put", 1)))
    await asyncio.sleep(0)
    b = asyncio.create_task(gc.submit(WriteOp("put", 2)))
    c = asyncio.create_task(gc.submit(WriteOp("put", 3)))
    await asyncio.sleep(0)
    b.cancel()
    backend.gate.set()
    await asyncio.gather(a, c)
    with pytest.raises(asyncio.CancelledError):
        await b
    await gc.drain()
    assert [[op.persistent_id for op in batch] for batch in backend.batches] == [[1], [2, 3]]


def test_max_batch_must_be_positive() -> None:
    async def commit(ops: list[WriteOp]) -> None:
        return None

    with pytest.raises(ValueError):
        GroupCommitter(commit, max_batch=0)


async def test_single_ops_can_fail_while_the_rest_commits() -> None:
    backend = RecordingBackend()
    backend.gate.clear()
    backend.reject = {2: LookupError("no room")}
    gc = GroupCommitter(backend.commit)
    tasks = [
        asyncio.create_task(gc.submit(op))
        for op in (WriteOp("put", 1), WriteOp("put", 2), WriteOp("delete", 3), WriteOp("put", 2))
    ]
    await asyncio.sleep(0)
    backend.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] is None and results[2] is None
    # Both submissions of id 2 were coalesced into the op that failed.
    assert isinstance(results[1], LookupError) and isinstance(results[3], LookupError)
    assert gc.stats.failed_commits == 0
