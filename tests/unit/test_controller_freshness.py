"""Stale status after lost API contact: Lease ages on the local clock, doubted nodes,
and the decisions that hold back while a node's bad status may be stale."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from hasmb import contract
from hasmb.controller import freshness, render
from hasmb.controller.freshness import MARK_GRACE, Contact, Evidence, doubt, judge, lease_left
from hasmb.controller.model import SVM
from hasmb.controller.placement import (
    NodeFacts,
    PairView,
    PodFacts,
    Reason,
    after_partner_failover,
    decide_lif,
    decide_owner,
    pod_actions,
)
from hasmb.controller.store import NODE_LEASE, Store

A, B = "node-a", "node-b"
HOLD = contract.LEASE_SECONDS
SVM1 = SVM.from_body(
    {
        "metadata": {"name": "svm1", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": {"haPair": "pair1", "homeNode": A, "volume": {"hostPath": "/x"}},
    }
)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def node(name: str, ready: str = "True") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def pod(on: str, ready: bool = True, containers: bool | None = None, rv: int = 1) -> dict[str, Any]:
    containers = ready if containers is None else containers
    return {
        "metadata": {
            "name": f"svm1-{on}",
            "namespace": "ns",
            "uid": f"uid-{on}",
            "resourceVersion": str(rv),
            "labels": {contract.LABEL_SVM: "svm1"},
        },
        "spec": {"nodeName": on},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "ContainersReady", "status": str(containers)},
                {"type": "Ready", "status": str(ready)},
            ],
        },
    }


def node_lease(name: str, renew: str, rv: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": freshness.NODE_LEASE_NAMESPACE,
            "uid": f"nl-{name}",
            "resourceVersion": str(rv),
        },
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew},
    }


def svm_lease(
    holder: str, acquired: float, renewed: float, rv: int, epoch: int = 1
) -> dict[str, Any]:
    body = render.lease(SVM1, holder, epoch, "Home", acquired)
    body["metadata"]["resourceVersion"] = str(rv)
    body["metadata"]["uid"] = "lease-uid"
    body["spec"]["renewTime"] = contract.micro_time(renewed)
    return body


FRESH = freshness.FRESH


# --- contact ---------------------------------------------------------------------------


def test_contact_holds_for_a_lease_duration_after_start_and_after_each_loss() -> None:
    c = Contact(since=100.0)
    assert c.state(101.0).hold_left == HOLD - 1.0  # at start nothing is fresh yet
    assert "operator started" in c.state(101.0).text
    for t in (101.0, 103.0, 105.0, 106.5):  # the probe answers
        assert not c.ok(t)
    assert c.state(106.5).fresh
    assert c.failed(107.0, "probe: request timed out")
    assert not c.failed(108.0, "again")  # one loss, noted once
    st = c.state(120.0)
    assert not st.fresh and math.isinf(st.hold_left)
    assert "no API contact for 13.0 s: probe: request timed out" in st.text
    assert c.ok(130.0)  # regained
    c.ok(132.0)
    st = c.state(133.2)
    assert st.since == 130.0 and st.hold_left == pytest.approx(HOLD - 3.2)
    assert st.text.startswith("API contact regained") and "3.2 s ago" in st.text
    c.ok(134.0)
    c.ok(130.0 + HOLD)
    assert c.state(130.0 + HOLD).fresh


def test_a_gap_between_answers_counts_as_a_loss() -> None:
    """The event loop (or the probe) stalled: nothing was seen for longer than max_gap."""
    c = Contact(since=0.0, max_gap=3.0)
    c.ok(10.0)
    assert not c.state(14.0).fresh and not c.in_contact(14.0)
    assert c.ok(14.0)
    assert c.state(14.0).since == 14.0 and "no answer for 4.0 s" in c.cause


# --- Lease age on the local clock ------------------------------------------------------


def test_lease_age_is_judged_from_when_the_renewal_was_seen_not_from_renew_time() -> None:
    clock = Clock(5000.0)
    store = Store(mono=clock)
    # the holder's clock is far behind ours: its renewTime is "old" the moment it is written
    store.put("Lease", svm_lease(A, acquired=10.0, renewed=20.0, rv=1))
    body = store.get("Lease", "ns", "svm1-owner")
    own = contract.read_ownership(body)
    seen = store.seen_of("Lease", "ns", "svm1-owner")
    assert lease_left(own, seen, FRESH, 5000.0) == HOLD
    assert lease_left(own, seen, FRESH, 5000.0 + HOLD - 1) == 1.0
    assert lease_left(own, seen, FRESH, 5000.0 + HOLD) == 0.0
    clock.t = 5004.0
    store.put("Lease", svm_lease(A, acquired=10.0, renewed=21.5, rv=2))  # renewed again
    seen = store.seen_of("Lease", "ns", "svm1-owner")
    assert seen is not None and seen.renewal == 5004.0
    own = contract.read_ownership(store.get("Lease", "ns", "svm1-owner"))
    assert lease_left(own, seen, FRESH, 5008.0) == HOLD - 4.0


def test_a_renewal_seen_here_counts_even_when_clocks_make_renew_time_look_early() -> None:
    clock = Clock(100.0)
    store = Store(mono=clock)
    # acquired by the operator (its clock), renewed by a pod whose clock is 3 s behind
    store.put("Lease", svm_lease(A, acquired=50.0, renewed=50.0, rv=1))
    own = contract.read_ownership(store.get("Lease", "ns", "svm1-owner"))
    assert lease_left(own, store.seen_of("Lease", "ns", "svm1-owner"), FRESH, 100.0) == 0.0
    clock.t = 101.0
    store.put("Lease", svm_lease(A, acquired=50.0, renewed=48.5, rv=2))
    own = contract.read_ownership(store.get("Lease", "ns", "svm1-owner"))
    assert not own.holder_renewed
    assert lease_left(own, store.seen_of("Lease", "ns", "svm1-owner"), FRESH, 102.0) == HOLD - 1
    # a new holder starts without a renewal
    clock.t = 103.0
    store.put("Lease", svm_lease(B, acquired=103.0, renewed=103.0, rv=3, epoch=2))
    seen = store.seen_of("Lease", "ns", "svm1-owner")
    assert seen is not None and seen.renewal is None


def test_after_an_outage_a_lease_expires_no_sooner_than_a_duration_after_contact() -> None:
    clock = Clock(100.0)
    store = Store(mono=clock)
    store.put("Lease", svm_lease(A, acquired=1.0, renewed=2.0, rv=1))  # seen at 100
    own = contract.read_ownership(store.get("Lease", "ns", "svm1-owner"))
    seen = store.seen_of("Lease", "ns", "svm1-owner")
    c = Contact(since=90.0)
    c.ok(100.0)
    c.failed(101.0, "probe: request timed out")
    # during the outage nothing expires
    assert lease_left(own, seen, c.state(150.0), 150.0) == math.inf
    c.ok(160.0)  # 60 s later: renewTime and our sighting are both a minute old
    assert lease_left(own, seen, c.state(160.0), 160.0) == HOLD
    c.ok(163.0)
    assert lease_left(own, seen, c.state(163.0), 163.0) == HOLD - 3.0
    assert not freshness.holder_lapsed(own, seen, c.state(163.0), 163.0)
    # not renewed for a whole duration with contact: lapsed
    c.ok(160.0 + HOLD)
    assert freshness.holder_lapsed(own, seen, c.state(160.0 + HOLD), 160.0 + HOLD)


# --- doubts ----------------------------------------------------------------------------


def test_while_contact_is_not_fresh_every_bad_status_is_doubted_but_facts_are_not() -> None:
    c = Contact(since=100.0)
    st = c.state(102.0)
    bad = Evidence(node=node(A), pod=pod(A, ready=False))
    d = doubt(A, bad, st, 102.0)
    assert d is not None and d.left == HOLD - 2.0
    assert "operator started 2.0 s ago, waiting for fresh Node and Lease status" in d.why
    assert doubt(A, Evidence(node=node(A, "Unknown"), pod=pod(A)), st, 102.0) is not None
    gone = pod(A)
    gone["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert doubt(A, Evidence(node=node(A), pod=gone), st, 102.0) is None
    assert doubt(A, Evidence(node=node(A), pod=None), st, 102.0) is None
    assert doubt(A, Evidence(node=None, pod=pod(A)), st, 102.0) is None
    assert doubt(A, Evidence(node=node(A), pod=pod(A)), st, 102.0) is None  # healthy
    c.ok(103.0)
    c.ok(100.0 + HOLD)
    assert doubt(A, bad, c.state(100.0 + HOLD), 100.0 + HOLD) is None


def test_node_unknown_is_doubted_while_its_kubelet_heartbeat_is_live() -> None:
    unknown = node(A, "Unknown")
    e = Evidence(node=unknown, pod=pod(A), node_lease_left=12.0, node_lease_seen=970.0)
    d = doubt(A, e, FRESH, 1000.0)
    assert d is not None and d.left == 12.0
    assert (
        d.why == f"Node {A} reads Ready=Unknown but its kubelet renewed its node Lease 30.0 s ago"
    )
    # the heartbeat expired on our clock too: the node controller is right
    assert doubt(A, replace(e, node_lease_left=0.0), FRESH, 1000.0) is None
    # Ready=False is the kubelet's own report: believed
    assert doubt(A, replace(e, node=node(A, "False")), FRESH, 1000.0) is None
    # its pods marked NotReady by the node controller follow the node
    marked = replace(e, pod=pod(A, ready=False, containers=True))
    assert doubt(A, marked, FRESH, 1000.0) is not None
    assert doubt(A, replace(marked, node_lease_left=0.0), FRESH, 1000.0) is None


def test_a_pod_marked_by_the_node_controller_is_doubted_until_its_kubelet_had_time() -> None:
    marked = Evidence(node=node(A), pod=pod(A, ready=False, containers=True), pod_seen=990.0)
    d = doubt(A, marked, FRESH, 1000.0)
    assert d is not None and d.left == MARK_GRACE - 10.0 and "node controller" in d.why
    assert doubt(A, marked, FRESH, 990.0 + MARK_GRACE) is None
    # the kubelet's own verdict (ContainersReady=False) is believed at once
    probe_failed = replace(marked, pod=pod(A, ready=False, containers=False))
    assert doubt(A, probe_failed, FRESH, 1000.0) is None
    # so is the mark when the holder stopped renewing its Lease (it renewed before)
    assert doubt(A, replace(marked, holder_lapsed=True), FRESH, 1000.0) is None
    # the grace runs from when its Node was seen Ready again: the kubelet puts the pod
    # right only once it reports (here the Node was Unknown until 1005)
    back = replace(marked, node_seen=1005.0)
    d = doubt(A, back, FRESH, 1020.0)
    assert d is not None and d.left == MARK_GRACE - 15.0 and "since 15.0 s" in d.why
    assert doubt(A, back, FRESH, 1005.0 + MARK_GRACE) is None


def test_judge_collects_doubts_and_the_earliest_recheck() -> None:
    e = {
        A: Evidence(node=node(A, "Unknown"), pod=pod(A), node_lease_left=12.0),
        B: Evidence(node=node(B), pod=pod(B, ready=False, containers=True), pod_seen=995.0),
    }
    t = judge(e, FRESH, 1000.0)
    assert set(t.doubted) == {A, B} and t.recheck_after == 12.0 and not t.hold_deletions
    c = Contact(since=999.0)
    t = judge({A: Evidence(node=node(A), pod=pod(A))}, c.state(1000.0), 1000.0)
    assert t.doubted == {} and t.hold_deletions and t.recheck_after == HOLD - 1.0


def test_the_store_times_node_heartbeats() -> None:
    clock = Clock(100.0)
    store = Store(mono=clock)
    store.put(NODE_LEASE, node_lease(A, "2024-01-01T00:00:00.000000Z", 1))
    clock.t = 130.0
    store.put(NODE_LEASE, node_lease(A, "2024-01-01T00:00:00.000000Z", 2))  # no renewal
    e = freshness.evidence(store, A, pod(A), FRESH, 135.0, node_body=node(A, "Unknown"))
    assert e.node_lease_left == 5.0 and e.node_lease_seen == 100.0
    clock.t = 131.0
    store.put(NODE_LEASE, node_lease(A, "2024-01-01T00:00:31.000000Z", 3))
    e = freshness.evidence(store, A, pod(A), FRESH, 135.0, node_body=node(A, "Unknown"))
    assert e.node_lease_left == 36.0 and e.node_lease_seen == 131.0


# --- decisions with doubted nodes ------------------------------------------------------

UP = NodeFacts(exists=True, ready=True)
DOWN = NodeFacts(exists=True, ready=False)
SERVING = PodFacts(exists=True, ready=True, ready_since=0.0)
NOT_READY = PodFacts(exists=True, ready=False)


def view(**kw: object) -> PairView:
    base = PairView(
        nodes=(A, B),
        node_facts={A: UP, B: UP},
        pod_facts={A: SERVING, B: SERVING},
        giveback_delay=5.0,
        now=100.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_no_failover_from_a_doubted_holder_and_the_message_says_why() -> None:
    why = "API contact regained 3.2 s ago, waiting for fresh Node and Lease status"
    stale = view(node_facts={A: DOWN, B: UP}, doubted={A: why}, recheck_after=2.8)
    d = decide_owner(stale, A, None, A, Reason.HOME)
    assert (d.owner, d.move, d.held, d.requeue_after) == (A, False, True, 2.8)
    assert d.message == f"holding takeover from {A}: {why}"
    # the same status, once believed, fails over
    d = decide_owner(replace(stale, doubted={}), A, None, A, Reason.HOME)
    assert (d.owner, d.move, d.reason) == (B, True, Reason.FAILOVER)
    # also away from a doubted partner holding the SVM after an earlier failover
    away = view(pod_facts={A: SERVING, B: NOT_READY}, doubted={B: why})
    d = decide_owner(away, A, None, B, Reason.FAILOVER)
    assert (d.owner, d.move, d.held) == (B, False, True)
    # a pod that is gone is a fact: taken over at once (it is never doubted)
    gone = view(pod_facts={A: PodFacts(exists=False), B: SERVING}, doubted={})
    assert decide_owner(gone, A, None, A, Reason.HOME).owner == B


def test_planned_moves_are_not_held_by_doubts_about_the_other_node() -> None:
    # giveback from B (serving) to A; B's own status is fine, A's partner doubt is moot
    stale = view(doubted={B: "stale"}, takeover=None)
    d = decide_owner(stale, A, None, B, Reason.PLANNED_TAKEOVER)
    assert (d.owner, d.move, d.reason, d.held) == (A, True, Reason.GIVEBACK, False)
    # a planned takeover of a node that looks down is a failover like any other
    down = view(node_facts={A: DOWN, B: UP}, doubted={A: "stale"}, takeover=A)
    assert decide_owner(down, A, None, A, Reason.HOME).held


def test_no_lif_failover_away_from_a_doubted_node_but_revert_onto_health_is_fine() -> None:
    stale = view(node_facts={A: DOWN, B: UP}, doubted={A: "stale"}, recheck_after=4.0)
    d = decide_lif(stale, A, None, A, A, "Home")
    assert (d.node, d.state, d.held, d.requeue_after) == (A, "Home", "stale", 4.0)
    assert decide_lif(replace(stale, doubted={}), A, None, A, A, "Home").node == B
    # both doubted-down and the partner down: no "Down" from a status that may be stale
    both = view(node_facts={A: DOWN, B: DOWN}, doubted={A: "stale"})
    assert decide_lif(both, A, None, A, A, "Home").state == "Home"
    # a LIF that failed over to a doubted B returns to a serving home
    back = view(node_facts={A: UP, B: DOWN}, doubted={B: "stale"}, giveback_delay=0.0)
    d = decide_lif(back, A, None, B, B, "FailedOver")
    assert (d.node, d.state, d.held) == (A, "Home", "")


def test_no_pod_is_deleted_while_contact_is_not_fresh_nor_replaced_on_doubt() -> None:
    outdated = replace(SERVING, current=False)
    upgrade = view(pod_facts={A: SERVING, B: outdated})
    assert pod_actions(upgrade, A, [A]).delete == [B]
    held = pod_actions(replace(upgrade, hold_deletions=True, recheck_after=3.0), A, [A])
    assert held.delete == [] and held.waiting == [B] and held.requeue_after == 3.0
    # both look down: replacing the outdated pod is harmless -- unless that may be stale
    lonely = view(
        node_facts={A: DOWN, B: DOWN},
        pod_facts={A: NOT_READY, B: replace(NOT_READY, current=False)},
    )
    assert pod_actions(lonely, A, [A]).delete == [B]
    assert pod_actions(replace(lonely, doubted={A: "stale"}), A, [A]).delete == []
    # missing pods are still created while holding
    empty = view(pod_facts={A: SERVING, B: PodFacts(exists=False)}, hold_deletions=True)
    assert pod_actions(empty, A, [A]).create == [B]


def test_a_partner_failover_is_a_fact_that_clears_the_old_holders_doubt() -> None:
    stale = view(pod_facts={A: SERVING, B: SERVING}, doubted={A: "stale"})
    after = after_partner_failover(stale, B, Reason.PARTNER_FAILOVER, 50.0)
    assert A not in after.doubted and not after.serving(A)
    assert decide_lif(after, A, None, A, B, "Home").node == B


# --- the outage scenarios, end to end through Store, Contact and the decisions --------


def _scenario(
    renewed_after: bool, marks: bool = True, kubelet: bool = False
) -> tuple[Store, Contact, Clock]:
    """Owner A renewed before a 60 s outage; after it the node controller marks A's
    Node Unknown and both pods NotReady before any kubelet reports (as it does after
    an outage longer than its grace period)."""
    clock = Clock(100.0)
    store = Store(mono=clock)
    contact = Contact(since=0.0)
    contact.ok(100.0)
    for n in (A, B):
        store.put("Node", node(n))
        store.put("Pod", pod(n))
        store.put(NODE_LEASE, node_lease(n, "2024-01-01T00:00:00.000000Z", 1))
    store.put("Lease", svm_lease(A, 1.0, 1.0, rv=10))
    clock.t = 101.0
    store.put("Lease", svm_lease(A, 1.0, 2.0, rv=11))  # A renews
    contact.failed(102.0, "probe: request timed out")
    clock.t = 162.0
    contact.ok(162.0)
    if marks:
        store.put("Node", node(A, "Unknown"))
        store.put("Pod", pod(A, ready=False, containers=kubelet is False, rv=2))
    if renewed_after:
        clock.t = 162.5
        store.put("Lease", svm_lease(A, 1.0, 64.0, rv=12))
        store.put(NODE_LEASE, node_lease(A, "2024-01-01T00:01:02.000000Z", 2))
    return store, contact, clock


def _decide(store: Store, contact: Contact, now: float) -> tuple[Any, Any]:
    """What the reconcile decides at `now`, the probe having answered every second."""
    t = contact.last_ok
    while t + 1.0 < now:
        t += 1.0
        contact.ok(t)
    contact.ok(now)
    lease = store.get("Lease", "ns", "svm1-owner")
    own = contract.read_ownership(lease)
    seen = store.seen_of("Lease", "ns", "svm1-owner")
    st = contact.state(now)
    lapsed = freshness.holder_lapsed(own, seen, st, now)
    ev = {
        n: freshness.evidence(
            store, n, store.get("Pod", "ns", f"svm1-{n}"), st, now, lapsed and n == A
        )
        for n in (A, B)
    }
    trust = judge(ev, st, now)
    from hasmb.controller.facts import node_facts, pod_facts

    v = PairView(
        nodes=(A, B),
        node_facts={n: node_facts(store.get("Node", "", n)) for n in (A, B)},
        pod_facts={n: pod_facts(store.get("Pod", "ns", f"svm1-{n}"), "") for n in (A, B)},
        doubted=trust.doubted,
        recheck_after=trust.recheck_after,
        hold_deletions=trust.hold_deletions,
    )
    return decide_owner(v, A, None, own.holder, Reason.HOME), lease_left(own, seen, st, now)


def test_after_an_outage_an_owner_that_renews_again_is_not_taken_over() -> None:
    store, contact, clock = _scenario(renewed_after=True)
    d, _ = _decide(store, contact, 165.0)
    assert d.held and "API contact regained" in d.message
    rv, renewed, held_by = 100, 64.0, set()
    for step in range(1, 60):  # 30 s of the owner renewing every 1.5 s, status still stale
        clock.t = 162.5 + step * 0.5
        if step % 3 == 0:
            rv, renewed = rv + 1, renewed + 1.5
            store.put("Lease", svm_lease(A, 1.0, renewed, rv=rv))
        d, left = _decide(store, contact, clock.t)
        assert d.owner == A, (clock.t, d)
        # held by a doubt (status not fresh, node heartbeat live) or by its live Lease
        assert not d.move and (d.held or left > 0), (clock.t, d)
        held_by.add("doubt" if d.held else "lease")
    assert held_by == {"doubt"}  # A's node heartbeats: its Unknown is never believed


def test_after_an_outage_a_dead_owner_is_taken_over_once_its_lease_lapsed() -> None:
    store, contact, _ = _scenario(renewed_after=False)
    d, _ = _decide(store, contact, 165.0)
    assert d.held and not d.move  # within the hold: nothing is fresh yet
    d, left = _decide(store, contact, 162.0 + HOLD + 0.1)
    assert (d.owner, d.move, d.reason) == (B, True, Reason.FAILOVER) and left == 0.0


def test_a_stale_not_ready_with_an_unrenewed_lease_waits_for_the_kubelet() -> None:
    """Without a renewing holder (only the operator wrote the Lease) the node controller's
    marks are doubted while the node heartbeats; the kubelet's own verdict is believed."""
    store, contact, clock = _scenario(renewed_after=False)
    store.put("Lease", svm_lease(A, 1.0, 1.0, rv=20, epoch=2))  # nobody renews it
    clock.t = 163.0
    store.put(NODE_LEASE, node_lease(A, "2024-01-01T00:01:03.000000Z", 3))
    d, _ = _decide(store, contact, 162.0 + HOLD + 0.1)
    assert d.held and "kubelet renewed its node Lease" in d.message
    store.put("Pod", pod(A, ready=False, containers=False, rv=3))  # the probe really fails
    store.put("Node", node(A))
    d, _ = _decide(store, contact, 162.0 + HOLD + 0.2)
    assert (d.owner, d.move) == (B, True)


# --- the Runtime's probe ---------------------------------------------------------------


def test_what_counts_as_lost_contact() -> None:
    import aiohttp

    from hasmb.controller.runtime import lost_contact
    from hasmb.kube.client import ApiError

    assert lost_contact(ApiError(503, "ServiceUnavailable", "")) == "HTTP 503 ServiceUnavailable"
    assert lost_contact(ApiError(429, "TooManyRequests", "storage is (re)initializing"))
    assert lost_contact(TimeoutError()) == "request timed out"
    assert lost_contact(aiohttp.ServerDisconnectedError())
    assert lost_contact(ConnectionRefusedError(111, "refused"))
    # refusals are answers: the server is there
    for refusal in (409, 404, 422, 403):
        assert lost_contact(ApiError(refusal, "x", "")) is None
    assert lost_contact(ValueError("bad json")) is None


class HangingApi:
    """Answers requests, or lets them hang while `hung` is set (a SIGSTOPped apiserver)."""

    def __init__(self) -> None:
        import asyncio

        self.hung = False
        self.resume = asyncio.Event()
        self.lists = 0

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        while self.hung:
            self.resume.clear()
            await self.resume.wait()
        return {"items": []}

    async def list_versioned(
        self, res: Any, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        await self.request("GET", "")
        self.lists += 1
        return [], 1


async def test_the_probe_notices_a_hung_api_server_and_relists_when_it_answers() -> None:
    import asyncio
    from typing import cast

    from hasmb.controller.runtime import Runtime
    from hasmb.kube.client import KubeClient

    api = HangingApi()
    rt = Runtime(kube=cast(KubeClient, api), probe_interval=0.02, probe_timeout=0.1)
    rt.contact.hold = 0.3
    probe = asyncio.create_task(rt._probe())

    async def until(cond: Any, what: str, within: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while not cond():
            assert asyncio.get_running_loop().time() < deadline, what
            await asyncio.sleep(0.01)

    try:
        await until(lambda: rt.contact.state(rt.mono()).fresh, "fresh after the start hold")
        api.hung = True
        await until(lambda: not rt.contact.in_contact(rt.mono()), "the loss noticed")
        assert "probe: request timed out" in rt.contact.state(rt.mono()).text
        api.hung = False
        api.resume.set()
        await until(lambda: rt.contact.in_contact(rt.mono()), "contact regained")
        st = rt.contact.state(rt.mono())
        assert not st.fresh and st.text.startswith("API contact regained (lost")
        await until(lambda: api.lists > 0, "a LIST of everything after the regain")
        await until(lambda: rt.contact.state(rt.mono()).fresh, "fresh one hold later")
    finally:
        probe.cancel()
        await rt.stop()
