"""How far the operator may trust what it sees before it takes a destructive step.

Two rules (docs/operator.md, "Stale status after lost API contact"):

- **Lease ages on the local clock.** A Lease is live for leaseDurationSeconds from
  the moment this process saw its renewTime, holder or epoch change -- not from the
  renewTime written in it (another machine's clock; and after an API outage the
  renewTime is old although the holder renewed the moment the API came back).
  Time counts only while the operator has API contact: no Lease (an SVM's or a
  kubelet's node Lease) expires earlier than one duration after contact returned.

- **Bad status must be fresh.** After the operator started, and after its contact
  with the API server was lost (probe timeouts, failing requests, an event-loop
  stall), Node and pod conditions may be stale for a while: nobody could update
  them, and after an outage longer than the node-monitor grace period
  kube-controller-manager itself marks every Node Unknown and its pods NotReady
  before the kubelets have had a chance to report. So a node whose pod exists (and
  is not being deleted) on a Node that exists is *doubted* -- no Failover takeover
  from it, no LIF failover away from it, no pod deletion -- while

  * contact is lost, or regained less than `Contact.hold` seconds ago (one lease
    duration): "API contact regained 3.2 s ago";
  * its Node says Ready=Unknown (the node controller's verdict, not the kubelet's:
    the kubelet reports False) while the node's heartbeat Lease in kube-node-lease
    is live on this clock;
  * its pod is NotReady with ContainersReady still True (the node controller's
    mark: the kubelet's own readiness verdict sets ContainersReady=False too), for
    `MARK_GRACE` seconds after the mark was seen and after its Node was seen Ready
    again (the kubelet puts the pod right only once it reports again), unless the
    Node is trusted down or the pod is the holder whose Lease, which it renewed,
    expired on this clock.

  Facts are never doubted: a pod that is gone or terminating, a Node that is gone.

Everything here is pure; the Runtime feeds it the Store's observation times.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from hasmb.contract import LEASE_SECONDS, Ownership
from hasmb.controller.store import NODE_LEASE, Seen, Store

log = logging.getLogger("hasmb.operator.freshness")

Body = dict[str, Any]

NODE_LEASE_NAMESPACE = "kube-node-lease"
NODE_LEASE_SECONDS = 40.0  # the kubelet's default, when a node Lease does not say
# How long a pod marked NotReady by the node controller is not believed while its
# Node looks alive: the kubelet re-syncs pod status every 10 s and puts Ready back.
MARK_GRACE = 20.0


@dataclass
class Contact:
    """The operator's own contact with the API server, on the monotonic clock.

    `ok` after every answered request of the probe (and other successes worth
    counting), `failed` on a timeout, a connection error or a 5xx/429. A gap of more
    than `max_gap` between successes (the event loop itself stalled, or the probe
    hung) counts as a loss too. Contact is *fresh* again `hold` seconds after it
    returned.
    """

    since: float  # start of the current period of contact
    hold: float = LEASE_SECONDS
    max_gap: float = 3.0
    cause: str = "operator started"  # how the current period began
    last_ok: float = field(default=-math.inf)
    lost_at: float | None = None
    lost_why: str = ""

    def __post_init__(self) -> None:
        if self.last_ok == -math.inf:
            self.last_ok = self.since

    def ok(self, now: float) -> bool:
        """A request was answered; True when this ends a loss (contact regained)."""
        regained = False
        if self.lost_at is not None:
            gone = now - self.lost_at
            self.cause = f"API contact regained (lost {gone:.1f} s: {self.lost_why})"
            regained = True
        elif now - self.last_ok > self.max_gap:
            self.cause = f"API contact regained (no answer for {now - self.last_ok:.1f} s)"
            regained = True
        if regained:
            self.since = now
            self.lost_at = None
            self.lost_why = ""
            log.warning("%s; holding destructive steps for %.1f s", self.cause, self.hold)
        self.last_ok = max(self.last_ok, now)
        return regained

    def failed(self, now: float, why: str) -> bool:
        """A request failed for want of the API server; True when this starts a loss."""
        if self.lost_at is not None:
            return False
        self.lost_at = now
        self.lost_why = why
        log.warning("API contact lost: %s", why)
        return True

    def in_contact(self, now: float) -> bool:
        return self.lost_at is None and now - self.last_ok <= self.max_gap

    def state(self, now: float) -> ContactState:
        if not self.in_contact(now):
            since = self.lost_at if self.lost_at is not None else self.last_ok
            why = f": {self.lost_why}" if self.lost_why else ""
            return ContactState(
                since=math.inf,
                hold_left=math.inf,
                text=f"no API contact for {max(0.0, now - since):.1f} s{why}",
            )
        age = max(0.0, now - self.since)
        return ContactState(
            since=self.since,
            hold_left=max(0.0, self.since + self.hold - now),
            text=f"{self.cause} {age:.1f} s ago",
        )


@dataclass(frozen=True, slots=True)
class ContactState:
    """A snapshot of `Contact` for the pure judgements below."""

    since: float  # monotonic start of the current contact (inf: none now)
    hold_left: float  # seconds until status seen is fresh enough to act on (inf: none)
    text: str

    @property
    def fresh(self) -> bool:
        return self.hold_left <= 0


FRESH = ContactState(since=-math.inf, hold_left=0.0, text="API contact is fresh")


def lease_left(own: Ownership, seen: Seen | None, contact: ContactState, now: float) -> float:
    """Seconds the holder's Lease stays live on this process's clock (0: expired).

    Only a Lease its holder renewed counts (renewTime past acquireTime, or a renewal
    seen here): one the operator or the partner just wrote proves nobody alive. It
    expires one duration after this process saw it change, and never sooner than one
    duration after contact returned.
    """
    if own.holder is None:
        return 0.0
    renewed = own.holder_renewed or (seen is not None and seen.renewal is not None)
    if not renewed:
        return 0.0
    if contact.since == math.inf:
        return math.inf  # no contact now: nothing can be judged expired
    changed = seen.changed if seen is not None else contact.since
    return max(0.0, max(changed, contact.since) + own.duration - now)


def node_lease_left(
    body: Body | None, seen: Seen | None, contact: ContactState, now: float
) -> float:
    """Seconds the kubelet's heartbeat Lease stays live on this clock (0: none/expired)."""
    if body is None or seen is None:
        return 0.0
    if contact.since == math.inf:
        return math.inf
    duration = float((body.get("spec") or {}).get("leaseDurationSeconds") or NODE_LEASE_SECONDS)
    return max(0.0, max(seen.changed, contact.since) + duration - now)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the operator knows about one node of a pair and its SVM pod."""

    node: Body | None
    pod: Body | None
    pod_seen: float | None = None  # monotonic: when the pod's readiness was first seen as is
    node_seen: float | None = None  # monotonic: when the Node's Ready was first seen as is
    node_lease_left: float = 0.0
    node_lease_seen: float | None = None  # monotonic: when the heartbeat was last seen
    holder_lapsed: bool = False  # the holder's Lease, which it renewed, expired here


@dataclass(frozen=True, slots=True)
class Doubt:
    """Why a node's bad status is not acted on yet, and when that may change by itself."""

    why: str
    left: float | None  # seconds until it may resolve without news (None: needs news)


def _condition(body: Body, type_: str) -> dict[str, Any] | None:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def _status(body: Body, type_: str) -> str | None:
    cond = _condition(body, type_)
    return None if cond is None else str(cond.get("status"))


def _stale_contact(contact: ContactState) -> Doubt:
    left = None if math.isinf(contact.hold_left) else contact.hold_left
    return Doubt(f"{contact.text}, waiting for fresh Node and Lease status", left)


def node_doubt(name: str, e: Evidence, contact: ContactState, now: float) -> Doubt | None:
    """Whether a Node that is not Ready may be believed (None: it may, or it is Ready)."""
    node = e.node
    if node is None or (node.get("metadata") or {}).get("deletionTimestamp"):
        return None
    node_ready = _status(node, "Ready")
    if node_ready == "True":
        return None
    if not contact.fresh:
        return _stale_contact(contact)
    if node_ready != "False" and e.node_lease_left > 0:
        # Unknown (or no condition): the node controller's verdict that heartbeats
        # stopped -- contradicted by a heartbeat this process saw.
        seen = e.node_lease_seen
        ago = "" if seen is None else f" {max(0.0, now - seen):.1f} s ago"
        return Doubt(
            f"Node {name} reads Ready={node_ready or 'missing'} but its kubelet renewed "
            f"its node Lease{ago}",
            None if math.isinf(e.node_lease_left) else e.node_lease_left,
        )
    return None


def doubt(name: str, e: Evidence, contact: ContactState, now: float) -> Doubt | None:
    """None when the node's status may be acted on as it reads; else why not."""
    node, pod = e.node, e.pod
    if node is None or (node.get("metadata") or {}).get("deletionTimestamp"):
        return None  # the Node is gone: a fact
    if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None  # the pod is gone or going: a fact
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Failed", "Succeeded"):
        return None  # the kubelet reported the container ended
    node_ready = _status(node, "Ready")
    pod_ready = phase == "Running" and _status(pod, "Ready") == "True"
    if node_ready == "True" and pod_ready:
        return None  # nothing bad to doubt
    if not contact.fresh:
        return _stale_contact(contact)
    nd = node_doubt(name, e, contact, now)
    if pod_ready:
        return nd
    kubelet_said = phase != "Running" or _status(pod, "ContainersReady") != "True"
    if kubelet_said or e.holder_lapsed:
        return None  # the kubelet's own verdict, or the holder stopped renewing: believed
    if node_ready != "True" and nd is None:
        return None  # the node controller's mark, and the Node is down: believed
    if nd is not None:
        return nd
    seen = e.pod_seen if e.pod_seen is not None else now
    back = e.node_seen if e.node_seen is not None else seen
    left = max(seen, back, contact.since) + MARK_GRACE - now
    if left <= 0:
        return None
    return Doubt(
        f"pod on {name} was marked NotReady by the node controller "
        f"{max(0.0, now - seen):.1f} s ago; its Node reads Ready (since "
        f"{max(0.0, now - back):.1f} s): waiting for its kubelet",
        left,
    )


@dataclass(frozen=True, slots=True)
class Trust:
    """The doubts over a pair's nodes, and when to look again."""

    doubted: dict[str, str]
    recheck_after: float | None  # seconds; None: only news changes anything
    contact: ContactState
    hold_deletions: bool  # contact not fresh: no pod is deleted at all


def judge(evidence: dict[str, Evidence], contact: ContactState, now: float) -> Trust:
    doubted: dict[str, str] = {}
    lefts: list[float] = []
    for name, e in evidence.items():
        d = doubt(name, e, contact, now)
        if d is None:
            continue
        doubted[name] = d.why
        if d.left is not None:
            lefts.append(d.left)
    if not contact.fresh and not math.isinf(contact.hold_left):
        lefts.append(contact.hold_left)
    recheck = max(0.05, min(lefts)) if lefts else (1.0 if doubted else None)
    return Trust(doubted, recheck, contact, hold_deletions=not contact.fresh)


def holder_lapsed(own: Ownership, seen: Seen | None, contact: ContactState, now: float) -> bool:
    """The holder renewed its Lease, and it expired on this clock with contact fresh."""
    if own.holder is None or not contact.fresh:
        return False
    renewed = own.holder_renewed or (seen is not None and seen.renewal is not None)
    return renewed and lease_left(own, seen, contact, now) <= 0


def evidence(
    store: Store,
    node: str,
    pod: Body | None,
    contact: ContactState,
    now: float,
    lapsed: bool = False,
    node_body: Body | None = None,
) -> Evidence:
    """Evidence about `node` and its SVM pod `pod` from the Store's bodies and times."""
    if node_body is None:
        node_body = store.get("Node", "", node)
    nseen = store.seen_of("Node", "", node)
    lease = store.get(NODE_LEASE, NODE_LEASE_NAMESPACE, node)
    lease_seen = store.seen_of(NODE_LEASE, NODE_LEASE_NAMESPACE, node)
    pod_seen = None
    if pod is not None:
        md = pod.get("metadata") or {}
        pseen = store.seen_of("Pod", str(md.get("namespace") or ""), str(md.get("name") or ""))
        pod_seen = pseen.changed if pseen is not None else None
    return Evidence(
        node=node_body,
        pod=pod,
        pod_seen=pod_seen,
        node_seen=nseen.changed if nseen is not None else None,
        node_lease_left=node_lease_left(lease, lease_seen, contact, now),
        node_lease_seen=lease_seen.changed if lease_seen is not None else None,
        holder_lapsed=lapsed,
    )
