"""What every reconcile shares: the API client, the cached view and the work queue."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from hasmb.controller.metrics import Metrics
from hasmb.controller.render import LABEL_SVM
from hasmb.controller.store import Store
from hasmb.controller.workqueue import WorkQueue
from hasmb.kube.client import (
    CONFIGMAPS,
    HAPAIRS,
    LEASES,
    LIFS,
    NODES,
    PODS,
    SERVICES,
    SHARES,
    SVMS,
    ApiError,
    KubeClient,
    Resource,
)

log = logging.getLogger("hasmb.operator")

# What the handlers watch, as the Store names it, with the label selector of the watch.
WATCHED: tuple[tuple[str, Resource, str | None], ...] = (
    ("HAPair", HAPAIRS, None),
    ("SVM", SVMS, None),
    ("Share", SHARES, None),
    ("LIF", LIFS, None),
    ("Pod", PODS, LABEL_SVM),
    ("Service", SERVICES, LABEL_SVM),
    ("ConfigMap", CONFIGMAPS, LABEL_SVM),
    ("Lease", LEASES, LABEL_SVM),
    ("Node", NODES, None),
)

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
    first_resync_seconds: float = 3.0
    clock: Callable[[], float] = time.time
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Per SVM: when its current failover was first observed (for takeover durations).
    failure_seen: dict[tuple[str, str], float] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)
    # Namespaces where the hasmb-smbd ServiceAccount and RoleBinding are known to exist.
    smbd_accounts: set[str] = field(default_factory=set)
    event_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    event_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Served namespaces; empty: cluster-wide.
    namespaces: tuple[str, ...] = ()

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

    async def prime(self, low: bool = False) -> None:
        """LIST everything the handlers watch into the Store, then queue every SVM and pair.

        kopf delivers each resource's watch stream on its own, so without this the
        first reconcile after a restart could see the SVM but not yet its pods, nodes
        or Lease, and act on that (e.g. re-create a pod lost while the operator was
        down instead of failing over). The resync repeats it to repair missed events.
        """
        scopes: tuple[str | None, ...] = self.namespaces or (None,)
        for kind, res, selector in WATCHED:
            for ns in scopes if res.namespaced else (None,):
                items, version = await self.kube.list_versioned(res, ns, selector)
                self.store.sync(kind, items, version, {ns} if ns else None)
        self._enqueue_all(low)

    async def prime_at_start(self, patience: float = 30.0) -> None:
        """`prime`, retried while the API server is not ready yet (a fresh server answers
        429 "storage is (re)initializing" for a while); after `patience` seconds the
        operator starts anyway and the resync's LIST fills the view."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        delay = 0.2
        while True:
            try:
                await self.prime()
                return
            except Exception as exc:  # ApiError, connection errors: all worth a retry
                if loop.time() + delay > deadline:
                    log.warning(
                        "startup LIST failed for %.0f s (%s); starting anyway", patience, exc
                    )
                    return
                log.info("startup LIST failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _enqueue_all(self, low: bool) -> None:
        for kind, label in (("SVM", "svm"), ("HAPair", "pair")):
            for body in self.store.all(kind):
                md = body.get("metadata") or {}
                self.queue.add((label, md.get("namespace", ""), md.get("name", "")), low=low)

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
        """Level-triggered safety net: everything is re-evaluated periodically.

        The first pass comes soon after start: kopf starts its watches after the
        startup LIST (`prime`), so an object deleted in between stays in the Store
        until a later LIST forgets it.
        """
        delay = min(self.first_resync_seconds, self.resync_seconds)
        while True:
            await asyncio.sleep(delay)
            delay = self.resync_seconds
            try:
                await self.prime(low=True)
            except Exception as exc:  # keep resyncing whatever the API server says
                log.warning("resync LIST failed: %s; re-evaluating the cached view", exc)
                self._enqueue_all(low=True)


def _split(key: Hashable) -> WorkKey:
    assert isinstance(key, tuple) and len(key) == 3
    kind, namespace, name = key
    return str(kind), str(namespace), str(name)
