"""What every reconcile shares: the API client, the cached view and the work queue."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from hasmb.controller.metrics import Metrics
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
    metrics: Metrics = field(default_factory=Metrics)
    # Namespaces where the hasmb-smbd ServiceAccount and RoleBinding are known to exist.
    smbd_accounts: set[str] = field(default_factory=set)
    event_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    event_tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def post_event(self, body: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        """Post an Event without holding up the reconcile (bounded concurrency)."""

        async def post() -> None:
            async with self.event_slots:
                try:
                    await self.kube.event(body, reason, message, warning)
                except ApiError as exc:
                    log.warning("event %s on %s: %s", reason, body["metadata"].get("name"), exc)

        task = asyncio.create_task(post())
        self.event_tasks.add(task)
        task.add_done_callback(self.event_tasks.discard)

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
        if self.event_tasks:
            await asyncio.wait(list(self.event_tasks), timeout=5)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    async def _worker(self, handlers: dict[str, Reconcile]) -> None:
        while True:
            key = await self.queue.get()
            kind, namespace, name = _split(key)
            self.metrics.queue_depth.set(len(self.queue))
            started = time.monotonic()
            try:
                requeue = await handlers[kind](self, namespace, name)
                if requeue is not None:
                    self.queue.add_after(key, requeue)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                self.metrics.reconcile_errors.labels(kind).inc()
                level = logging.INFO if exc.conflict else logging.WARNING
                log.log(level, "reconcile %s: %s; retrying", key, exc)
                self.queue.add_after(key, 0.2 if exc.conflict else 2.0)
            except Exception:
                self.metrics.reconcile_errors.labels(kind).inc()
                log.exception("reconcile %s failed; retrying", key)
                self.queue.add_after(key, 5.0)
            finally:
                self.metrics.reconcile_seconds.labels(kind).observe(time.monotonic() - started)
                self.queue.done(key)

    async def _resync(self) -> None:
        """Level-triggered safety net: everything is re-evaluated periodically."""
        while True:
            await asyncio.sleep(self.resync_seconds)
            for kind, label in (("SVM", "svm"), ("HAPair", "pair")):
                for body in self.store.all(kind):
                    md = body.get("metadata") or {}
                    self.queue.add((label, md.get("namespace", ""), md.get("name", "")), low=True)


def _split(key: Hashable) -> WorkKey:
    assert isinstance(key, tuple) and len(key) == 3
    kind, namespace, name = key
    return str(kind), str(namespace), str(name)
