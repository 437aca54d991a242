"""A Lease the partner pod took itself (PartnerFailover): what the operator and the pod decide."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from hasmb.controller.placement import (
    NodeFacts,
    PairView,
    PodFacts,
    Reason,
    after_partner_failover,
    decide_lif,
    decide_owner,
)
from hasmb.podrt.lease import LeaseView, LeaseWatch
from hasmb.podrt.partner import PartnerWatch
from hasmb.podrt.peers import PeerWatch
from hasmb.smb.pair import Probe, probe

A, B = "node-a", "node-b"
UP = NodeFacts(exists=True, ready=True)
TAKEN_AT = 1000.4  # acquireTime the partner pod wrote


def view(a_ready_since: float | None, now: float = 1100.0) -> PairView:
    return PairView(
        nodes=(A, B),
        node_facts={A: UP, B: UP},
        pod_facts={
            A: PodFacts(exists=True, ready=True, ready_since=a_ready_since),
            B: PodFacts(exists=True, ready=True, ready_since=0.0),
        },
        giveback_delay=5.0,
        now=now,
    )


def decide(v: PairView, lif_at: str = A, lif_state: str = "Home") -> tuple[str | None, bool, str]:
    v = after_partner_failover(v, B, Reason.PARTNER_FAILOVER, TAKEN_AT)
    d = decide_owner(v, A, None, B, Reason.PARTNER_FAILOVER)
    lif = decide_lif(v, A, None, lif_at, B, lif_state)
    return d.owner, d.move, lif.node


def test_no_giveback_to_a_pod_whose_ready_predates_the_takeover() -> None:
    # a cut-off node's pod still shows Ready (since long before): no giveback, and the
    # LIF homed there fails over to the new owner
    assert decide(view(a_ready_since=10.0)) == (B, False, B)
    # without the rule the stale Ready would hand the SVM straight back
    stale = decide_owner(view(a_ready_since=10.0), A, None, B, Reason.PARTNER_FAILOVER)
    assert (stale.owner, stale.move) == (A, True)


def test_giveback_once_the_pod_became_ready_after_the_takeover_and_stayed() -> None:
    # restarted container Ready in the takeover's second (lastTransitionTime is whole
    # seconds) or later counts; giveback still waits for the giveback delay
    assert decide(view(a_ready_since=1000.0, now=1002.0), B, "FailedOver") == (B, False, B)
    assert decide(view(a_ready_since=1003.0, now=1010.0), B, "FailedOver") == (A, True, A)


def test_operator_reasons_are_untouched() -> None:
    v = view(a_ready_since=10.0)
    assert after_partner_failover(v, B, Reason.FAILOVER, TAKEN_AT) is v
    assert after_partner_failover(v, B, Reason.PARTNER_FAILOVER, None) is v


def test_lease_expiry_is_judged_on_the_local_clock_from_the_last_change() -> None:
    watch = LeaseWatch(api=None, namespace="ns", name="l")  # type: ignore[arg-type]
    base: dict[str, Any] = {
        "metadata": {"resourceVersion": "5", "annotations": {"hasmb.io/epoch": "1"}},
        "spec": {
            "holderIdentity": A,
            "leaseDurationSeconds": 8,
            "renewTime": "2026-01-01T00:00:00.000000Z",
        },
    }
    watch.observe(base)
    assert isinstance(watch.current, LeaseView) and not watch.expired_locally()
    watch.progressed = time.monotonic() - 8.5
    assert watch.expired_locally()
    # a renewal seen restarts the local clock
    renewed = {
        "metadata": {**base["metadata"], "resourceVersion": "6"},
        "spec": {**base["spec"], "renewTime": "2026-01-01T00:00:02.000000Z"},
    }
    watch.observe(renewed)
    assert not watch.expired_locally()
    # the same renewTime again (e.g. a re-list) is no progress
    watch.progressed = time.monotonic() - 8.5
    watch.observe({**renewed, "metadata": {**renewed["metadata"], "resourceVersion": "7"}})
    assert watch.expired_locally()


async def test_probe_tells_dead_from_alive() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await probe("127.0.0.1", port, 1.0) is Probe.ALIVE
    finally:
        server.close()
        await server.wait_closed()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert await probe("127.0.0.1", free, 1.0) is Probe.DEAD


class RecordingApi:
    """Stands in for the apiserver: answers the Lease patch as a merge would."""

    def __init__(self, lease: dict[str, Any]) -> None:
        self.lease = lease
        self.patches: list[dict[str, Any]] = []

    async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        assert method == "PATCH"
        patch = kw["body"]
        self.patches.append(patch)
        md = self.lease["metadata"]
        assert patch["metadata"]["resourceVersion"] == md["resourceVersion"]
        md["annotations"].update(patch["metadata"]["annotations"])
        md["resourceVersion"] = str(int(md["resourceVersion"]) + 1)
        self.lease["spec"].update(patch["spec"])
        return self.lease


async def test_standby_takes_the_lease_only_from_a_holder_it_saw_alive() -> None:
    lease = {
        "metadata": {"resourceVersion": "5", "annotations": {"hasmb.io/epoch": "3"}},
        "spec": {"holderIdentity": A, "leaseDurationSeconds": 8},
    }
    api = RecordingApi(lease)
    watch = LeaseWatch(api=api, namespace="ns", name="l")  # type: ignore[arg-type]
    watch.observe(lease)
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    peers = PeerWatch(api=api, namespace="ns", svm="svm1")  # type: ignore[arg-type]
    peers.addresses = {A: "127.0.0.1"}
    partner = PartnerWatch(watch, peers, B, port, lambda: True)
    # refused, but never seen accepting: a holder still starting; the Lease is fresh
    assert not await partner.check_once() and not api.patches
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    assert not await partner.check_once()  # alive
    server.close()
    await server.wait_closed()
    assert await partner.check_once()  # the process is gone: take the Lease now
    [patch] = api.patches
    assert patch["metadata"]["annotations"] == {
        "hasmb.io/epoch": "4",
        "hasmb.io/reason": "PartnerFailover",
        "hasmb.io/fencing": "lease",  # taking the Lease grants the taker, like a renewal
    }
    assert patch["spec"]["holderIdentity"] == B
    assert watch.current is not None and (watch.current.holder, watch.current.epoch) == (B, 4)
    assert not await partner.check_once()  # this pod holds it now: nothing to watch
