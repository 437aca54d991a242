"""Acceptance (issue 19): after an API-server outage the operator acts on fresh status only.

A control plane of this module's own (its kube-apiserver is SIGSTOPped, which must
not stall other test sessions on the shared cluster), two kwok nodes, the operator
as a local process, and `OwnerRenewer` doing what hasmb-smbd on the owner does with
its Lease. The outage (12 s) is longer than the Lease (6 s), so every renewTime is
stale when the API server resumes; kube-controller-manager's grace period is 50 s,
so the tests write its post-outage verdict themselves (Node Ready=Unknown, pods
marked NotReady with ContainersReady still True), as it does after a longer outage
before the kubelets have reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.cluster.operator_harness import (
    OperatorEnv,
    OwnerRenewer,
    PrivateCluster,
    condition,
    operator_env,
    private_cluster,
    ready,
    wait_for,
)

OUTAGE = 12.0  # seconds the apiserver is stopped: longer than the 6 s Lease
HOLD = 6.0  # hasmb.contract.LEASE_SECONDS: the operator's hold after contact returns


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster("outage") as pc:
        yield pc


@pytest.fixture(scope="module")
def env(cluster: PrivateCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorEnv]:
    for e in operator_env(cluster.cluster, tmp_path_factory.mktemp("operator"), "hasmb-out"):
        e.install_samples(timeout=60)
        yield e


def _home(env: OperatorEnv) -> int:
    a = env.nodes[0]
    env.wait(
        lambda: (
            env.lease("svm1")[0] == a
            and env.selector_node("svm1-lif-a") == a
            and env.selector_node("svm1-lif-b") == env.nodes[1]
            and len(env.svm_pods("svm1")) == 2
            and ready(env.get("svm", "svm1"))
        ),
        30,
        "svm1 home, both pods, both LIFs home, Ready",
    )
    return env.lease("svm1")[1]


def _placement(env: OperatorEnv) -> dict[str, Any]:
    """What a destructive step would change: ownership, pods, LIF Services."""
    return {
        "lease": env.lease("svm1"),
        "pods": {n: p["metadata"]["uid"] for n, p in env.svm_pods("svm1").items()},
        "lif-a": env.selector_node("svm1-lif-a"),
        "lif-b": env.selector_node("svm1-lif-b"),
    }


def _renewed_once_more(renewer: OwnerRenewer, after: float, timeout: float = 15.0) -> float:
    return wait_for(
        lambda: next((t for t in renewer.renewed if t > after), None),
        timeout,
        "a Lease renewal",
    )


def _restore(env: OperatorEnv, node: str) -> None:
    """The kubelet reports again: Node Ready (kwok manages it again), its pod Ready."""
    env.set_node_ready(node, True)
    env.post_node_ready(node)
    env.set_pod_ready(f"svm1-{node}", True)


def _held_messages(env: OperatorEnv) -> list[str]:
    out = env.kubectl("get", "events", "--field-selector", "involvedObject.name=svm1", "-o", "json")
    return [e.get("message", "") for e in json.loads(out)["items"] if e["reason"] == "FailoverHeld"]


def test_after_an_outage_stale_status_moves_nothing_while_the_owner_renews(
    env: OperatorEnv, cluster: PrivateCluster
) -> None:
    a = env.nodes[0]
    epoch = _home(env)
    renewer = OwnerRenewer(env, "svm1", a, fencing="partner").start()
    try:
        _renewed_once_more(renewer, time.time())
        before = _placement(env)
        with cluster.apiserver_stopped():
            time.sleep(OUTAGE)  # the outage itself, not a synchronisation
        resumed = time.time()
        # The node controller's verdict after the outage, before the kubelet reported:
        # the owner's Node Unknown and its pod NotReady; the owner renews meanwhile.
        env.mark_node_unknown(a)
        env.mark_pod_not_ready_by_node_controller(f"svm1-{a}")
        _renewed_once_more(renewer, resumed)
        # The operator must see the stale status and say why it does nothing about it:
        # first because its own contact is not fresh yet...
        svm = env.wait(
            lambda: (
                (s := env.get("svm", "svm1"))
                and condition(s, "Ready").get("reason") == "FailoverHeld"
                and "API contact regained" in condition(s, "Ready").get("message", "")
                and s
            ),
            HOLD,
            "the SVM to report the takeover held after contact returned",
        )
        assert a in condition(svm, "Ready")["message"]
        # 3 lease durations with stale Node/pod status: no takeover, no LIF move, no
        # pod deleted or replaced.
        with pytest.raises(AssertionError):
            wait_for(lambda: _placement(env) != before, 3 * HOLD, "a destructive step")
        assert _placement(env) == before and env.lease("svm1") == (a, epoch)
        assert _held_messages(env), "no FailoverHeld Event"
        held = condition(env.get("svm", "svm1"), "Ready")["message"]
        # ...then, past the hold, because the Node's Unknown is contradicted by the
        # heartbeat of its kubelet (the harness renews the node Lease every 5 s)
        assert "kubelet renewed its node Lease" in held, held
        lif = env.get("lif", "svm1-lif-a")
        assert lif["status"]["state"] == "Home" and lif["status"]["currentNode"] == a
        _restore(env, a)
        env.wait(
            lambda: condition(env.get("svm", "svm1"), "Ready").get("status") == "True",
            15,
            "svm1 Ready again",
        )
        assert _placement(env) == before
        assert "no longer held" in env.log_path.read_text()
    finally:
        renewer.stop()
        _restore(env, a)


def test_after_an_outage_a_dead_owner_is_taken_over_once_status_is_fresh(
    env: OperatorEnv, cluster: PrivateCluster
) -> None:
    a, b = env.nodes
    epoch = _home(env)
    renewer = OwnerRenewer(env, "svm1", a, fencing="lease").start()
    try:
        _renewed_once_more(renewer, time.time())
    finally:
        renewer.stop()  # the owner dies just before the outage; so does its kubelet
    env.alive.discard(a)
    with cluster.apiserver_stopped():
        time.sleep(OUTAGE)
    resumed = time.time()
    env.mark_node_unknown(a)
    env.mark_pod_not_ready_by_node_controller(f"svm1-{a}")
    try:
        lease = env.wait(
            lambda: (
                (lease := env.get("lease", "svm1-owner"))["spec"]["holderIdentity"] == b and lease
            ),
            HOLD + 15,
            "takeover of the dead owner",
        )
        assert env.lease("svm1") == (b, epoch + 1)
        moved = datetime.fromisoformat(lease["spec"]["acquireTime"]).timestamp()
        # not on the stale status right after the outage: a lease duration of fresh
        # information first (the owner's Lease not renewed since contact returned)
        assert moved >= resumed + HOLD - 1.0, (moved - resumed, env.log_tail())
        env.wait(lambda: env.selector_node("svm1-lif-a") == b, 10, "LIF a fails over")
        assert env.get("svm", "svm1")["status"]["lastTakeover"]["from"] == a
    finally:
        _restore(env, a)
    env.wait(
        lambda: env.lease("svm1") == (a, epoch + 2) and env.selector_node("svm1-lif-a") == a,
        30,
        "giveback to the recovered owner",
    )


def test_a_restarted_operator_does_not_act_on_status_it_has_not_seen_fresh(
    env: OperatorEnv,
) -> None:
    """At start the operator's view is as old as its LIST: the same rule as after an outage."""
    a = env.nodes[0]
    _home(env)
    renewer = OwnerRenewer(env, "svm1", a, fencing="partner").start()
    try:
        _renewed_once_more(renewer, time.time())
        before = _placement(env)
        env.stop_operator(kill=True)
        env.proc = None
        env.mark_node_unknown(a)
        env.mark_pod_not_ready_by_node_controller(f"svm1-{a}")
        env.start_operator()
        env.wait(
            lambda: any("operator started" in m for m in _held_messages(env)),
            20,
            "the restarted operator to report the hold",
        )
        with pytest.raises(AssertionError):
            wait_for(lambda: _placement(env) != before, 2 * HOLD, "a destructive step")
        assert _placement(env) == before
    finally:
        renewer.stop()
        _restore(env, a)
    _home(env)
