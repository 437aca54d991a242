"""Acceptance: crds/ + the samples give pinned pods, home-selecting Services, Ready objects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hasmb.handles import PersistentOpenRecord, open_store
from tests.cluster.operator_harness import OperatorEnv, operator_env, ready
from tests.support.cluster import KubeCluster

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(
    kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorEnv]:
    # The operator runs with the manifests' ServiceAccount: the least-privilege RBAC suffices.
    yield from operator_env(
        kube_cluster, tmp_path_factory.mktemp("operator"), "hasmb-smp", as_service_account=True
    )


def test_manifests_are_installed(env: OperatorEnv) -> None:
    deploy = json.loads(
        env.cluster.kubectl(
            "-n", "hasmb-system", "get", "deployment", "hasmb-operator", "-o", "json"
        ).stdout
    )
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "hasmb:dev" and container["command"] == ["hasmb-operator"]
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == "hasmb-operator"
    cannot = env.cluster.kubectl(
        "auth",
        "can-i",
        "delete",
        "nodes",
        "--as=system:serviceaccount:hasmb-system:hasmb-operator",
        check=False,
    )
    assert cannot.stdout.strip() == "no"


def _can(env: OperatorEnv, verb: str, resource: str) -> str:
    out = env.cluster.kubectl(
        "auth",
        "can-i",
        verb,
        resource,
        "-n",
        env.namespace,
        f"--as=system:serviceaccount:{env.namespace}:hasmb-smbd",
        check=False,
    )
    return out.stdout.strip()


def test_samples_become_ready_on_the_right_nodes(env: OperatorEnv) -> None:
    seconds = env.install_samples(timeout=30)
    a, b = env.nodes
    pods = env.svm_pods("svm1")
    assert set(pods) == {a, b}
    for node, pod in pods.items():
        assert pod["spec"]["nodeName"] == node
        assert pod["metadata"]["labels"]["hasmb.io/node"] == node
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "SVM"
    assert env.selector_node("svm1-lif-a") == a
    assert env.selector_node("svm1-lif-b") == b
    assert env.lease("svm1") == (a, 1)
    svm = env.get("svm", "svm1")
    assert svm["status"]["currentNode"] == a and svm["status"]["epoch"] == 1
    lif = env.get("lif", "svm1-lif-a")
    assert lif["status"]["service"] == "lif-svm1-lif-a" and lif["status"]["homeNode"] == a
    svc = env.get("service", "lif-svm1-lif-a")
    assert lif["status"]["ip"] == svc["spec"]["clusterIP"] == svc["spec"]["clusterIP"]
    pair = env.get("hapair", "pair1")
    assert pair["status"]["state"] == "Normal"
    assert {n["name"]: n["state"] for n in pair["status"]["nodes"]} == {a: "Up", b: "Up"}
    for obj in (svm, lif, pair):
        cond = {c["type"]: c for c in obj["status"]["conditions"]}
        assert set(cond) == {"Ready", "Available", "Degraded", "Progressing"}
        assert cond["Ready"]["observedGeneration"] == obj["metadata"]["generation"]
    # The pods run as hasmb-smbd, which may renew Leases and keep handle state, no more.
    assert {p["spec"]["serviceAccountName"] for p in pods.values()} == {"hasmb-smbd"}
    assert _can(env, "update", "leases") == "yes"
    assert _can(env, "patch", "configmaps") == "yes"
    assert _can(env, "delete", "pods") == "no"
    # Every object the operator made carries hasmb.io/svm.
    for kind in ("pods", "services", "configmaps", "leases"):
        assert env.list(kind, "hasmb.io/svm=svm1"), kind
    print(f"samples Ready in {seconds:.2f}s")


def test_kubectl_get_hasmb_lists_every_kind(env: OperatorEnv) -> None:
    out = env.kubectl("get", "hasmb")
    for kind in (
        "hapair.hasmb.io/pair1",
        "svm.hasmb.io/svm1",
        "share.hasmb.io/vms",
        "lif.hasmb.io/svm1-lif-a",
    ):
        assert kind in out, out
    explain = env.cluster.kubectl("explain", "lifs.spec.migrateTo").stdout
    assert "Clear it to revert" in explain


def test_config_map_holds_the_rendered_smbd_config(env: OperatorEnv) -> None:
    cm = env.get("configmap", "svm1-config")
    config = yaml.safe_load(cm["data"]["hasmb-smbd.yaml"])
    assert config["netname"] == "SVM1"
    assert {s["name"]: s["continuouslyAvailable"] for s in config["shares"]} == {
        "scratch": False,
        "vms": True,
    }
    assert config["usersDir"] == "/etc/hasmb/users"
    assert config["state"] == f"configmap:{env.namespace}/svm1-state"
    assert sorted(i["node"] for i in config["witness"]["interfaces"]) == sorted(env.nodes)


async def test_handle_store_works_on_the_objects_the_operator_made(env: OperatorEnv) -> None:
    """The rendered `state` URL opens the real configmap store; the owner fences with
    the Lease's epoch, as hasmb-smbd does on takeover."""
    config = yaml.safe_load(env.get("configmap", "svm1-config")["data"]["hasmb-smbd.yaml"])
    holder, epoch = env.lease("svm1")
    assert holder == env.nodes[0] and epoch >= 1
    store = open_store(config["state"], kubeconfig=str(env.cluster.kubeconfig))
    try:
        assert await store.take_ownership(holder, epoch) == epoch
        record = PersistentOpenRecord(
            persistent_id=7,
            volatile_id=8,
            create_guid=b"c" * 16,
            client_guid=b"k" * 16,
            share="vms",
            path="disk.vhdx",
            desired_access=0x12019F,
            share_access=7,
            create_options=0,
            file_attributes=0x20,
            oplock_level=0,
            durable_timeout_ms=60000,
            user="alice",
        )
        await store.put(record)
        assert [r.persistent_id for r in await store.load_all()] == [7]
    finally:
        await store.close()
    meta = env.get("configmap", "svm1-state-meta")
    assert meta["data"]["epoch"] == str(epoch) and meta["data"]["owner"] == holder
    assert meta["metadata"]["labels"]["hasmb.io/svm"] == "svm1"


def test_share_change_reaches_config_without_restarting_pods(env: OperatorEnv) -> None:
    uids = {n: p["metadata"]["uid"] for n, p in env.svm_pods("svm1").items()}
    share = {
        "apiVersion": "hasmb.io/v1alpha1",
        "kind": "Share",
        "metadata": {"name": "sql"},
        "spec": {"svm": "svm1", "path": "sql/data", "continuouslyAvailable": True},
    }
    assert env.apply(json.dumps(share)).returncode == 0

    def rendered() -> bool:
        config = yaml.safe_load(env.get("configmap", "svm1-config")["data"]["hasmb-smbd.yaml"])
        return any(s["name"] == "sql" and s["path"] == "/export/sql/data" for s in config["shares"])

    env.wait(rendered, 10, "the new share in the ConfigMap")
    env.wait(lambda: ready(env.get("share", "sql")), 10, "share sql Ready")
    env.kubectl("patch", "share", "scratch", "--type=merge", "-p", '{"spec":{"readOnly":true}}')

    def read_only() -> bool:
        config = yaml.safe_load(env.get("configmap", "svm1-config")["data"]["hasmb-smbd.yaml"])
        return any(s["name"] == "scratch" and s["readOnly"] for s in config["shares"])

    env.wait(read_only, 10, "scratch read-only in the ConfigMap")
    assert {n: p["metadata"]["uid"] for n, p in env.svm_pods("svm1").items()} == uids


def test_persistent_handle_count_comes_from_the_owners_lease(env: OperatorEnv) -> None:
    # what the owning hasmb-smbd writes with each renewal (no pod runs smbd here)
    env.kubectl("annotate", "lease", "svm1-owner", "hasmb.io/persistent-handles=3")
    env.wait(
        lambda: env.get("svm", "svm1")["status"].get("persistentHandles") == 3,
        10,
        "persistentHandles from the Lease",
    )
    rows = env.plugin("status").stdout.splitlines()
    svm_row = next(r for r in rows if r.split()[1:3] == ["svm1", "pair1"])
    assert svm_row.split()[-1] == "3"  # the HANDLES column


def test_deleting_the_svm_removes_what_it_created(env: OperatorEnv) -> None:
    env.kubectl("delete", "svm", "svm1", "--timeout=30s")
    assert not env.list("configmaps", "hasmb.io/handle-store=svm1-state")
    for kind in ("pods", "services", "configmaps", "leases"):

        def gone(kind: str = kind) -> bool:
            return not env.list(kind, "hasmb.io/svm=svm1")

        env.wait(gone, 30, f"{kind} of svm1 gone")

    def lif_says_why() -> bool:
        cond = {
            c["type"]: c
            for c in env.get("lif", "svm1-lif-a").get("status", {}).get("conditions", [])
        }
        return cond.get("Ready", {}).get("reason") == "SVMNotFound"

    env.wait(lif_says_why, 10, "LIF reports SVMNotFound")


def test_local_overlay_puts_the_samples_on_hack_clusters_nodes(env: OperatorEnv) -> None:
    docs = list(
        yaml.safe_load_all(
            env.cluster.kubectl("kustomize", str(REPO / "manifests" / "local-samples")).stdout
        )
    )
    pair = next(d for d in docs if d["kind"] == "HAPair")
    assert pair["spec"]["nodes"] == ["kwok-node-0", "kwok-node-1"]
    assert {d["spec"]["homeNode"] for d in docs if d["kind"] in ("SVM", "LIF")} == {
        "kwok-node-0",
        "kwok-node-1",
    }
