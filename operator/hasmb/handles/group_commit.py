"""Group commit: many concurrent writes share one round trip (or one fsync).

There is at most one commit in flight. Writes that arrive while it runs queue
up and all go out together in the next one, so under load the batch size
grows to match the offered rate and the cost per write falls, while a lone
writer is never delayed by a timer. Within a batch only the last operation on
each persistent id is sent (they are last-writer-wins states), but every
caller is answered only after the batch carrying its operation is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from hasmb.handles.record import PersistentOpenRecord


@dataclass(frozen=True)
class WriteOp:
    """A put (record set) or delete (record None) of one persistent id."""

    kind: Literal["put", "delete"]
    persistent_id: int
    record: PersistentOpenRecord | None = None


@dataclass
class CommitStats:
    """Counters that show how well writes are batched."""

    writes: int = 0
    commits: int = 0
    # Backend write requests (fsyncs, txns, CAS calls) that carried commits.
    round_trips: int = 0
    failed_commits: int = 0
    largest_batch: int = 0


def coalesce(ops: list[WriteOp]) -> list[WriteOp]:
    """Keep only the last operation per persistent id, in first-seen id order."""
    last: dict[int, WriteOp] = {}
    for op in ops:
        last[op.persistent_id] = op
    return list(last.values())


# A commit either raises (the whole batch failed) or returns the ops that
# failed individually, by persistent id (e.g. a record that did not fit).
CommitFn = Callable[[list[WriteOp]], Awaitable[Mapping[int, Exception] | None]]


class GroupCommitter:
    """Batches submitted writes into calls of `commit`, one call at a time."""

    def __init__(self, commit: CommitFn, max_batch: int = 128) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._commit = commit
        self._max_batch = max_batch
        self._pending: list[tuple[WriteOp, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self.stats = CommitStats()

    async def submit(self, op: WriteOp) -> None:
        """Queue `op` and return once the batch that carries it is committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((op, fut))
        self.stats.writes += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="hasmb-group-commit")
        # The commit goes on even if this caller is cancelled: others share it.
        await asyncio.shield(fut)

    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
            ops = coalesce([op for op, _ in batch])
            self.stats.commits += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            try:
                failed = await self._commit(ops) or {}
            except asyncio.CancelledError:
                for _, fut in batch + self._pending:
                    if not fut.done():
                        fut.cancel()
                self._pending.clear()
                raise
            except Exception as exc:
                self.stats.failed_commits += 1
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for op, fut in batch:
                    if fut.done():
                        continue
                    error = failed.get(op.persistent_id)
                    if error is None:
                        fut.set_result(None)
                    else:
                        fut.set_exception(error)

    async def drain(self) -> None:
        """Wait until nothing is queued or in flight."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])

    async def aclose(self) -> None:
        await self.drain()
