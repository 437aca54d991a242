"""A deduplicating work queue: a key is never reconciled by two workers at once.

Adding a key that is queued is a no-op; adding one that is being processed marks
it dirty so it runs once more afterwards (the controller-runtime discipline),
which makes bursts of watch events collapse into one pass. Keys added by the
periodic resync wait behind keys added by events, so a failover never queues
behind a full resync.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable


class WorkQueue:
    def __init__(self) -> None:
        self._high: deque[Hashable] = deque()
        self._low: deque[Hashable] = deque()
        self._queued: dict[Hashable, bool] = {}  # key -> queued at low priority
        self._active: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._wakeup = asyncio.Event()

    def add(self, key: Hashable, low: bool = False) -> None:
        if key in self._active:
            self._dirty.add(key)
            return
        queued_low = self._queued.get(key)
        if queued_low is None:
            self._queued[key] = low
            (self._low if low else self._high).append(key)
            self._wakeup.set()
        elif queued_low and not low:
            self._low.remove(key)
            self._queued[key] = False
            self._high.append(key)

    def add_after(self, key: Hashable, delay: float) -> None:
        """Add `key` in `delay` seconds (the earliest pending request wins)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> Hashable:
        while not (self._high or self._low):
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._high.popleft() if self._high else self._low.popleft()
        del self._queued[key]
        self._active.add(key)
        if self._high or self._low:
            self._wakeup.set()  # another worker may take the next one
        return key

    def done(self, key: Hashable) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def __len__(self) -> int:
        return len(self._queued)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
