"""End-to-end tier: real nodes (kubelet, containerd, runc, CNI, kube-proxy) from
hack/realnodes, joined to hack/cluster's control plane."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.real_cluster import RealCluster, poll, real_cluster_session
from tests.support.cluster import KubeCluster


@pytest.fixture(scope="session")
def real_cluster(kube_cluster: KubeCluster) -> Iterator[RealCluster]:
    """Real nodes hasmb-node-1 and hasmb-node-2: reused if up, else brought up for the
    session and taken down at its end."""
    yield from real_cluster_session(kube_cluster)


@pytest.fixture
def e2e_namespace(real_cluster: RealCluster) -> Iterator[str]:
    """A fresh namespace, deleted (with its pods) after the test."""
    kube = real_cluster.kube
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    poll(
        "the default ServiceAccount",
        lambda: kube.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    yield name
    # Not waited for: the namespace controller finishes while the next test runs.
    kube.kubectl("delete", "namespace", name, "--wait=false")
