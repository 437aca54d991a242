"""A standby's background follower: keeps a StoreMirror current.

On takeover the new owner raises the epoch and then waits until its follower
has reached that epoch (`wait_epoch`); every backend delivers all changes
written under older epochs before it reports the new one, so at that moment
the mirror is the complete state and no cold load_all() is needed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from hasmb.handles.errors import StoreClosedError, StoreError
from hasmb.handles.store import HandleStore, StoreChange, StoreMirror
from hasmb.tasks import cancel_and_wait

log = logging.getLogger("hasmb.handles")


class StoreFollower:
    """Runs `store.follow()` in a task, applying every change to `mirror`."""

    def __init__(
        self,
        store: HandleStore,
        *,
        retry_delay: float = 1.0,
        on_change: Callable[[StoreChange, StoreMirror], None] | None = None,
    ) -> None:
        self.store = store
        self.retry_delay = retry_delay
        # Called after each change is applied (e.g. to index locks on a standby).
        self.on_change = on_change
        self.mirror = StoreMirror()
        self.last_error: Exception | None = None
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="hasmb-store-follower")

    async def _run(self) -> None:
        while True:
            try:
                async for change in self.store.follow():
                    self.mirror.apply(change)
                    if self.on_change is not None:
                        self.on_change(change, self.mirror)
                    async with self._changed:
                        self._changed.notify_all()
            except StoreClosedError:
                self.mirror.synced = False
                return
            except StoreError as exc:
                self.last_error = exc
                log.warning("following the handle store failed, retrying: %s", exc)
            # Until the next reset the mirror may miss changes.
            self.mirror.synced = False
            await asyncio.sleep(self.retry_delay)

    async def wait_until(self, pred: Callable[[StoreMirror], bool]) -> None:
        """Wait until `pred(mirror)` holds (bound it with asyncio.timeout)."""
        async with self._changed:
            await self._changed.wait_for(lambda: pred(self.mirror))

    async def wait_synced(self) -> None:
        await self.wait_until(lambda m: m.synced)

    async def wait_epoch(self, epoch: int) -> None:
        """Wait until the mirror is complete up to the fence of `epoch`."""
        await self.wait_until(lambda m: m.synced and m.epoch >= epoch)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
