"""The operator's in-memory view of the cluster, fed by kopf's watch events.

Objects are kept as plain bodies keyed by kind and (namespace, name), with an
index from an SVM to the objects that belong to it, so a reconcile reads what it
needs without listing the API server. Decisions that would be destructive on a
stale view (taking ownership away from a pod) re-read the API first.

The Store also notes, on the operator's own monotonic clock, when it first saw
each Lease's renewal state and each pod's readiness as it is now (`seen`): a
Lease expires judged from when its renewTime was seen to change, never from the
renewTime itself (Patroni's rule: no clock skew, and after an outage renewTime is
old although the holder renewed the moment the API came back); see `freshness`.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hasmb.contract import ANN_EPOCH, LABEL_SVM
from hasmb.kube.client import resource_version

Key = tuple[str, str]  # (namespace, name)
Body = dict[str, Any]

_TOMBSTONES = 20000  # uids of deleted objects remembered

# Kinds whose objects point at their SVM through spec.svm; the rest through the label.
_SPEC_SVM_KINDS = frozenset({"Share", "LIF"})


def key_of(body: Body) -> Key:
    md = body.get("metadata") or {}
    return (str(md.get("namespace") or ""), str(md.get("name") or ""))


def svm_of(kind: str, body: Body) -> str | None:
    if kind in _SPEC_SVM_KINDS:
        svm = (body.get("spec") or {}).get("svm")
        return str(svm) if svm else None
    if kind == "SVM":
        return key_of(body)[1]
    labels = (body.get("metadata") or {}).get("labels") or {}
    svm = labels.get(LABEL_SVM)
    return str(svm) if svm else None


def _uid(body: Body) -> str:
    return str((body.get("metadata") or {}).get("uid") or "")


# The kube-node-lease heartbeats of the kubelets, kept under this kind (runtime.NodeLeases).
NODE_LEASE = "NodeLease"


@dataclass(frozen=True, slots=True)
class Seen:
    """When (monotonic, this process) an object's watched state was first seen as it is."""

    signature: tuple[Any, ...]
    changed: float
    # Leases: when a renewTime change under the same holder and epoch was last seen
    renewal: float | None = None


def _condition(body: Body, type_: str) -> str | None:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return None


def signature(kind: str, body: Body) -> tuple[Any, ...] | None:
    """What `seen` times: a Lease's holder, epoch and renewal; a pod's or Node's readiness."""
    if kind in ("Lease", NODE_LEASE):
        spec = body.get("spec") or {}
        ann = (body.get("metadata") or {}).get("annotations") or {}
        return (
            spec.get("holderIdentity"),
            ann.get(ANN_EPOCH),
            spec.get("acquireTime"),
            spec.get("renewTime"),
        )
    if kind == "Pod":
        phase = (body.get("status") or {}).get("phase")
        return (phase, _condition(body, "Ready"), _condition(body, "ContainersReady"))
    if kind == "Node":
        return (_condition(body, "Ready"),)
    return None


@dataclass
class Store:
    objects: dict[str, dict[Key, Body]] = field(default_factory=lambda: defaultdict(dict))
    # (kind, namespace, svm) -> names
    by_svm: dict[tuple[str, str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    tombstones: OrderedDict[str, None] = field(default_factory=OrderedDict)
    # (kind, namespace, name) -> when its current signature was first seen
    seen: dict[tuple[str, str, str], Seen] = field(default_factory=dict)
    mono: Callable[[], float] = time.monotonic

    def put(self, kind: str, body: Body) -> Body | None:
        """Store `body`; returns the previous version. Older versions never replace newer,
        and an object whose deletion was seen never comes back (a reconcile may hold a
        copy read just before the deletion)."""
        key = key_of(body)
        old = self.objects[kind].get(key)
        if _uid(body) in self.tombstones:
            return old
        if old is not None and resource_version(old) > resource_version(body) > 0:
            return old
        if old is not None:
            self._unindex(kind, old)
        self.objects[kind][key] = body
        svm = svm_of(kind, body)
        if svm is not None:
            self.by_svm[(kind, key[0], svm)].add(key[1])
        self._observe(kind, key, body)
        return old

    def _observe(self, kind: str, key: Key, body: Body) -> None:
        sig = signature(kind, body)
        if sig is None:
            return
        at = (kind, key[0], key[1])
        prev = self.seen.get(at)
        if prev is not None and prev.signature == sig:
            return
        now = self.mono()
        renewal = None
        if kind in ("Lease", NODE_LEASE) and prev is not None:
            # holder and epoch unchanged, renewTime moved: the holder renewed
            same_holder = prev.signature[:2] == sig[:2]
            if same_holder:
                renewal = now if prev.signature[3] != sig[3] else prev.renewal
        self.seen[at] = Seen(sig, now, renewal)

    def seen_of(self, kind: str, namespace: str, name: str) -> Seen | None:
        return self.seen.get((kind, namespace, name))

    def remove(self, kind: str, body: Body) -> Body | None:
        """Forget `body`, unless the name now belongs to a newer object (other uid).

        kopf handles each object (uid) in its own stream, so the DELETED event of a
        pod can arrive after the ADDED event of its same-named replacement.
        """
        key = key_of(body)
        uid = _uid(body)
        if uid:
            self.tombstones[uid] = None
            if len(self.tombstones) > _TOMBSTONES:
                self.tombstones.popitem(last=False)
        old = self.objects[kind].get(key)
        if old is None or _uid(old) != uid:
            return None
        del self.objects[kind][key]
        self._unindex(kind, old)
        self.seen.pop((kind, key[0], key[1]), None)
        return old

    def _unindex(self, kind: str, body: Body) -> None:
        ns, name = key_of(body)
        svm = svm_of(kind, body)
        if svm is not None:
            names = self.by_svm.get((kind, ns, svm))
            if names is not None:
                names.discard(name)
                if not names:
                    del self.by_svm[(kind, ns, svm)]

    def sync(
        self, kind: str, bodies: list[Body], list_version: int, namespaces: set[str] | None
    ) -> None:
        """Bring `kind` in line with a LIST taken at `list_version`.

        Adds what the list holds and forgets what it lacks, unless the stored copy is
        newer than the list (a watch event that came after it). This repairs a view
        that missed an event, e.g. an object deleted while the operator was down,
        between its LIST and kopf's watch.
        """
        listed = set()
        for body in bodies:
            self.put(kind, body)
            listed.add(key_of(body))
        for key, body in list(self.objects[kind].items()):
            if namespaces is not None and key[0] not in namespaces:
                continue
            if key not in listed and resource_version(body) <= list_version:
                self.remove(kind, body)

    def get(self, kind: str, namespace: str, name: str) -> Body | None:
        return self.objects[kind].get((namespace, name))

    def all(self, kind: str, namespace: str | None = None) -> Iterable[Body]:
        for (ns, _), body in list(self.objects[kind].items()):
            if namespace is None or ns == namespace:
                yield body

    def of_svm(self, kind: str, namespace: str, svm: str) -> list[Body]:
        names = sorted(self.by_svm.get((kind, namespace, svm), ()))
        out = []
        for name in names:
            body = self.objects[kind].get((namespace, name))
            if body is not None:
                out.append(body)
        return out
