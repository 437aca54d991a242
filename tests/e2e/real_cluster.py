"""The `real_cluster` session fixture's machinery: hack/realnodes' real nodes joined to
hack/cluster's control plane.

A session reuses real nodes that are already up and leaves them up; a session that
brought them up takes them down at the end unless another live session still uses
them (sessions register their pid under ~/.cache/hasmb/realnodes-users/).

Pods meant for the real nodes must tolerate the taint `hasmb.io/real-node` (the nodes
carry it so that the kwok-tier tests never land there) and use `imagePullPolicy: Never`
with the locally built images `hasmb:dev` and `hasmb-pause:dev`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.cluster import KubeCluster

REPO = Path(__file__).resolve().parents[2]
HACK_REALNODES = REPO / "hack" / "realnodes"
CACHE = Path(os.environ.get("HASMB_CACHE", Path.home() / ".cache" / "hasmb"))
USERS = CACHE / "realnodes-users"
NODE_COUNT = 2
IMAGE = "hasmb:dev"
TAINT_KEY = "hasmb.io/real-node"
TOLERATION = {"key": TAINT_KEY, "operator": "Exists"}


def poll(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def realnodes(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HACK_REALNODES), *args], capture_output=True, text=True, timeout=timeout
    )


@dataclass(frozen=True)
class RealCluster:
    """The control plane plus real nodes `hasmb-node-1` .. `hasmb-node-N`."""

    kube: KubeCluster
    nodes: list[str] = field(default_factory=list)

    def run(self, *args: str) -> str:
        """hack/realnodes ARGS; raises with its stderr when it fails."""
        proc = realnodes(*args, timeout=120)
        if proc.returncode != 0:
            raise AssertionError(f"hack/realnodes {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def kill_node(self, node: str) -> None:
        """kill -9 of the node's kubelet, containerd, shims and containers."""
        self.run("kill", node)

    def start_node(self, node: str) -> None:
        self.run("start", node)

    def cut_node(self, node: str) -> None:
        """Take the node's link to the host bridge down: it is cut off, still running."""
        self.run("cut", node)

    def heal_node(self, node: str) -> None:
        self.run("heal", node)

    def containerd_socket(self, node: str) -> Path:
        return Path(self.run("socket", node).strip())

    def task_pid(self, node: str, container_id: str) -> int:
        """The host pid of a running container (containerd task) on `node`."""
        cid = container_id.removeprefix("containerd://")
        out = subprocess.run(
            [
                "ctr",
                f"--address={self.containerd_socket(node)}",
                "-n",
                "k8s.io",
                "tasks",
                "ls",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        for line in out.splitlines():
            fields = line.split()
            if fields and fields[0] == cid:
                return int(fields[1])
        raise AssertionError(f"no task {cid} on {node}:\n{out}")

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        out = self.kube.kubectl("get", "pod", "-n", namespace, name, "-o", "json")
        pod: dict[str, Any] = json.loads(out.stdout)
        return pod

    def wait_pod_ready(self, namespace: str, name: str, timeout: float = 90.0) -> dict[str, Any]:
        def ready() -> bool:
            conditions = self.pod(namespace, name).get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        poll(f"pod {namespace}/{name} Ready", ready, timeout)
        return self.pod(namespace, name)


def pod_manifest(
    name: str, node: str, command: list[str], labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A pod of the hasmb:dev image pinned to a real node."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeName": node,
            "tolerations": [TOLERATION],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "main", "image": IMAGE, "imagePullPolicy": "Never", "command": command}
            ],
            **spec,
        },
    }


def _other_live_users() -> list[int]:
    pids = []
    for entry in USERS.glob("*") if USERS.exists() else []:
        pid = int(entry.name) if re.fullmatch(r"\d+", entry.name) else -1
        if pid == os.getpid():
            continue
        if pid > 0 and Path(f"/proc/{pid}").exists():
            pids.append(pid)
        else:
            entry.unlink(missing_ok=True)
    return pids


def real_cluster_session(kube: KubeCluster) -> Iterator[RealCluster]:
    was_up = realnodes("status").returncode == 0
    USERS.mkdir(parents=True, exist_ok=True)
    me = USERS / str(os.getpid())
    me.touch()
    try:
        up = realnodes("up", "--nodes", str(NODE_COUNT))
        if up.returncode != 0:
            raise RuntimeError(f"hack/realnodes up failed:\n{up.stdout}\n{up.stderr}")
        yield RealCluster(kube=kube, nodes=[f"hasmb-node-{i}" for i in range(1, NODE_COUNT + 1)])
    finally:
        me.unlink(missing_ok=True)
        if not was_up and not _other_live_users():
            realnodes("down")
