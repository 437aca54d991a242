"""What every reconcile shares: the API client, the cached view and the work queue."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from hasmb.controller.store import Store
from hasmb.controller.workqueue import WorkQueue
from hasmb.kube.client import ApiError, KubeClient

log = logging.getLogger("hasmb.operator")

# ("svm" | "pair", namespace, name)
WorkKey = tuple[str, str, str]
Reconcile = Callable[["Runtime", str, str], Awaitable[float | None]]


@dataclass
class Runtime:
    kube: KubeClient
    store: Store = field(default_factory=Store)
    queue: WorkQueue = field(default_factory=WorkQueue)
    workers: int = 4
    resync_seconds: float = 30.0
    clock: Callable[[], float] = time.time
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Per SVM: when its current failover was first observed (for takeover durations).
    failure_seen: dict[tuple[str, str], float] = field(default_factory=dict)
    # Per pair: in-flight takeover/giveback bookkeeping (status is the durable copy).
    pair_ops: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def enqueue_svm(self, namespace: str, name: str) -> None:
        self.queue.add(("svm", namespace, name))

    def enqueue_pair(self, namespace: str, name: str) -> None:
        self.queue.add(("pair", namespace, name))

    def start(self, handlers: dict[str, Reconcile]) -> None:
        for i in range(self.workers):
            self.tasks.append(asyncio.create_task(self._worker(handlers), name=f"reconcile-{i}"))
        self.tasks.append(asyncio.create_task(self._resync(), name="resync"))

    async def stop(self) -> None:
        self.queue.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    async def _worker(self, handlers: dict[str, Reconcile]) -> None:
        while True:
            key = await self.queue.get()
            try:
                kind, namespace, name = _split(key)
                requeue = await handlers[kind](self, namespace, name)
                if requeue is not None:
                    self.queue.add_after(key, requeue)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                level = logging.INFO if exc.conflict else logging.WARNING
                log.log(level, "reconcile %s: %s; retrying", key, exc)
                self.queue.add_after(key, 0.2 if exc.conflict else 2.0)
            except Exception:
                log.exception("reconcile %s failed; retrying", key)
                self.queue.add_after(key, 5.0)
            finally:
                self.queue.done(key)

    async def _resync(self) -> None:
        """Level-triggered safety net: everything is re-evaluated periodically."""
        while True:
            await asyncio.sleep(self.resync_seconds)
            for body in self.store.all("SVM"):
                md = body.get("metadata") or {}
                self.enqueue_svm(md.get("namespace", ""), md.get("name", ""))
            for body in self.store.all("HAPair"):
                md = body.get("metadata") or {}
                self.enqueue_pair(md.get("namespace", ""), md.get("name", ""))


def _split(key: Hashable) -> WorkKey:
    assert isinstance(key, tuple) and len(key) == 3
    kind, namespace, name = key
    return str(kind), str(namespace), str(name)
