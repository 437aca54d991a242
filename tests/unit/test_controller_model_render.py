"""Typed resources (defaults, normalisation, validation) and the rendered bodies."""

from __future__ import annotations

from typing import Any

import yaml

from hasmb import contract
from hasmb.controller import render
from hasmb.controller.model import LIF, SVM, HAPair, Share, lif_ip_owner, normalise_share_path
from hasmb.smb.config import from_mapping


def body(kind: str, name: str, spec: dict[str, Any], uid: str = "u-1") -> dict[str, Any]:
    return {
        "apiVersion": "hasmb.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "ns1", "uid": uid, "generation": 3},
        "spec": spec,
    }


PAIR = HAPair.from_body(body("HAPair", "pair1", {"nodes": ["node-a", "node-b"]}))
SVM1 = SVM.from_body(
    body(
        "SVM",
        "svm1",
        {
            "haPair": "pair1",
            "homeNode": "node-a",
            "usersSecret": "users",
            "volume": {"hostPath": "/var/lib/hasmb/svm1"},
        },
    )
)


def test_defaults_and_normalisation() -> None:
    assert PAIR.auto_giveback and PAIR.auto_giveback_delay == 5.0 and PAIR.takeover is None
    assert SVM1.netbios_name == "SVM1" and SVM1.image == "hasmb:dev"
    assert SVM1.state_store == "configmap" and SVM1.preferred_node() == "node-a"
    share = Share.from_body(body("Share", "data", {"svm": "svm1", "path": "data//x/./"}))
    assert share.share_name == "data" and share.export_path == "/export/data/x"
    assert Share.from_body(body("Share", "r", {"svm": "s", "path": "/"})).export_path == "/export"
    assert PAIR.partner("node-a") == "node-b"


def test_share_path_escaping_the_volume_is_rejected() -> None:
    for path in ("../etc", "/data/../../etc", "a\\..\\b"):
        assert normalise_share_path(path) is None
        errors = Share.from_body(body("Share", "x", {"svm": "s", "path": path})).validate()
        assert errors and "escapes" in errors[0]


def test_svm_validation_names_what_to_fix() -> None:
    bad = SVM.from_body(
        body("SVM", "svm2", {"haPair": "pair1", "homeNode": "node-z", "volume": {}})
    )
    errors = bad.validate(PAIR)
    assert any("homeNode 'node-z' is not a node of HAPair pair1" in e for e in errors)
    assert any("exactly one of claimName or hostPath" in e for e in errors)
    assert any("does not exist" in e for e in bad.validate(None))
    one_node = HAPair.from_body(body("HAPair", "p", {"nodes": ["node-a"]}))
    assert one_node.validate() == ["spec.nodes must name exactly two nodes, got 1"]


def test_lif_ip_clash_oldest_keeps_the_address() -> None:
    old = LIF.from_body(
        body("LIF", "lif-old", {"svm": "s", "homeNode": "node-a", "ip": "10.96.1.1"})
    )
    new = LIF.from_body(
        body("LIF", "lif-new", {"svm": "s", "homeNode": "node-b", "ip": "10.96.1.1"})
    )
    holders = lif_ip_owner([("2026-01-01T00:00:01Z", new), ("2026-01-01T00:00:00Z", old)])
    assert holders == {"10.96.1.1": "lif-old"}
    assert old.validate(PAIR, holders["10.96.1.1"]) == []
    errors = new.validate(PAIR, holders["10.96.1.1"])
    assert errors == ["spec.ip 10.96.1.1 is already used by LIF lif-old: choose another address"]


def test_lif_ip_clash_the_allocated_service_keeps_the_address() -> None:
    first = LIF.from_body(
        body("LIF", "z-first", {"svm": "s", "homeNode": "node-a", "ip": "10.96.1.1"})
    )
    clash = LIF.from_body(
        body("LIF", "a-clash", {"svm": "s", "homeNode": "node-b", "ip": "10.96.1.1"})
    )
    same_second = "2026-01-01T00:00:00Z"
    # Without allocation a tie goes to the smaller name; the Service's allocation wins over it.
    assert lif_ip_owner([(same_second, first), (same_second, clash)]) == {"10.96.1.1": "a-clash"}
    holders = lif_ip_owner([(same_second, first), (same_second, clash)], {"z-first"})
    assert holders == {"10.96.1.1": "z-first"}


def test_config_follows_contract_3_and_loads_in_smbd() -> None:
    shares = [
        Share.from_body(
            body("Share", "vms", {"svm": "svm1", "path": "/vms", "continuouslyAvailable": True})
        ),
        Share.from_body(body("Share", "scratch", {"svm": "svm1", "path": "scratch"})),
    ]
    lifs = [render.LifPlacement("lif-a", "10.96.100.10", "node-a", True)]
    config = render.smbd_config(SVM1, shares, lifs)
    cm = render.config_map(SVM1, config)
    text = cm["data"][contract.CONFIG_KEY]
    loaded = from_mapping(yaml.safe_load(text))
    assert loaded.netname == "SVM1" and loaded.users_dir == "/etc/hasmb/users"
    assert [(s.name, s.path, s.continuously_available) for s in loaded.shares] == [
        ("scratch", "/export/scratch", False),
        ("vms", "/export/vms", True),
    ]
    assert loaded.state == "configmap:ns1/svm1-state"
    assert loaded.witness.interfaces[0].ipv4 == "10.96.100.10"
    assert loaded.witness.interfaces[0].node == "node-a"
    # Same inputs, same hash: a restarted operator recognises its own ConfigMap.
    again = render.config_map(SVM1, render.smbd_config(SVM1, list(reversed(shares)), lifs))
    assert again["metadata"]["annotations"] == cm["metadata"]["annotations"]


def test_pod_is_pinned_labelled_owned_and_hashed() -> None:
    pod = render.pod(SVM1, "node-b")
    md, spec = pod["metadata"], pod["spec"]
    assert spec["nodeName"] == "node-b"
    assert (
        md["labels"][contract.LABEL_SVM] == "svm1" and md["labels"][contract.LABEL_NODE] == "node-b"
    )
    assert md["ownerReferences"][0]["kind"] == "SVM" and md["ownerReferences"][0]["uid"] == "u-1"
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert "subPath" not in mounts["config"]  # ConfigMap updates must reach the pod
    assert mounts["users"]["mountPath"] == "/etc/hasmb/users"
    assert md["annotations"][contract.ANN_POD_HASH] == render.pod_hash(SVM1)
    # readiness asks the process (a frozen one's kernel would pass a TCP probe)
    ready = spec["containers"][0]["readinessProbe"]
    assert ready["httpGet"] == {"path": "/healthz", "port": "metrics"}, ready
    assert ready["periodSeconds"] * ready["failureThreshold"] <= 3, ready
    upgraded = SVM.from_body(
        body(
            "SVM",
            "svm1",
            {
                "haPair": "pair1",
                "homeNode": "node-a",
                "image": "hasmb:v2",
                "usersSecret": "users",
                "volume": {"hostPath": "/var/lib/hasmb/svm1"},
            },
        )
    )
    assert render.pod_hash(upgraded) != render.pod_hash(SVM1)


def test_service_selects_the_pod_on_the_current_node_and_moves_by_selector_only() -> None:
    lif = LIF.from_body(
        body("LIF", "lif-a", {"svm": "svm1", "homeNode": "node-a", "ip": "10.96.100.10"}, uid="l-1")
    )
    svc = render.service(lif, "svm1", "node-a", "Home")
    assert svc["spec"]["selector"] == {contract.LABEL_SVM: "svm1", contract.LABEL_NODE: "node-a"}
    assert svc["spec"]["clusterIP"] == "10.96.100.10"
    assert svc["metadata"]["labels"][contract.LABEL_SVM] == "svm1"
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "l-1"
    patch = render.selector_patch("node-b", "FailedOver")
    assert patch["spec"] == {"selector": {contract.LABEL_NODE: "node-b"}}


def test_lease_carries_holder_epoch_and_resource_version_for_cas() -> None:
    lease = render.lease(SVM1, "node-a", 1, "Home", 1000.0)
    own = contract.read_ownership(lease)
    assert (own.holder, own.epoch, own.reason) == ("node-a", 1, "Home")
    observed = {**lease, "metadata": {**lease["metadata"], "resourceVersion": "42"}}
    moved = render.lease(SVM1, "node-b", 2, "Failover", 1001.0, base=observed)
    assert moved["metadata"]["resourceVersion"] == "42"
    assert moved["metadata"]["annotations"][contract.ANN_EPOCH] == "2"
    assert moved["spec"]["acquireTime"] != lease["spec"]["acquireTime"]


def test_store_ignores_late_events_of_a_replaced_object() -> None:
    from hasmb.controller.store import Store

    store = Store()
    old = {
        "metadata": {
            "name": "p",
            "namespace": "ns1",
            "uid": "old",
            "resourceVersion": "5",
            "labels": {contract.LABEL_SVM: "svm1"},
        }
    }
    new = {
        "metadata": {
            "name": "p",
            "namespace": "ns1",
            "uid": "new",
            "resourceVersion": "9",
            "labels": {contract.LABEL_SVM: "svm1"},
        }
    }
    store.put("Pod", old)
    store.put("Pod", new)
    assert store.put("Pod", old) is new  # a stale MODIFIED never wins
    assert store.remove("Pod", old) is None  # the old pod's DELETED arrives late
    assert store.get("Pod", "ns1", "p") is new
    assert store.of_svm("Pod", "ns1", "svm1") == [new]
    assert store.remove("Pod", new) is new and store.of_svm("Pod", "ns1", "svm1") == []
    # A copy read before the deletion (e.g. a fresh GET in flight) must not resurrect it.
    store.put("Pod", new)
    assert store.get("Pod", "ns1", "p") is None


def test_state_store_objects_follow_the_configmap_store_layout() -> None:
    from hasmb.handles.configmap_store import EPOCH_KEY

    objs = {o["metadata"]["name"]: o for o in render.state_store_objects(SVM1)}
    assert set(objs) == {"svm1-state-meta", *(f"svm1-state-{i}" for i in range(4))}
    meta = objs["svm1-state-meta"]
    assert meta["data"] == {EPOCH_KEY: "0", "owner": "", "shards": "4"}
    assert meta["metadata"]["labels"][contract.LABEL_STORE] == "svm1-state"
    assert meta["metadata"]["labels"][contract.LABEL_STORE_ROLE] == "meta"
    assert objs["svm1-state-2"]["data"] == {EPOCH_KEY: "0"}
    for obj in objs.values():
        assert obj["metadata"]["labels"][contract.LABEL_SVM] == "svm1"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_ownership_tells_whether_the_holder_renewed_and_keeps_its_annotations() -> None:
    lease = render.lease(SVM1, "node-a", 3, "Home", 1000.0)
    own = contract.read_ownership(lease)
    assert not own.holder_renewed  # only the operator wrote it: nobody to wait for
    renewed = {
        **lease,
        "metadata": {
            **lease["metadata"],
            "annotations": {
                **lease["metadata"]["annotations"],
                contract.ANN_FENCING: "partner",
                contract.ANN_HANDLES: "7",
            },
        },
        "spec": {**lease["spec"], "renewTime": contract.micro_time(1010.0)},
    }
    own = contract.read_ownership(renewed)
    assert own.holder_renewed and own.renewed == 1010.0 and own.duration == contract.LEASE_SECONDS
    assert own.fencing == "partner"
    # A reason-only update by the operator keeps the holder's renewTime and what the
    # holder wrote with it; a move to another holder starts clean.
    same = render.lease(SVM1, "node-a", 3, "Giveback", 1020.0, base=renewed)
    assert same["spec"]["renewTime"] == renewed["spec"]["renewTime"]
    assert same["metadata"]["annotations"][contract.ANN_FENCING] == "partner"
    assert same["metadata"]["annotations"][contract.ANN_HANDLES] == "7"
    assert same["metadata"]["annotations"][contract.ANN_REASON] == "Giveback"
    moved = render.lease(SVM1, "node-b", 4, "Failover", 1020.0, base=renewed)
    assert contract.ANN_FENCING not in moved["metadata"]["annotations"]
    assert not contract.read_ownership(moved).holder_renewed
