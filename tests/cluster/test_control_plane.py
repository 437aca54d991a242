"""The local control plane from hack/cluster is a real Kubernetes: CRDs, watches,
controllers (namespace deletion, deployments, garbage collection), the scheduler and
kwok's fake nodes."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.cluster import KubeCluster

K8S_MINOR = "v1.34."
# Real kubelets and other tests' kwok nodes may join the shared cluster too; these
# tests are about the nodes hack/cluster made.
ON_KWOK = {"hasmb.io/node-pool": "hack-cluster"}
PAUSE = "registry.k8s.io/pause:3.10"


def poll(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace; deleting it at the end exercises the namespace controller."""
    name = f"ct-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", name)
    # Pods are refused until the controller-manager creates the default ServiceAccount.
    poll(
        "the default ServiceAccount",
        lambda: (
            kube_cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0
        ),
    )
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false")
    kube_cluster.kubectl("wait", "--for=delete", f"namespace/{name}", "--timeout=90s")


def test_versions_match(kube_cluster: KubeCluster) -> None:
    out = json.loads(kube_cluster.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"].startswith(K8S_MINOR)
    assert out["clientVersion"]["gitVersion"] == out["serverVersion"]["gitVersion"]


def test_kwok_nodes_ready(kube_cluster: KubeCluster) -> None:
    selector = ",".join(f"{k}={v}" for k, v in ON_KWOK.items())
    out = kube_cluster.kubectl("get", "nodes", "-l", selector, "-o", "json")
    nodes = json.loads(out.stdout)["items"]
    fake = [n for n in nodes if n["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake"]
    assert len(fake) == len(nodes) >= 4
    for node in fake:
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", node["metadata"]["name"]


def crd_manifest(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


class WatchStream:
    """Parses `kubectl get -w -o json --output-watch-events`: concatenated JSON events."""

    def __init__(self, kube_cluster: KubeCluster, *args: str) -> None:
        self.proc = kube_cluster.kubectl_popen(*args, "-w", "-o", "json", "--output-watch-events")
        self.lines: queue.Queue[str] = queue.Queue()
        self.buffer = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def next_event(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        decoder = json.JSONDecoder()
        while True:
            text = self.buffer.lstrip()
            if text:
                try:
                    event, end = decoder.raw_decode(text)
                    self.buffer = text[end:]
                    return dict(event)
                except json.JSONDecodeError:
                    pass
            remaining = deadline - time.monotonic()
            if self.proc.poll() is not None and self.lines.empty():
                assert self.proc.stderr is not None
                err = self.proc.stderr.read()
                raise AssertionError(f"kubectl watch exited {self.proc.returncode}: {err}")
            if remaining <= 0:
                raise AssertionError(f"no watch event within {timeout:.0f} s: {self.buffer!r}")
            try:
                self.buffer += self.lines.get(timeout=remaining)
            except queue.Empty:
                continue

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_crd_object_watch_and_delete(kube_cluster: KubeCluster, namespace: str) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.test.hasmb.io"
    crd = f"widgets.{group}"
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(crd_manifest(group)))
    try:
        kube_cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        widget = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1", "namespace": namespace},
            "spec": {"size": 1},
        }
        kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(widget))
        watch = WatchStream(kube_cluster, "get", f"widgets.{group}", "w1", "-n", namespace)
        try:
            first = watch.next_event()
            assert first["type"] == "ADDED"
            assert first["object"]["spec"]["size"] == 1

            kube_cluster.kubectl(
                "patch", f"widgets.{group}", "w1", "-n", namespace,
                "--type=merge", "-p", '{"spec": {"size": 2}}',
            )  # fmt: skip
            changed = watch.next_event()
            assert changed["type"] == "MODIFIED"
            assert changed["object"]["spec"]["size"] == 2

            kube_cluster.kubectl("delete", f"widgets.{group}", "w1", "-n", namespace)
            gone = watch.next_event()
            assert gone["type"] == "DELETED"
            assert gone["object"]["metadata"]["name"] == "w1"
        finally:
            watch.close()
        left = kube_cluster.kubectl("get", f"widgets.{group}", "-n", namespace, "-o", "name")
        assert left.stdout.strip() == ""
    finally:
        kube_cluster.kubectl("delete", "crd", crd, "--wait=true", check=False)


def test_pod_scheduled_on_kwok_node_and_running(kube_cluster: KubeCluster, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p1", "namespace": namespace},
        "spec": {"nodeSelector": ON_KWOK, "containers": [{"name": "c", "image": PAUSE}]},
    }
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    kube_cluster.kubectl(
        "wait", "--for=condition=Ready", "pod/p1", "-n", namespace, "--timeout=60s"
    )
    got = json.loads(kube_cluster.kubectl("get", "pod", "p1", "-n", namespace, "-o", "json").stdout)
    assert got["spec"]["nodeName"].startswith("kwok-node-")
    assert got["status"]["phase"] == "Running"


def test_deployment_controllers_and_garbage_collection(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d1", "namespace": namespace},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "d1"}},
            "template": {
                "metadata": {"labels": {"app": "d1"}},
                "spec": {"nodeSelector": ON_KWOK, "containers": [{"name": "c", "image": PAUSE}]},
            },
        },
    }
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(deployment))
    kube_cluster.kubectl("rollout", "status", "deployment/d1", "-n", namespace, "--timeout=90s")
    pods = json.loads(
        kube_cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=d1", "-o", "json").stdout
    )["items"]
    assert len(pods) == 3
    assert all(p["status"]["phase"] == "Running" for p in pods)

    # Deleting the Deployment in the background leaves its ReplicaSet and Pods to the
    # garbage collector, which follows their ownerReferences.
    kube_cluster.kubectl("delete", "deployment", "d1", "-n", namespace, "--cascade=background")

    def all_collected() -> bool:
        left = kube_cluster.kubectl("get", "rs,pods", "-n", namespace, "-o", "name").stdout
        return left.strip() == ""

    poll("the garbage collector to remove the ReplicaSet and Pods", all_collected, timeout=90)
