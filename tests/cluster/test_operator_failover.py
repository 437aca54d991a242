"""Acceptance: unplanned takeover (pod deleted, container dead, node NotReady) and giveback."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.operator_harness import OperatorEnv, condition, operator_env
from tests.support.cluster import KubeCluster
from tests.support.net import free_port


@pytest.fixture(scope="module")
def env(
    kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorEnv]:
    for e in operator_env(kube_cluster, tmp_path_factory.mktemp("operator"), "hasmb-fo"):
        # Restart with metrics on a free loopback port.
        e.stop_operator()
        e.proc = None
        e.operator_args = ["--metrics", f"127.0.0.1:{free_port()}", "--log-format", "json"]
        e.start_operator()
        e.install_samples()
        yield e


def _metrics(env: OperatorEnv) -> str:
    listen = env.operator_args[env.operator_args.index("--metrics") + 1]
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def _owner_is(env: OperatorEnv, node: str, epoch: int) -> bool:
    return env.lease("svm1") == (node, epoch) and env.selector_node("svm1-lif-a") == node


def _wait_home(env: OperatorEnv) -> int:
    a = env.nodes[0]
    env.wait(
        lambda: env.lease("svm1")[0] == a and env.selector_node("svm1-lif-a") == a, 30, "svm1 home"
    )
    env.wait(lambda: len(env.svm_pods("svm1")) == 2, 30, "both pods")
    return env.lease("svm1")[1]


def test_deleting_the_serving_pod_triggers_takeover_then_giveback(env: OperatorEnv) -> None:
    a, b = env.nodes
    epoch = _wait_home(env)
    env.kubectl("delete", "pod", f"svm1-{a}", "--wait=false")
    env.wait(lambda: _owner_is(env, b, epoch + 1), 5, "takeover by the partner")
    assert env.selector_node("svm1-lif-b") == b
    svm = env.get("svm", "svm1")
    assert svm["status"]["currentNode"] == b and svm["status"]["epoch"] == epoch + 1
    assert (
        svm["status"]["lastTakeover"]["from"] == a
        and svm["status"]["lastTakeover"]["planned"] is False
    )
    lif = env.get("lif", "svm1-lif-a")
    assert lif["status"]["currentNode"] == b and lif["status"]["state"] == "FailedOver"
    assert "Takeover" in env.events("svm1") and "FailedOver" in env.events("svm1-lif-a")
    # autoGiveback (5 s of health) brings ownership and the LIF home.
    env.wait(lambda: _owner_is(env, a, epoch + 2), 30, "giveback")
    svm = env.get("svm", "svm1")
    assert svm["status"]["lastGiveback"]["to"] == a
    assert svm["status"]["lastGiveback"]["durationSeconds"] < 5
    assert "Giveback" in env.events("svm1") and "Reverted" in env.events("svm1-lif-a")
    assert condition(svm, "Ready")["status"] == "True"


def test_a_dead_container_triggers_takeover(env: OperatorEnv) -> None:
    a, b = env.nodes
    epoch = _wait_home(env)
    env.set_pod_ready(f"svm1-{a}", False)
    env.wait(lambda: _owner_is(env, b, epoch + 1), 5, "takeover after readiness loss")
    degraded = condition(env.get("svm", "svm1"), "Degraded")
    assert degraded["status"] == "True" and a in degraded["message"]
    env.set_pod_ready(f"svm1-{a}", True)
    env.wait(lambda: _owner_is(env, a, epoch + 2), 30, "giveback after recovery")


def test_node_not_ready_triggers_takeover_of_the_node(env: OperatorEnv) -> None:
    a, b = env.nodes
    epoch = _wait_home(env)
    env.set_node_ready(a, False)
    try:
        env.wait(lambda: _owner_is(env, b, epoch + 1), 10, "takeover of the NotReady node")
        pair = env.wait(
            lambda: (p := env.get("hapair", "pair1"))["status"].get("state") == "TakenOver" and p,
            10,
            "pair TakenOver",
        )
        assert pair["status"]["takeover"] == f"{a}->{b}"
        states = {n["name"]: n["state"] for n in pair["status"]["nodes"]}
        assert states == {a: "TakenOver", b: "Up"}
        assert pair["status"]["lastTakeover"]["planned"] is False
    finally:
        env.set_node_ready(a, True)
    # kube-controller-manager marked the pod NotReady with its node; its kubelet would re-probe.
    env.wait(
        lambda: condition(env.get("node", a), "Ready").get("status") == "True", 30, "node Ready"
    )
    env.set_pod_ready(f"svm1-{a}", True)
    env.wait(lambda: _owner_is(env, a, epoch + 2), 30, "giveback to the recovered node")
    pair = env.wait(
        lambda: (p := env.get("hapair", "pair1"))["status"].get("state") == "Normal" and p,
        10,
        "Normal",
    )
    assert pair["status"]["lastGiveback"]["node"] == a
    assert "TakeoverStarted" in env.events("pair1")


def test_without_auto_giveback_the_takeover_holds_until_giveback(env: OperatorEnv) -> None:
    a, b = env.nodes
    epoch = _wait_home(env)
    env.kubectl("patch", "hapair", "pair1", "--type=merge", "-p", '{"spec":{"autoGiveback":false}}')
    try:
        env.kubectl("delete", "pod", f"svm1-{a}", "--wait=false")
        env.wait(lambda: _owner_is(env, b, epoch + 1), 5, "takeover")
        pair = env.wait(
            lambda: (p := env.get("hapair", "pair1"))["spec"].get("takeover") == a and p, 5, "held"
        )
        assert "TakeoverHeld" in env.events("pair1")
        env.wait(lambda: len(env.svm_pods("svm1")) == 2, 10, "replacement pod")
        # Observe past the giveback delay: ownership must stay with the partner.
        delay = pair["spec"]["autoGivebackDelaySeconds"]
        with pytest.raises(AssertionError):
            env.wait(lambda: env.lease("svm1")[0] == a, delay + 2, "no automatic giveback")
        out = env.plugin("--wait", "30", "giveback", a)
        assert out.returncode == 0, out.stderr
        env.wait(lambda: _owner_is(env, a, epoch + 2), 10, "giveback by the plugin")
    finally:
        env.kubectl(
            "patch", "hapair", "pair1", "--type=merge", "-p", '{"spec":{"autoGiveback":true}}'
        )


def test_metrics_and_structured_logs_tell_the_story(env: OperatorEnv) -> None:
    text = _metrics(env)
    moves = [
        line
        for line in text.splitlines()
        if line.startswith('hasmb_operator_ownership_moves_total{reason="Failover"}')
    ]
    assert moves and float(moves[0].split()[-1]) >= 3, text[:2000]
    assert 'hasmb_operator_reconcile_seconds_count{kind="svm"}' in text
    assert "hasmb_operator_ownership_move_seconds_bucket" in text
    records = [
        json.loads(line) for line in env.log_path.read_text().splitlines() if line.startswith("{")
    ]
    assert any("takes over" in r.get("message", "") for r in records)


def test_a_holder_that_renews_its_lease_is_fenced_by_expiry(env: OperatorEnv) -> None:
    """Behind a partition the owner may still serve: the partner waits for its lease."""
    a, b = env.nodes
    epoch = _wait_home(env)
    # What hasmb-smbd on the owner does: renew the Lease (self-fencing when it cannot).
    renewed = time.time()
    # Microseconds, as hasmb-smbd writes them: a stamp truncated to the second can fall
    # before an acquireTime written in the same second, and a Lease renewed "before" it
    # was acquired counts as never renewed (no wait for expiry).
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(renewed)) + (
        f".{int(renewed % 1 * 1_000_000):06d}Z"
    )
    env.kubectl(
        "patch",
        "lease",
        "svm1-owner",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"renewTime": stamp}}),
    )
    duration = env.get("lease", "svm1-owner")["spec"]["leaseDurationSeconds"]
    env.set_node_ready(a, False)
    try:

        def waiting_for_lease() -> dict[str, Any] | None:
            c = condition(env.get("svm", "svm1"), "Ready")
            return c if "lease expires" in c.get("message", "") else None

        ready = env.wait(waiting_for_lease, 10, "the SVM to wait for the lease")
        assert ready["status"] == "False"
        assert env.lease("svm1") == (a, epoch)
        env.wait(lambda: env.lease("svm1") == (b, epoch + 1), duration + 10, "takeover at expiry")
        assert time.time() >= renewed + duration - 1
    finally:
        env.set_node_ready(a, True)
    env.wait(lambda: condition(env.get("node", a), "Ready").get("status") == "True", 30, "node")
    env.set_pod_ready(f"svm1-{a}", True)
    env.wait(lambda: _owner_is(env, a, epoch + 2), 30, "giveback")
