"""Acceptance: killing the operator at any point and restarting it converges."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.cluster.operator_harness import (
    OperatorEnv,
    ServingMonitor,
    condition,
    operator_env,
    wait_for,
)
from tests.support.cluster import KubeCluster


@pytest.fixture(scope="module")
def env(
    kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorEnv]:
    for e in operator_env(kube_cluster, tmp_path_factory.mktemp("operator"), "hasmb-rs"):
        e.install_samples()
        yield e


def _restart(env: OperatorEnv) -> None:
    env.stop_operator(kill=True)
    env.proc = None
    env.start_operator()


def _home(env: OperatorEnv) -> int:
    a = env.nodes[0]
    env.wait(
        lambda: (
            env.lease("svm1")[0] == a
            and env.selector_node("svm1-lif-a") == a
            and len(env.svm_pods("svm1")) == 2
        ),
        30,
        "svm1 home with both pods",
    )
    return env.lease("svm1")[1]


def test_restart_in_steady_state_changes_nothing(env: OperatorEnv) -> None:
    epoch = _home(env)
    uids = {n: p["metadata"]["uid"] for n, p in env.svm_pods("svm1").items()}
    _restart(env)
    with pytest.raises(AssertionError):
        wait_for(lambda: env.lease("svm1")[1] != epoch, 5, "an epoch change")
    assert {n: p["metadata"]["uid"] for n, p in env.svm_pods("svm1").items()} == uids


def test_pod_lost_while_the_operator_is_down(env: OperatorEnv) -> None:
    a, b = env.nodes
    epoch = _home(env)
    env.stop_operator(kill=True)
    env.kubectl("delete", "pod", f"svm1-{a}", "--wait=true", "--timeout=30s")
    env.proc = None
    env.start_operator()
    env.wait(lambda: env.lease("svm1") == (b, epoch + 1), 15, "takeover after restart")
    env.wait(lambda: env.selector_node("svm1-lif-a") == b or env.lease("svm1")[0] == a, 10, "LIF")
    env.wait(lambda: env.lease("svm1") == (a, epoch + 2), 30, "giveback")
    _home(env)


def test_killed_right_after_a_planned_takeover_request(env: OperatorEnv) -> None:
    a, b = env.nodes
    epoch = _home(env)
    env.kubectl(
        "patch", "hapair", "pair1", "--type=merge", "-p", f'{{"spec":{{"takeover":"{a}"}}}}'
    )
    _restart(env)
    env.wait(
        lambda: env.lease("svm1") == (b, epoch + 1) and env.selector_node("svm1-lif-a") == b,
        15,
        "takeover converges",
    )
    env.kubectl("patch", "hapair", "pair1", "--type=merge", "-p", '{"spec":{"takeover":null}}')
    _restart(env)
    env.wait(lambda: env.lease("svm1") == (a, epoch + 2), 15, "giveback converges")
    env.wait(
        lambda: env.get("hapair", "pair1")["status"].get("state") == "Normal", 15, "pair Normal"
    )


@pytest.mark.parametrize("kill_after", ["standby replaced", "ownership moved", "owner replaced"])
def test_killed_during_a_rolling_upgrade(env: OperatorEnv, kill_after: str) -> None:
    a, b = env.nodes
    _home(env)
    image = f"hasmb:restart-{kill_after.split()[0]}"
    mon = ServingMonitor(env, "svm1")
    try:
        wait_for(lambda: {k for _, k, _, _ in list(mon.events)} == set(mon.KINDS), 15, "watches")
        env.kubectl(
            "patch", "svm", "svm1", "--type=merge", "-p", f'{{"spec":{{"image":"{image}"}}}}'
        )

        def image_on(node: str) -> bool:
            pod = env.svm_pods("svm1").get(node)
            return pod is not None and pod["spec"]["containers"][0]["image"] == image

        def seen(kind: str, match: Callable[[dict[str, Any]], bool]) -> bool:
            # From the watch stream: these states may last only milliseconds.
            events = list(mon.events)
            return any(k == kind and e != "DELETED" and match(o) for _, k, e, o in events)

        def new_pod_on(node: str) -> Callable[[dict[str, Any]], bool]:
            return lambda o: (
                o["spec"].get("nodeName") == node and o["spec"]["containers"][0]["image"] == image
            )

        points = {
            "standby replaced": lambda: seen("pods", new_pod_on(b)),
            "ownership moved": lambda: seen("leases", lambda o: o["spec"]["holderIdentity"] == b),
            "owner replaced": lambda: seen("pods", new_pod_on(a)),
        }
        env.wait(points[kill_after], 30, kill_after)
        _restart(env)
        env.wait(
            lambda: (
                image_on(a)
                and image_on(b)
                and env.lease("svm1")[0] == a
                and env.selector_node("svm1-lif-a") == a
            ),
            30,
            "upgrade completes after the restart",
        )
        svm = env.wait(
            lambda: (s := env.get("svm", "svm1"))["status"].get("image") == image and s,
            15,
            "status image",
        )
        assert condition(svm, "Ready")["status"] == "True"
    finally:
        mon.stop()
    assert mon.violations() == []


def test_svm_deleted_while_the_operator_is_down(env: OperatorEnv) -> None:
    env.stop_operator(kill=True)
    env.kubectl("delete", "svm", "svm1", "--wait=false")
    # The finalizer holds the SVM (and its pods) until the operator has cleaned up.
    svm = env.get("svm", "svm1")
    assert svm["metadata"].get("deletionTimestamp") and svm["metadata"].get("finalizers")
    env.proc = None
    env.start_operator()
    env.wait(lambda: not env.get("svm", "svm1"), 30, "SVM finalised")
    for kind in ("pods", "services", "configmaps", "leases"):

        def gone(kind: str = kind) -> bool:
            return not env.list(kind, "hasmb.io/svm=svm1")

        env.wait(gone, 30, f"{kind} gone")
