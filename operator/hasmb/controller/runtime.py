"""What every reconcile shares: the API client, the cached view and the work queue.

Also the operator's own contact with the API server (`Contact`, fed by a probe
every second and by every request that fails for want of the server) and the
kubelets' heartbeat Leases in kube-node-lease (followed with a watch of their
own), which `freshness` needs to tell fresh status from stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from hasmb.contract import LABEL_SVM
from hasmb.controller.freshness import NODE_LEASE_NAMESPACE, Contact
from hasmb.controller.metrics import Metrics
from hasmb.controller.store import NODE_LEASE, Store
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

# Answers that mean the API server did not serve us (as opposed to refusing a request).
_UNAVAILABLE = frozenset({429, 500, 502, 503, 504})


def lost_contact(exc: BaseException) -> str | None:
    """Why `exc` means the API server could not be reached or did not answer; None if
    it is an ordinary refusal (409, 404, 422, 403...)."""
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status} {exc.reason}".strip() if exc.status in _UNAVAILABLE else None
    if isinstance(exc, TimeoutError):
        return "request timed out"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return f"{type(exc).__name__}: {exc}"
    return None


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
    mono: Callable[[], float] = time.monotonic
    contact: Contact = field(default_factory=lambda: Contact(since=time.monotonic()))
    probe_interval: float = 1.0
    probe_timeout: float = 2.0
    # Holds reported once per episode: key -> message (svm_reconcile.report_hold).
    holds: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.store.mono = self.mono
        self.contact = Contact(since=self.mono(), hold=self.contact.hold)

    def note_ok(self) -> None:
        if self.contact.ok(self.mono()):
            self._after_regain()

    def note_failure(self, exc: BaseException, what: str) -> bool:
        """Count `exc` against API contact when it means the server did not serve us."""
        why = lost_contact(exc)
        if why is None:
            return False
        self.contact.failed(self.mono(), f"{what}: {why}")
        return True

    def _after_regain(self) -> None:
        """LIST everything again at once (watches may have broken or missed events) and
        re-evaluate every SVM once the hold is over."""

        async def relist() -> None:
            try:
                await self.prime(low=True)
            except Exception as exc:
                log.warning("LIST after regaining API contact failed: %s", exc)
                self.note_failure(exc, "LIST after regain")
            for kind, label in (("SVM", "svm"), ("HAPair", "pair")):
                for body in self.store.all(kind):
                    md = body.get("metadata") or {}
                    key = (label, md.get("namespace", ""), md.get("name", ""))
                    self.queue.add_after(key, self.contact.hold + 0.05)

        task = asyncio.create_task(relist(), name="relist-after-regain")
        self.tasks.append(task)  # cancelled by stop() like the other background tasks
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self.tasks.remove(task)

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
        await self._list_node_leases()
        self.note_ok()
        self._enqueue_all(low)

    async def _list_node_leases(self) -> int:
        """The kubelets' heartbeats; without them (no permission, no Leases) a Node's
        Ready=Unknown is believed as it reads. Returns the LIST's resourceVersion."""
        try:
            items, version = await self.kube.list_versioned(LEASES, NODE_LEASE_NAMESPACE)
        except ApiError as exc:
            if exc.status in (401, 403, 404):
                log.warning("cannot list node Leases in %s: %s", NODE_LEASE_NAMESPACE, exc)
                return 0
            raise
        self.store.sync(NODE_LEASE, items, version, {NODE_LEASE_NAMESPACE})
        return version

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
        self.tasks.append(asyncio.create_task(self._probe(), name="api-probe"))
        self.tasks.append(asyncio.create_task(self._follow_node_leases(), name="node-leases"))

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
                self.note_failure(exc, f"reconcile {kind} {namespace}/{name}")
                level = logging.INFO if exc.conflict else logging.WARNING
                log.log(level, "reconcile %s: %s; retrying", key, exc)
                self.queue.add_after(key, 0.2 if exc.conflict else 2.0)
            except Exception as exc:
                self.metrics.reconcile_errors.labels(kind).inc()
                if self.note_failure(exc, f"reconcile {kind} {namespace}/{name}"):
                    log.warning("reconcile %s: %s; retrying", key, exc)
                    self.queue.add_after(key, 2.0)
                else:
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
                self.note_failure(exc, "resync LIST")
                log.warning("resync LIST failed: %s; re-evaluating the cached view", exc)
                self._enqueue_all(low=True)

    async def _probe(self) -> None:
        """One cheap consistent read a second: does the API server (and its etcd) answer?

        A timeout or an unavailable answer marks contact lost; the next answer starts
        a new period of contact, and `freshness` holds destructive steps for a lease
        duration from then. A stalled event loop shows as a gap between answers.
        """
        ns = self.namespaces[0] if self.namespaces else None
        path = LEASES.path(ns)
        query = [("labelSelector", LABEL_SVM), ("limit", "1")]
        while True:
            try:
                await asyncio.wait_for(
                    self.kube.request("GET", path, query=query), self.probe_timeout
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.note_failure(exc, "probe"):
                    log.debug("API probe: %s", exc)  # e.g. 403: it answered all the same
                    self.note_ok()
            else:
                self.note_ok()
            await asyncio.sleep(self.probe_interval)

    async def _follow_node_leases(self, rewatch: float = 300.0) -> None:
        """LIST + watch kube-node-lease into the Store (kind NodeLease); relist whenever
        the stream ends, fails, or has run `rewatch` seconds (a connection that died
        silently must not freeze the heartbeats)."""
        while True:
            try:
                version = await self._list_node_leases()
                if version == 0:
                    await asyncio.sleep(self.resync_seconds)
                    continue
                await asyncio.wait_for(self._watch_node_leases(version), rewatch)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                continue  # the periodic relist
            except Exception as exc:
                self.note_failure(exc, "node Lease watch")
                log.info("node Lease watch ended (%s); relisting", exc)
                await asyncio.sleep(1.0)

    async def _watch_node_leases(self, version: int) -> None:
        async for event in self.kube.watch(
            LEASES, NODE_LEASE_NAMESPACE, resource_version=str(version)
        ):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                return  # e.g. 410 Gone: relist
            if kind == "DELETED":
                self.store.remove(NODE_LEASE, obj)
            elif kind in ("ADDED", "MODIFIED"):
                self.store.put(NODE_LEASE, obj)


def _split(key: Hashable) -> WorkKey:
    assert isinstance(key, tuple) and len(key) == 3
    kind, namespace, name = key
    return str(kind), str(namespace), str(name)
