"""hasmb.podrt's pure parts: the pod env, the Lease view, share changes, witness interfaces."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from hasmb.contract import CONFIG_KEY, LEASE_SECONDS
from hasmb.handles.kube_api import KubeApi
from hasmb.podrt.env import PodEnv, PodEnvError
from hasmb.podrt.lease import LeaseView
from hasmb.podrt.peers import pod_address
from hasmb.podrt.runtime import PodRuntime
from hasmb.podrt.shares import apply_shares
from hasmb.podrt.witness import witness_interfaces
from hasmb.smb.config import InterfaceConfig, ShareConfig, SmbdConfig, from_mapping
from hasmb.smb.server import SmbServer
from hasmb.witness.smbd import witness_for_smbd

ENV = {
    "HASMB_NODE": "node-a",
    "HASMB_SVM": "svm1",
    "HASMB_LEASE": "svm1-owner",
    "HASMB_NAMESPACE": "demo",
    "HASMB_POD_NAME": "svm1-node-a",
}


def test_pod_env() -> None:
    env = PodEnv.from_environ(ENV)
    assert env.owner_name == "svm1@node-a"
    assert PodEnv.wanted(ENV) and not PodEnv.wanted({})
    with pytest.raises(PodEnvError, match="HASMB_POD_NAME"):
        PodEnv.from_environ({k: v for k, v in ENV.items() if k != "HASMB_POD_NAME"})


def test_lease_view() -> None:
    view = LeaseView.parse(
        {
            "metadata": {
                "resourceVersion": "42",
                "annotations": {"hasmb.io/epoch": "7", "hasmb.io/reason": "Failover"},
            },
            "spec": {"holderIdentity": "node-b", "leaseDurationSeconds": 9},
        }
    )
    assert (view.holder, view.epoch, view.reason, view.duration) == ("node-b", 7, "Failover", 9)
    assert view.resource_version == "42"
    empty = LeaseView.parse({"spec": {}})
    assert empty.holder is None and empty.epoch == 0 and empty.duration == LEASE_SECONDS


def test_pod_address() -> None:
    pod: dict[str, Any] = {
        "metadata": {"name": "svm1-node-b", "labels": {"hasmb.io/node": "node-b"}},
        "status": {"podIP": "10.0.0.7"},
    }
    assert pod_address(pod) == ("node-b", "10.0.0.7")
    assert pod_address({**pod, "status": {}}) is None
    gone = {"metadata": {**pod["metadata"], "deletionTimestamp": "x"}, "status": pod["status"]}
    assert pod_address(gone) is None


def test_apply_shares(tmp_path: Path) -> None:
    for d in ("a", "b", "c"):
        (tmp_path / d).mkdir()
    cfg = SmbdConfig(
        shares=[ShareConfig("a", str(tmp_path / "a")), ShareConfig("b", str(tmp_path / "b"))]
    )
    server = SmbServer(cfg, users={})
    wanted = [
        ShareConfig("a", str(tmp_path / "a"), continuously_available=True),
        ShareConfig("c", str(tmp_path / "c")),
        ShareConfig("missing", str(tmp_path / "nope")),
    ]
    changes = apply_shares(server, wanted)
    assert changes.added == ["c"] and changes.removed == ["b"] and changes.changed == ["a"]
    assert changes.failed == ["missing"]
    assert set(server.shares) == {"a", "c", "ipc$"}
    assert server.shares["a"].config.continuously_available
    assert [s.name for s in cfg.shares] == ["a", "c"]
    assert not apply_shares(server, cfg.shares)


def test_witness_interfaces_skip_lifs_without_an_address() -> None:
    cfg = SmbdConfig(netname="SVM1")
    cfg.witness.interfaces = [
        InterfaceConfig("SVM1", ipv4="10.96.0.10", node="node-a"),
        InterfaceConfig("SVM1", ipv4="", node="node-b"),
        InterfaceConfig("SVM1", ipv4="10.96.0.11", node="node-b", state="unavailable"),
        InterfaceConfig("SVM1", ipv4="not-an-ip", node="node-b"),
    ]
    got = witness_interfaces(cfg)
    assert [(i.ipv4, i.node, i.state) for i in got] == [
        ("10.96.0.10", "node-a", "available"),
        ("10.96.0.11", "node-b", "unavailable"),
    ]


def test_config_restores_interfaces_the_witness_marked_down_itself(tmp_path: Path) -> None:
    """After a takeover the witness marks the old node's LIFs unavailable by itself; the
    next ConfigMap revision re-announces them even if its text did not change."""
    (tmp_path / "data").mkdir()
    text = yaml.safe_dump(
        {
            "netname": "SVM1",
            "shares": [{"name": "data", "path": str(tmp_path / "data")}],
            "witness": {
                "listen": "127.0.0.1:0",
                "interfaces": [
                    {"name": "SVM1", "ipv4": "10.96.0.10", "node": "node-a"},
                    {"name": "SVM1", "ipv4": "10.96.0.11", "node": "node-b"},
                ],
            },
        }
    )
    cfg = from_mapping(yaml.safe_load(text))
    witness = witness_for_smbd(cfg, {})
    assert witness is not None
    rt = PodRuntime(cfg, PodEnv.from_environ(ENV), cast(KubeApi, None), witness=witness)
    rt.server = SmbServer(cfg, users={})
    witness.notify_node_state("node-a", available=False)
    assert {i.ipv4: i.state for i in witness.interfaces()}["10.96.0.10"] == "unavailable"
    rt.apply_config({"data": {CONFIG_KEY: text}})
    assert {i.ipv4: i.state for i in witness.interfaces()} == {
        "10.96.0.10": "available",
        "10.96.0.11": "available",
    }
