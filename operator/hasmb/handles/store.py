"""The HandleStore interface shared by every backend, and the fencing logic.

A backend implements four primitives: raise the epoch atomically
(`_raise_epoch`), commit a batch of puts/deletes atomically-per-op under an
epoch check (`_commit`), read everything (`load_all`) and stream changes
(`follow`). This class adds what is common: the owner's epoch, the fence (a
store that once saw a newer epoch refuses every later write without asking
the backend again), and group commit.
"""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from hasmb.handles.errors import NotOwnerError, StaleEpochError
from hasmb.handles.group_commit import CommitStats, GroupCommitter, WriteOp
from hasmb.handles.record import PersistentOpenRecord

log = logging.getLogger("hasmb.handles")


@dataclass(frozen=True)
class EpochInfo:
    """The ownership record a store holds: the current epoch and who raised it."""

    epoch: int
    owner: str


@dataclass(frozen=True)
class StoreChange:
    """One event from `HandleStore.follow()`.

    - "reset": the complete current state (`records`, `epoch`); the follower
      replaces what it had. Always the first event, and sent again whenever
      the backend lost continuity (compaction, watch expiry).
    - "put": `record` was created or changed.
    - "delete": `persistent_id` is gone.
    - "epoch": ownership moved to `epoch`/`owner`, and the move is fenced:
      every change written under an older epoch was delivered before this
      event, and none can follow it. (A reset's epoch means the same.)
    """

    kind: Literal["reset", "put", "delete", "epoch"]
    records: tuple[PersistentOpenRecord, ...] = ()
    record: PersistentOpenRecord | None = None
    persistent_id: int = 0
    epoch: int = 0
    owner: str = ""


@dataclass
class StoreMirror:
    """A follower's copy of the store, kept current by applying StoreChanges."""

    records: dict[int, PersistentOpenRecord] = field(default_factory=dict)
    epoch: int = 0
    owner: str = ""
    synced: bool = False

    def apply(self, change: StoreChange) -> None:
        if change.kind == "reset":
            self.records = {r.persistent_id: r for r in change.records}
            self.epoch = change.epoch
            self.owner = change.owner
            self.synced = True
        elif change.kind == "put" and change.record is not None:
            self.records[change.record.persistent_id] = change.record
        elif change.kind == "delete":
            self.records.pop(change.persistent_id, None)
        elif change.kind == "epoch":
            self.epoch = change.epoch
            self.owner = change.owner


class HandleStore(ABC):
    """Durable, fenced, group-committed storage of persistent-open records."""

    def __init__(self, max_batch: int = 128) -> None:
        self._epoch: int | None = None
        self._owner = ""
        self._fence: StaleEpochError | None = None
        self._committer = GroupCommitter(self._guarded_commit, max_batch=max_batch)

    @property
    def epoch(self) -> int | None:
        """The epoch this store object writes under (None until take_ownership)."""
        return self._epoch

    @property
    def stats(self) -> CommitStats:
        return self._committer.stats

    @property
    def fenced(self) -> bool:
        return self._fence is not None

    async def take_ownership(self, owner: str, epoch: int | None = None) -> int:
        """Raise the store's epoch atomically and write under it from now on.

        Without `epoch` the new epoch is the current one plus one (a standalone
        server taking over its own store after a restart). With `epoch` (the
        ownership record of a cluster decided it) the store moves to exactly
        that epoch, or raises StaleEpochError if it is already at or beyond it.
        """
        new = await self._raise_epoch(owner, epoch)
        self._epoch = new
        self._owner = owner
        self._fence = None
        log.info("handle store: %s owns it at epoch %d", owner, new)
        return new

    async def put(self, record: PersistentOpenRecord) -> None:
        """Store `record` (stamped with the owner's epoch); returns once durable."""
        epoch = self._writable_epoch()
        stamped = dataclasses.replace(record, epoch=epoch)
        await self._committer.submit(WriteOp("put", stamped.persistent_id, stamped))

    async def delete(self, persistent_id: int) -> None:
        """Remove the record of `persistent_id`; returns once durable."""
        self._writable_epoch()
        await self._committer.submit(WriteOp("delete", persistent_id))

    def _writable_epoch(self) -> int:
        if self._fence is not None:
            raise self._fence
        if self._epoch is None:
            raise NotOwnerError("take_ownership() before writing")
        return self._epoch

    async def _guarded_commit(self, ops: list[WriteOp]) -> Mapping[int, Exception] | None:
        epoch = self._writable_epoch()
        try:
            return await self._commit(ops, epoch)
        except StaleEpochError as exc:
            if self._fence is None:
                log.error(
                    "handle store: fenced, %s wrote under epoch %d but the store is at %d; "
                    "another owner took over",
                    self._owner,
                    exc.mine,
                    exc.current,
                )
            self._fence = exc
            raise

    async def close(self) -> None:
        """Finish in-flight writes and release the backend's resources."""
        await self._committer.aclose()
        await self._close()

    async def __aenter__(self) -> HandleStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abstractmethod
    async def _raise_epoch(self, owner: str, requested: int | None) -> int:
        """Atomically set the epoch to `requested` or current+1; return it."""

    @abstractmethod
    async def _commit(self, ops: list[WriteOp], epoch: int) -> Mapping[int, Exception] | None:
        """Durably apply `ops` if the stored epoch is still `epoch`, else StaleEpochError.

        May return errors of single ops (by persistent id) that were left out
        while the rest was committed.
        """

    @abstractmethod
    async def read_epoch(self) -> EpochInfo:
        """The ownership record as the backend holds it now (epoch 0 if never owned)."""

    @abstractmethod
    async def load_all(self) -> list[PersistentOpenRecord]:
        """Every stored record."""

    @abstractmethod
    def follow(self) -> AsyncIterator[StoreChange]:
        """Stream the store's state: a "reset" first, then changes as they land."""

    @abstractmethod
    async def _close(self) -> None:
        """Release backend resources."""
