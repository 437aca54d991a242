"""Acceptance: each invalid sample is rejected by the API server or reported in status."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.operator_harness import OperatorEnv, condition, operator_env
from tests.support.cluster import KubeCluster

INVALID = Path(__file__).resolve().parent / "invalid"


@pytest.fixture(scope="module")
def env(
    kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorEnv]:
    yield from operator_env(kube_cluster, tmp_path_factory.mktemp("operator"), "hasmb-inv")


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ("missing-fields.yaml", "spec.homeNode: Required value"),
        ("pair-one-node.yaml", "should have at least 2 items"),
        ("pair-same-node.yaml", "spec.nodes must name two different nodes"),
        ("share-path-escape.yaml", "share path must stay inside the SVM's volume"),
        ("lif-bad-ip.yaml", "ip must be an IPv4 address"),
    ],
)
def test_rejected_by_the_api_server(env: OperatorEnv, sample: str, message: str) -> None:
    out = env.apply(env.sample((INVALID / sample).read_text()))
    assert out.returncode != 0, out.stdout
    assert message in out.stderr, out.stderr


def test_unknown_node_is_reported_in_status(env: OperatorEnv) -> None:
    out = env.apply(env.sample((INVALID / "unknown-node.yaml").read_text()))
    assert out.returncode == 0, out.stderr

    def reported(kind: str, name: str) -> dict[str, str] | None:
        ready = condition(env.get(kind, name), "Ready")
        return ready if ready.get("reason") == "NodeNotFound" else None

    pair = env.wait(lambda: reported("hapair", "ghost-pair"), 15, "HAPair NodeNotFound")
    assert pair["status"] == "False"
    assert "node 'no-such-node-xyz' does not exist" in pair["message"]
    svm = env.wait(lambda: reported("svm", "ghost-svm"), 15, "SVM NodeNotFound")
    assert "no-such-node-xyz" in svm["message"]
    assert env.get("hapair", "ghost-pair")["status"]["state"] == "Invalid"
    assert not env.list("pods", "hasmb.io/svm=ghost-svm")
    assert "NodeNotFound" in env.events("ghost-svm")


def test_lif_ip_clash_is_reported_in_status(env: OperatorEnv) -> None:
    env.install_samples()
    taken = env.get("lif", "svm1-lif-a")["spec"]["ip"]
    text = (INVALID / "lif-ip-clash.yaml").read_text().replace("10.96.0.200", taken)
    out = env.apply(env.sample(text.replace("10.96.0.200", taken)))
    assert out.returncode == 0, out.stderr

    def clash() -> dict[str, str] | None:
        ready = condition(env.get("lif", "clash-lif"), "Ready")
        return ready if ready.get("reason") == "IPConflict" else None

    ready = env.wait(clash, 15, "LIF IPConflict")
    assert f"spec.ip {taken} is already used by LIF svm1-lif-a" in ready["message"]
    # The holder is unaffected and no Service was made for the loser.
    assert condition(env.get("lif", "svm1-lif-a"), "Ready")["status"] == "True"
    assert not env.get("service", "lif-clash-lif")
