"""The operator-pod contract: every name and format that hasmb-operator and the
hasmb-smbd pods (hasmb.podrt) both depend on.

The operator renders pods, ConfigMaps and Services and moves the ownership Lease;
the pods read what it rendered, renew the Lease and sometimes take it themselves
(PartnerFailover). Both sides import this module, and it imports nothing of either,
so a change to the contract is one change in one place (docs/architecture.md).

The ownership Lease (coordination.k8s.io/v1):

- spec.holderIdentity: the owner node; spec.leaseTransitions and the annotation
  hasmb.io/epoch: the ownership epoch (the annotation wins when both are there);
- hasmb.io/reason: why the holder owns the SVM (`Reason`);
- spec.acquireTime: when the term began; spec.renewTime: the holder's last renewal
  (renewTime later than acquireTime: the holder itself wrote it);
- hasmb.io/fencing: where the holder's authority comes from (`Fencing`), written with
  each renewal; hasmb.io/persistent-handles: the owner's count of persistent opens.

Every write is one of `take`, `restate`, `renew` or `bump` (a `LeaseWrite`), sent
as a JSON merge patch (`LeaseWrite.patch`, the pods) or as the whole object
(`LeaseWrite.object`, the operator's create/replace); both carry the resourceVersion
the writer decided on, so a Lease anyone changed meanwhile refuses the write (409).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# ------------------------------------------------------------------ labels
LABEL_SVM = "hasmb.io/svm"
LABEL_NODE = "hasmb.io/node"  # on a pod: the node it is pinned to (a LIF selects on it)
LABEL_LIF = "hasmb.io/lif"
LABEL_COMPONENT = "app.kubernetes.io/component"
# The configmap handle-state store (hasmb.handles.configmap_store): every object of
# store NAME is labelled LABEL_STORE=NAME and LABEL_STORE_ROLE=meta|shard.
LABEL_STORE = "hasmb.io/handle-store"
LABEL_STORE_ROLE = "hasmb.io/handle-store-role"

# ------------------------------------------------------------------ annotations
ANN_POD_HASH = "hasmb.io/pod-hash"
ANN_CONFIG_HASH = "hasmb.io/config-hash"
ANN_LIF_STATE = "hasmb.io/lif-state"
ANN_EPOCH = "hasmb.io/epoch"
ANN_REASON = "hasmb.io/reason"
# Written by the owning hasmb-smbd with each renewal: a `Fencing` value.
ANN_FENCING = "hasmb.io/fencing"
# Written by the owning hasmb-smbd with each renewal (so the pod needs no write access
# to pods); the operator copies it into SVM status.persistentHandles.
ANN_HANDLES = "hasmb.io/persistent-handles"
# On a pod: HOST:PORT of its admin endpoint when it is not status.podIP:ADMIN_PORT (a
# pod whose hasmb-smbd runs elsewhere, as in the cluster-tier tests).
ANN_ADMIN_ADDRESS = "hasmb.io/admin-address"

# ------------------------------------------------------------------ config and ports
CONFIG_KEY = "hasmb-smbd.yaml"  # the rendered config's key in the SVM's ConfigMap
SMB_PORT = 445
EPMAP_PORT = 135
WITNESS_PORT = 5050
ADMIN_PORT = 9300  # GET /status, /metrics, POST /volume-move (container port "metrics")
PAIR_PORT = 9301  # the pair channel on the pod IP (hasmb.smb.pair; container port "pair")

# ------------------------------------------------------------------ the Lease
LEASE_API_VERSION = "coordination.k8s.io/v1"
LEASE_SECONDS = 6  # leaseDurationSeconds of the Lease the operator writes


class Reason(StrEnum):
    """Why a node owns an SVM (kept in the Lease, so it survives restarts)."""

    HOME = "Home"
    RELOCATED = "Relocated"
    PLANNED_TAKEOVER = "PlannedTakeover"
    UPGRADE = "Upgrade"
    FAILOVER = "Failover"
    GIVEBACK = "Giveback"
    # written by the partner pod itself: it saw the owner's process gone (docs/operator.md)
    PARTNER_FAILOVER = "PartnerFailover"


# Moves someone asked for: the witness sends CLIENT_MOVE, the old owner hands over.
PLANNED = frozenset({Reason.RELOCATED, Reason.PLANNED_TAKEOVER, Reason.UPGRADE})
# Moves nobody planned: a warning Event, and the witness tells clients the old
# owner's interfaces are gone (RESOURCE_CHANGE) instead of moving them.
UNPLANNED = frozenset({Reason.FAILOVER, Reason.PARTNER_FAILOVER})


class Fencing(StrEnum):
    """The holder's hasmb.io/fencing: what its last renewal says its authority rests on
    (hasmb.smb.fence, docs/continuous-availability.md "Fencing")."""

    # the renewal grants the owner 2/3 of the duration from its send time
    LEASE = "lease"
    # the owner serves on its partner's confirmations; the renewal grants nothing
    PARTNER = "partner"


def micro_time(ts: float) -> str:
    """A MicroTime (spec.acquireTime, spec.renewTime) from epoch seconds."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> float | None:
    """Epoch seconds of a Kubernetes Time or MicroTime (None: absent or malformed)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Ownership:
    """The Lease as read. Its times are the writers' wall clocks: they tell *whether*
    the holder renewed, never *how long ago* (the operator judges that on its own
    clock, `freshness.lease_left`; a pod on its own, hasmb.podrt.lease)."""

    holder: str | None
    epoch: int
    reason: str | None
    acquired: float | None = None
    renewed: float | None = None
    duration: float = LEASE_SECONDS
    fencing: str | None = None  # ANN_FENCING of the holder's last renewal
    resource_version: str = ""  # what a write decided on this reading must carry

    @property
    def holder_renewed(self) -> bool:
        """renewTime later than acquireTime: the holder wrote it, not only the mover."""
        return (
            self.acquired is not None and self.renewed is not None and self.renewed > self.acquired
        )


def read_ownership(lease_body: Mapping[str, Any] | None) -> Ownership:
    if not lease_body:
        return Ownership(None, 0, None)
    md = lease_body.get("metadata") or {}
    ann = md.get("annotations") or {}
    spec = lease_body.get("spec") or {}
    try:
        epoch = int(ann.get(ANN_EPOCH, spec.get("leaseTransitions") or 0))
    except ValueError:
        epoch = int(spec.get("leaseTransitions") or 0)
    holder = spec.get("holderIdentity") or None
    return Ownership(
        holder,
        epoch,
        ann.get(ANN_REASON),
        acquired=parse_time(spec.get("acquireTime")),
        renewed=parse_time(spec.get("renewTime")),
        duration=float(spec.get("leaseDurationSeconds") or LEASE_SECONDS),
        fencing=ann.get(ANN_FENCING),
        resource_version=str(md.get("resourceVersion") or ""),
    )


# Spec fields a whole term names; a write with all of them can be rendered as the
# whole object (`LeaseWrite.object`), one with fewer only as a patch.
_TERM_FIELDS = ("holderIdentity", "acquireTime", "renewTime", "leaseTransitions")


@dataclass(frozen=True, slots=True)
class LeaseWrite:
    """One write to the ownership Lease: the spec fields and annotations it sets,
    conditional on `resource_version` (the Lease it was decided on; None: no CAS,
    the Lease is created)."""

    resource_version: str | None
    spec: Mapping[str, Any]
    annotations: Mapping[str, str] = field(default_factory=dict)
    # A new term (holder or epoch change written whole): annotations the previous
    # holder wrote with its renewals (fencing mode, handle count) are not its own.
    new_term: bool = False

    def patch(self) -> dict[str, Any]:
        """As a JSON merge patch: fields it does not name stay as they are."""
        metadata: dict[str, Any] = {"resourceVersion": self.resource_version}
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        return {"metadata": metadata, "spec": dict(self.spec)}

    def object(
        self,
        *,
        name: str,
        namespace: str,
        labels: Mapping[str, str],
        owner_references: list[dict[str, Any]],
        base: Mapping[str, Any] | None = None,
        duration: int = LEASE_SECONDS,
    ) -> dict[str, Any]:
        """As the whole Lease (create, or replace of `base`, the Lease the write was
        decided on): a replace drops what it does not name, so a same-term write
        carries `base`'s annotations over."""
        missing = [f for f in _TERM_FIELDS if f not in self.spec]
        if missing:
            raise ValueError(f"a Lease written whole needs {', '.join(missing)}")
        old_md = (base or {}).get("metadata") or {}
        annotations = dict(self.annotations)
        if not self.new_term:
            annotations = {**(old_md.get("annotations") or {}), **annotations}
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": annotations,
            "ownerReferences": owner_references,
        }
        if self.resource_version is not None:
            metadata["resourceVersion"] = self.resource_version
        spec = {"holderIdentity": self.spec["holderIdentity"], "leaseDurationSeconds": duration}
        return {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": metadata,
            "spec": {**spec, **self.spec},
        }


def take(
    resource_version: str | None,
    holder: str,
    epoch: int,
    reason: str,
    now: float,
    fencing: str | None = None,
) -> LeaseWrite:
    """A new term: `holder` owns the SVM at `epoch` for `reason` from `now`. The
    operator's moves and a partner pod's takeover; a taker that arms on the write
    itself says so with `fencing` (a take grants like a `lease` renewal)."""
    at = micro_time(now)
    annotations = {ANN_EPOCH: str(epoch), ANN_REASON: str(reason)}
    if fencing is not None:
        annotations[ANN_FENCING] = str(fencing)
    spec = {"holderIdentity": holder, "acquireTime": at, "renewTime": at, "leaseTransitions": epoch}
    return LeaseWrite(resource_version, spec, annotations, new_term=True)


def restate(base: Mapping[str, Any], holder: str, epoch: int, reason: str) -> LeaseWrite:
    """The same holder's term at `epoch` for a new `reason` (the operator's view of why
    it owns changed, e.g. a takeover became the home owner's again). acquireTime and
    renewTime stay: renewTime is the holder's own proof of life."""
    spec = base.get("spec") or {}
    acquired = spec["acquireTime"]
    return LeaseWrite(
        _resource_version(base),
        {
            "holderIdentity": holder,
            "acquireTime": acquired,
            "renewTime": spec.get("renewTime") or acquired,
            "leaseTransitions": epoch,
        },
        {ANN_EPOCH: str(epoch), ANN_REASON: str(reason)},
    )


def assign(
    holder: str, epoch: int, reason: str, now: float, base: Mapping[str, Any] | None = None
) -> LeaseWrite:
    """The operator's write naming `holder` at `epoch` for `reason`: a restatement when
    `base` (the observed Lease) already names that holder's term, else a new term."""
    if base is not None:
        spec = base.get("spec") or {}
        if spec.get("holderIdentity") == holder and spec.get("acquireTime"):
            return restate(base, holder, epoch, reason)
    return take(_resource_version(base), holder, epoch, reason, now)


def _resource_version(base: Mapping[str, Any] | None) -> str | None:
    rv = ((base or {}).get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv else None


def renew(
    resource_version: str,
    now: float,
    fencing: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> LeaseWrite:
    """The holder's renewal: renewTime only (holder and epoch untouched), with what the
    holder reports about itself (`fencing`, ANN_HANDLES)."""
    extra = dict(annotations or {})
    if fencing is not None:
        extra[ANN_FENCING] = str(fencing)
    return LeaseWrite(resource_version, {"renewTime": micro_time(now)}, extra)


def bump(resource_version: str, epoch: int, now: float) -> LeaseWrite:
    """The holder raises its own epoch (holder unchanged): a restarted owner whose store
    already stands at the Lease's epoch cannot take it again at that epoch."""
    return LeaseWrite(
        resource_version,
        {"leaseTransitions": epoch, "renewTime": micro_time(now)},
        {ANN_EPOCH: str(epoch)},
    )
