"""Acceptance: planned takeover/giveback, ARL, LIF migrate/revert, rolling upgrade through
kubectl-hasmb and spec patches, each without a moment where the SVM has no serving pod."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.cluster.operator_harness import (
    VENV_BIN,
    OperatorEnv,
    ServingMonitor,
    condition,
    operator_env,
)
from tests.support.cluster import KubeCluster


@pytest.fixture(scope="module")
def env(
    kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorEnv]:
    for e in operator_env(kube_cluster, tmp_path_factory.mktemp("operator"), "hasmb-pl"):
        e.install_samples()
        yield e


@pytest.fixture
def monitor(env: OperatorEnv) -> Iterator[ServingMonitor]:
    mon = ServingMonitor(env, "svm1")
    # The watches have listed the current state once every kind has an event.
    env.wait(lambda: {k for _, k, _, _ in list(mon.events)} == set(mon.KINDS), 15, "watches")
    yield mon
    mon.stop()
    assert mon.violations() == []


def _plugin(env: OperatorEnv, *args: str) -> str:
    out = env.plugin("--wait", "30", *args)
    assert out.returncode == 0, f"{out.stderr}\n{env.diagnose()}"
    return out.stdout


def test_planned_takeover_and_giveback(env: OperatorEnv, monitor: ServingMonitor) -> None:
    a, b = env.nodes
    _, epoch = env.lease("svm1")
    _plugin(env, "takeover", a)
    assert env.lease("svm1") == (b, epoch + 1)
    assert env.selector_node("svm1-lif-a") == b and env.selector_node("svm1-lif-b") == b
    pair = env.get("hapair", "pair1")
    assert pair["status"]["state"] == "TakenOver" and pair["status"]["takeover"] == f"{a}->{b}"
    assert pair["status"]["lastTakeover"]["planned"] is True
    assert pair["status"]["lastTakeover"]["durationSeconds"] < 5
    assert env.get("svm", "svm1")["status"]["ownerReason"] == "PlannedTakeover"
    status = env.plugin("status").stdout
    assert "TakenOver" in status and f"{a}->{b}" in status
    _plugin(env, "giveback", a)
    assert env.lease("svm1") == (a, epoch + 2)
    assert env.selector_node("svm1-lif-a") == a and env.selector_node("svm1-lif-b") == b
    pair = env.get("hapair", "pair1")
    assert pair["status"]["state"] == "Normal" and pair["status"]["lastGiveback"]["node"] == a
    assert {"TakeoverStarted", "TakeoverComplete", "GivebackStarted"} <= set(env.events("pair1"))


def test_arl_relocates_one_svm(env: OperatorEnv, monitor: ServingMonitor) -> None:
    a, b = env.nodes
    _, epoch = env.lease("svm1")
    out = _plugin(env, "relocate", "svm1")
    assert b in out
    assert env.get("svm", "svm1")["spec"]["relocateTo"] == b
    svm = env.get("svm", "svm1")
    assert svm["status"]["currentNode"] == b and svm["status"]["ownerReason"] == "Relocated"
    assert env.lease("svm1") == (b, epoch + 1)
    assert "Relocated" in env.events("svm1")
    # LIFs stay home: the pod that does not own the volume forwards (indirect access).
    assert env.selector_node("svm1-lif-a") == a
    _plugin(env, "relocate", "svm1")
    assert "relocateTo" not in env.get("svm", "svm1")["spec"]
    assert env.lease("svm1") == (a, epoch + 2)


def test_lif_migrate_and_revert(env: OperatorEnv, monitor: ServingMonitor) -> None:
    a, b = env.nodes
    before = env.lease("svm1")
    _plugin(env, "lif", "migrate", "svm1-lif-a", b)
    lif = env.get("lif", "svm1-lif-a")
    assert env.selector_node("svm1-lif-a") == b
    assert lif["status"]["currentNode"] == b and lif["status"]["state"] == "Migrated"
    assert lif["status"]["lastMove"]["to"] == b
    assert env.lease("svm1") == before  # moving a LIF never moves ownership
    _plugin(env, "lif", "revert", "svm1-lif-a")
    assert env.selector_node("svm1-lif-a") == a
    assert env.get("lif", "svm1-lif-a")["status"]["state"] == "Home"
    assert {"Migrated", "Reverted"} <= set(env.events("svm1-lif-a"))


def test_rolling_upgrade_never_takes_both_pods_down(
    env: OperatorEnv, monitor: ServingMonitor
) -> None:
    a, b = env.nodes
    old = {n: p["metadata"]["uid"] for n, p in env.svm_pods("svm1").items()}
    env.kubectl("patch", "svm", "svm1", "--type=merge", "-p", '{"spec":{"image":"hasmb:v2"}}')

    def upgraded() -> bool:
        pods = env.svm_pods("svm1")
        images = {p["spec"]["containers"][0]["image"] for p in pods.values()}
        return len(pods) == 2 and images == {"hasmb:v2"} and env.lease("svm1")[0] == a

    env.wait(upgraded, 60, "both pods on hasmb:v2 and ownership home")
    new = {n: p["metadata"]["uid"] for n, p in env.svm_pods("svm1").items()}
    assert all(new[n] != old[n] for n in (a, b))
    svm = env.wait(
        lambda: (s := env.get("svm", "svm1"))["status"]["upgrade"]["phase"] == "Complete" and s,
        15,
        "upgrade Complete",
    )
    assert svm["status"]["image"] == "hasmb:v2"
    assert condition(svm, "Ready")["status"] == "True"
    assert "Upgrading" in env.events("svm1") and "UpgradeTakeover" in env.events("svm1")
    # The standby went first, the owner second: ownership moved exactly away and back.
    deleted = [
        obj["spec"]["nodeName"]
        for _, kind, etype, obj in sorted(monitor.events, key=lambda e: e[0])
        if kind == "pods" and etype == "DELETED"
    ]
    assert deleted == [b, a]


def test_the_monitor_does_see_an_unplanned_outage(env: OperatorEnv) -> None:
    """Guard for the checks above: a killed owner pod is a moment with no serving owner."""
    a, b = env.nodes
    mon = ServingMonitor(env, "svm1")
    try:
        env.wait(lambda: {k for _, k, _, _ in list(mon.events)} == set(mon.KINDS), 15, "watches")
        _, epoch = env.lease("svm1")
        env.kubectl("delete", "pod", f"svm1-{a}", "--wait=false")
        env.wait(lambda: env.lease("svm1") == (b, epoch + 1), 10, "takeover")
        env.wait(lambda: env.lease("svm1") == (a, epoch + 2), 30, "giveback")
    finally:
        mon.stop()
    assert any(f"owner {a} has no Ready pod" in v for v in mon.violations())


def test_kubectl_finds_the_plugin(env: OperatorEnv) -> None:
    """`kubectl hasmb` works once .venv/bin is on PATH (kubectl's plugin discovery)."""
    run_env = env.cluster.env()
    run_env["PATH"] = f"{VENV_BIN}{os.pathsep}{run_env['PATH']}"
    out = subprocess.run(
        [str(env.cluster.bin_dir / "kubectl"), "hasmb", "-n", env.namespace, "status"],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "svm1" in out.stdout and "svm1-lif-a" in out.stdout and "pair1" in out.stdout
    bad = subprocess.run(
        [str(env.cluster.bin_dir / "kubectl"), "hasmb", "-n", env.namespace, "takeover", "nope"],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=60,
    )
    assert bad.returncode == 1 and "no HAPair has node 'nope'" in bad.stderr
