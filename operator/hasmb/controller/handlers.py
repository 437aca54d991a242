"""kopf wiring: watch events feed the Store and enqueue reconciles; SVM deletion cleans up.

kopf provides the watches, the finalizer and the operator lifecycle; the work is
done by the level-triggered reconcilers in `svm_reconcile` and `pair_reconcile`,
fed through a deduplicating queue so bursts of events collapse into one pass.
Importing this module registers the handlers with kopf's default registry.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from hasmb.contract import LABEL_STORE, LABEL_SVM
from hasmb.controller.facts import node_facts
from hasmb.controller.model import GROUP, VERSION
from hasmb.controller.pair_reconcile import reconcile_pair
from hasmb.controller.runtime import Runtime
from hasmb.controller.store import key_of, svm_of
from hasmb.controller.svm_reconcile import reconcile_svm
from hasmb.kube.client import CONFIGMAPS, LEASES, PODS, SERVICES, KubeClient, resource_version

log = logging.getLogger("hasmb.operator")

FINALIZER = "hasmb.io/finalizer"


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hasmb.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="hasmb.io", key="last-handled-configuration"
    )
    # We post our own Events; kopf's per-handler ones would drown them.
    settings.posting.level = logging.WARNING
    # Events of one object are handled one by one; a short window keeps failover fast.
    settings.batching.batch_window = 0.02
    settings.watching.server_timeout = 300
    kube = await KubeClient.connect()
    runtime = Runtime(
        kube=kube,
        workers=int(memo.get("workers", 8)),
        namespaces=tuple(memo.get("namespaces") or ()),
    )
    if memo.get("metrics_listen"):
        runtime.metrics.serve(str(memo["metrics_listen"]))
    await runtime.prime_at_start()
    memo["runtime"] = runtime
    runtime.start({"svm": reconcile_svm, "pair": reconcile_pair})


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await runtime.stop()
        await runtime.kube.close()


def _rt(memo: kopf.Memo) -> Runtime | None:
    runtime: Runtime | None = memo.get("runtime")
    return runtime


def _record(rt: Runtime, kind: str, event: dict[str, Any]) -> tuple[dict[str, Any] | None, Any]:
    """Apply a watch event to the Store; returns (old version, new body or None)."""
    body = dict(event.get("object") or {})
    if event.get("type") == "DELETED":
        return rt.store.remove(kind, body), None
    return rt.store.put(kind, body), body


def _news(old: dict[str, Any] | None, body: dict[str, Any] | None) -> bool:
    """False for the echo of our own write (the Store already holds that version)."""
    if old is None or body is None:
        return True
    return resource_version(old) != resource_version(body)


def _spec_changed(old: dict[str, Any] | None, body: dict[str, Any] | None) -> bool:
    """False when only status moved (the status subresource leaves generation alone)."""
    if old is None or body is None:
        return True
    o, n = old.get("metadata") or {}, body.get("metadata") or {}
    return (
        o.get("generation") != n.get("generation")
        or o.get("deletionTimestamp") != n.get("deletionTimestamp")
        or o.get("labels") != n.get("labels")
    )


def _svms_of_pair(rt: Runtime, namespace: str, pair: str) -> list[str]:
    return [
        key_of(b)[1]
        for b in rt.store.all("SVM", namespace)
        if (b.get("spec") or {}).get("haPair") == pair
    ]


@kopf.on.event(GROUP, VERSION, "hapairs")  # type: ignore[arg-type]
async def _pair_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
    rt = _rt(memo)
    if rt is None:
        return
    old, body = _record(rt, "HAPair", event)
    if not _spec_changed(old, body):
        return
    ns, name = key_of(dict(event.get("object") or {}))
    rt.enqueue_pair(ns, name)
    for svm in _svms_of_pair(rt, ns, name):
        rt.enqueue_svm(ns, svm)


@kopf.on.event(GROUP, VERSION, "svms")  # type: ignore[arg-type]
async def _svm_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
    rt = _rt(memo)
    if rt is None:
        return
    old, body = _record(rt, "SVM", event)
    obj = dict(event.get("object") or {})
    ns, name = key_of(obj)
    if _spec_changed(old, body):
        rt.enqueue_svm(ns, name)
    for version in (old, body):
        pair = ((version or {}).get("spec") or {}).get("haPair")
        if pair:
            rt.enqueue_pair(ns, pair)


def _spec_svm_event(kind: str) -> Any:
    async def handler(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
        rt = _rt(memo)
        if rt is None:
            return
        old, body = _record(rt, kind, event)
        if not _spec_changed(old, body):
            return
        ns = key_of(dict(event.get("object") or {}))[0]
        targets = {svm_of(kind, v) for v in (old, body) if v is not None}
        if kind == "LIF":
            # An IP clash is decided across LIFs: re-evaluate every LIF asking for that IP.
            versions: list[dict[str, Any] | None] = [old, body, event.get("object")]
            ips = {((v or {}).get("spec") or {}).get("ip") for v in versions}
            ips.discard(None)
            for other in rt.store.all("LIF", ns):
                if (other.get("spec") or {}).get("ip") in ips:
                    targets.add(svm_of("LIF", other))
        for svm in targets:
            if svm:
                rt.enqueue_svm(ns, svm)

    return handler


kopf.on.event(GROUP, VERSION, "shares")(_spec_svm_event("Share"))
kopf.on.event(GROUP, VERSION, "lifs")(_spec_svm_event("LIF"))


def _labelled_event(kind: str) -> Any:
    async def handler(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
        rt = _rt(memo)
        if rt is None:
            return
        old, body = _record(rt, kind, event)
        if not _news(old, body):
            return
        obj = dict(event.get("object") or {})
        svm = svm_of(kind, obj)
        if svm:
            rt.enqueue_svm(key_of(obj)[0], svm)
        if kind == "Lease" and svm:
            svm_body = rt.store.get("SVM", key_of(obj)[0], svm)
            pair = ((svm_body or {}).get("spec") or {}).get("haPair")
            if pair:
                rt.enqueue_pair(key_of(obj)[0], pair)

    return handler


_HAS_SVM = {LABEL_SVM: kopf.PRESENT}
kopf.on.event("", "v1", "pods", labels=_HAS_SVM)(_labelled_event("Pod"))
kopf.on.event("", "v1", "services", labels=_HAS_SVM)(_labelled_event("Service"))
kopf.on.event("", "v1", "configmaps", labels=_HAS_SVM)(_labelled_event("ConfigMap"))
kopf.on.event("coordination.k8s.io", "v1", "leases", labels=_HAS_SVM)(_labelled_event("Lease"))


@kopf.on.event("", "v1", "nodes")  # type: ignore[arg-type]
async def _node_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
    rt = _rt(memo)
    if rt is None:
        return
    old, body = _record(rt, "Node", event)
    # Heartbeats rewrite node status all the time; only health changes matter.
    if old is not None and body is not None and node_facts(old) == node_facts(body):
        return
    node = key_of(dict(event.get("object") or {}))[1]
    for pair_body in list(rt.store.all("HAPair")):
        if node in ((pair_body.get("spec") or {}).get("nodes") or []):
            ns, pair = key_of(pair_body)
            rt.enqueue_pair(ns, pair)
            for svm in _svms_of_pair(rt, ns, pair):
                rt.enqueue_svm(ns, svm)


@kopf.on.delete(GROUP, VERSION, "svms")  # type: ignore[arg-type]
async def _svm_deleted(
    name: str, namespace: str, memo: kopf.Memo, logger: logging.Logger, **_: Any
) -> None:
    """Remove everything the SVM made (owner references would too, but only with a GC)."""
    rt = _rt(memo)
    if rt is None:
        raise kopf.TemporaryError("operator is starting", delay=1)
    removed = 0
    selectors = [
        (PODS, f"{LABEL_SVM}={name}"),
        (SERVICES, f"{LABEL_SVM}={name}"),
        (CONFIGMAPS, f"{LABEL_SVM}={name}"),
        # Shards hasmb-smbd added itself carry only the store's label.
        (CONFIGMAPS, f"{LABEL_STORE}={name}-state"),
        (LEASES, f"{LABEL_SVM}={name}"),
    ]
    for res, selector in selectors:
        for item in await rt.kube.list(res, namespace, selector):
            removed += await rt.kube.delete(res, namespace, item["metadata"]["name"])
    logger.info("SVM %s/%s deleted: removed %d objects", namespace, name, removed)
    rt.enqueue_svm(namespace, name)
