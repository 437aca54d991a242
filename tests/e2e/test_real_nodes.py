"""Acceptance of hack/realnodes: real kubelets run the locally built hasmb image,
ClusterIP Services route from the host and across nodes, a kill -9 is a real death that
kubelet sees, and killing or cutting off a node is a real failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.real_cluster import TAINT_KEY, RealCluster, pod_manifest, poll

# The first test also waits for the session fixture: a cold image build and bring-up.
pytestmark = pytest.mark.timeout(600)

WEB_PORT = 8080
SA_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


def http_get(url: str, timeout: float = 2.0) -> str | None:
    """The body, or None when nothing answers in time (refused, unreachable, timed out)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body: bytes = resp.read()
            return body.decode()
    except (urllib.error.URLError, OSError):
        return None


def apply(rc: RealCluster, namespace: str, *objects: dict[str, Any]) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    rc.kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))


def web_pod(name: str, node: str, token: str) -> dict[str, Any]:
    """python3's http.server from the hasmb image serving `token` at /."""
    script = (
        f"mkdir -p /srv && echo {token} > /srv/index.html && "
        f"exec python3 -m http.server {WEB_PORT} --directory /srv"
    )
    return pod_manifest(name, node, ["/bin/sh", "-c", script], labels={"app": name})


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": WEB_PORT}]},
    }


def cluster_ip(rc: RealCluster, namespace: str, name: str) -> str:
    out = rc.kube.kubectl("get", "service", "-n", namespace, name, "-o", "json")
    ip: str = json.loads(out.stdout)["spec"]["clusterIP"]
    return ip


def test_nodes_are_real_kubelets(real_cluster: RealCluster) -> None:
    out = real_cluster.kube.kubectl("get", "nodes", *real_cluster.nodes, "-o", "json")
    nodes = json.loads(out.stdout)["items"]
    assert [n["metadata"]["name"] for n in nodes] == real_cluster.nodes
    ips = set()
    for node in nodes:
        info = node["status"]["nodeInfo"]
        assert info["kubeletVersion"].startswith("v1.34."), info
        assert info["containerRuntimeVersion"].startswith("containerd://1."), info
        conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert conditions["Ready"] == "True", conditions
        assert {"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"} in node["spec"]["taints"]
        ips |= {a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"}
    assert len(ips) == len(nodes), f"every node has its own address: {ips}"


def test_hasmb_image_runs_its_console_scripts(
    real_cluster: RealCluster, e2e_namespace: str
) -> None:
    node = real_cluster.nodes[0]
    pod = pod_manifest("smbd-help", node, ["hasmb-smbd", "--help"], restartPolicy="Never")
    apply(real_cluster, e2e_namespace, pod)

    def finished() -> bool:
        phase = real_cluster.pod(e2e_namespace, "smbd-help").get("status", {}).get("phase")
        return phase in ("Succeeded", "Failed")

    poll("the hasmb-smbd --help pod to finish", finished, timeout=120)
    status = real_cluster.pod(e2e_namespace, "smbd-help")["status"]
    logs = real_cluster.kube.kubectl("logs", "-n", e2e_namespace, "smbd-help").stdout
    assert status["phase"] == "Succeeded", (status, logs)
    assert "usage: hasmb-smbd" in logs


def test_cluster_ip_routes_from_host_and_other_node(
    real_cluster: RealCluster, e2e_namespace: str
) -> None:
    node1, node2 = real_cluster.nodes[:2]
    token = uuid.uuid4().hex
    client = pod_manifest("client", node2, ["sleep", "infinity"])
    apply(real_cluster, e2e_namespace, web_pod("web", node1, token), service("web"), client)
    web = real_cluster.wait_pod_ready(e2e_namespace, "web")
    client_pod = real_cluster.wait_pod_ready(e2e_namespace, "client")
    assert web["spec"]["nodeName"] == node1 and client_pod["spec"]["nodeName"] == node2
    assert web["status"]["podIP"] != client_pod["status"]["podIP"]
    url = f"http://{cluster_ip(real_cluster, e2e_namespace, 'web')}/"

    # From the host, through the host's kube-proxy.
    poll("the Service from the host", lambda: http_get(url) == f"{token}\n", timeout=60)

    # From a pod on the other node, through that node's kube-proxy and the pod routes.
    fetch = (
        "import urllib.request; "
        f"print(urllib.request.urlopen('{url}', timeout=5).read().decode(), end='')"
    )

    def from_pod() -> bool:
        proc = real_cluster.kube.kubectl(
            "exec", "-n", e2e_namespace, "client", "--", "python3", "-c", fetch, check=False
        )
        return proc.returncode == 0 and proc.stdout == f"{token}\n"

    poll("the Service from a pod on the other node", from_pod, timeout=60)

    # The server saw the client pod's own address: no NAT between pods.
    logs = real_cluster.kube.kubectl("logs", "-n", e2e_namespace, "web").stdout
    assert client_pod["status"]["podIP"] in logs, logs

    # Pods reach the apiserver through the `kubernetes` Service, verifying its certificate.
    version = (
        "import json, ssl, urllib.request; "
        f"ctx = ssl.create_default_context(cafile='{SA_CA}'); "
        "resp = urllib.request.urlopen('https://10.96.0.1/version', context=ctx, timeout=5); "
        "print(json.load(resp)['gitVersion'])"
    )
    out = real_cluster.kube.kubectl(
        "exec", "-n", e2e_namespace, "client", "--", "python3", "-c", version
    )
    assert out.stdout.startswith("v1.34."), out.stdout


def test_kill_9_of_a_container_is_seen_by_kubelet(
    real_cluster: RealCluster, e2e_namespace: str
) -> None:
    node = real_cluster.nodes[0]
    token = uuid.uuid4().hex
    apply(real_cluster, e2e_namespace, web_pod("victim", node, token), service("victim"))
    pod = real_cluster.wait_pod_ready(e2e_namespace, "victim")
    url = f"http://{cluster_ip(real_cluster, e2e_namespace, 'victim')}/"
    poll("the Service before the kill", lambda: http_get(url) == f"{token}\n", timeout=60)

    pid = real_cluster.task_pid(node, pod["status"]["containerStatuses"][0]["containerID"])
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        status = real_cluster.pod(e2e_namespace, "victim")["status"]["containerStatuses"][0]
        terminated = status.get("lastState", {}).get("terminated", {})
        return bool(status["restartCount"] >= 1 and terminated.get("exitCode") == 137)

    poll("kubelet to see the SIGKILL (exit 137) and restart the container", restarted, timeout=60)
    real_cluster.wait_pod_ready(e2e_namespace, "victim")
    poll("the Service after the restart", lambda: http_get(url) == f"{token}\n", timeout=60)


def test_killing_or_cutting_off_a_node_is_a_real_failure(
    real_cluster: RealCluster, e2e_namespace: str
) -> None:
    node = real_cluster.nodes[-1]
    token = uuid.uuid4().hex
    apply(real_cluster, e2e_namespace, web_pod("target", node, token))
    pod = real_cluster.wait_pod_ready(e2e_namespace, "target")
    url = f"http://{pod['status']['podIP']}:{WEB_PORT}/"
    poll("the pod from the host", lambda: http_get(url) == f"{token}\n", timeout=30)

    real_cluster.cut_node(node)
    try:
        assert http_get(url, timeout=2.0) is None, "a cut-off node still answered"
    finally:
        real_cluster.heal_node(node)
    poll("the pod after the link came back", lambda: http_get(url) == f"{token}\n", timeout=30)

    real_cluster.kill_node(node)
    try:
        assert http_get(url, timeout=2.0) is None, "a killed node's container still answered"
    finally:
        real_cluster.start_node(node)

    def serving_again() -> bool:
        current = real_cluster.pod(e2e_namespace, "target")
        ip = current.get("status", {}).get("podIP")
        return bool(ip) and http_get(f"http://{ip}:{WEB_PORT}/") == f"{token}\n"

    poll("the pod to run again after the node restarted", serving_again, timeout=120)
    conditions = {
        c["type"]: c["status"]
        for c in real_cluster.pod(e2e_namespace, "target")["status"]["conditions"]
    }
    assert conditions.get("Ready") == "True"


def test_hasmb_smbd_serves_smb3_through_a_service(
    real_cluster: RealCluster, e2e_namespace: str
) -> None:
    """The data plane in its image on a real node, reached by Samba's smbclient on the
    host through a ClusterIP Service (the shape of a LIF)."""
    token = uuid.uuid4().hex
    script = (
        f"mkdir -p /export/data && echo {token} > /export/data/token.txt && "
        "exec hasmb-smbd --listen 0.0.0.0:445 --share data=/export/data:ca "
        "--user alice:secret --netname SVM1"
    )
    smbd = pod_manifest("smbd", real_cluster.nodes[0], ["/bin/sh", "-c", script], {"app": "smbd"})
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "smbd"},
        "spec": {"selector": {"app": "smbd"}, "ports": [{"port": 445, "targetPort": 445}]},
    }
    apply(real_cluster, e2e_namespace, smbd, svc)
    real_cluster.wait_pod_ready(e2e_namespace, "smbd")
    ip = cluster_ip(real_cluster, e2e_namespace, "smbd")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "token.txt"
        argv = [
            "smbclient", f"//{ip}/data", "-p", "445", "-U", "alice%secret", "-m", "SMB3",
            "-c", f"get token.txt {local}",
        ]  # fmt: skip

        def fetched() -> bool:
            # Until kube-proxy has programmed the endpoint the Service answers unreachable.
            subprocess.run(argv, capture_output=True, timeout=30)
            return local.exists() and local.read_text() == f"{token}\n"

        poll("smbclient to read the share through the Service", fetched, timeout=60)


def test_a_host_path_is_a_volume_shared_by_both_nodes(
    real_cluster: RealCluster, e2e_namespace: str
) -> None:
    """The nodes share the host's filesystem, so one hostPath directory is a
    ReadWriteMany volume both nodes mount (what the SVM pods of a pair need)."""
    node1, node2 = real_cluster.nodes[:2]
    token = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="hasmb-e2e-shared-", dir="/var/tmp") as shared:
        volume = {"name": "shared", "hostPath": {"path": shared, "type": "Directory"}}
        mount = {"name": "shared", "mountPath": "/shared"}
        writer = pod_manifest(
            "writer", node1, ["/bin/sh", "-c", f"echo {token} > /shared/token"],
            restartPolicy="Never", volumes=[volume],
        )  # fmt: skip
        writer["spec"]["containers"][0]["volumeMounts"] = [mount]
        reader = pod_manifest(
            "reader", node2,
            ["/bin/sh", "-c", "until test -s /shared/token; do sleep 0.2; done; cat /shared/token"],
            restartPolicy="Never", volumes=[volume],
        )  # fmt: skip
        reader["spec"]["containers"][0]["volumeMounts"] = [mount]
        apply(real_cluster, e2e_namespace, writer, reader)

        def succeeded(name: str) -> bool:
            phase = real_cluster.pod(e2e_namespace, name).get("status", {}).get("phase")
            assert phase != "Failed", real_cluster.pod(e2e_namespace, name)["status"]
            return bool(phase == "Succeeded")

        poll("the writer on node 1", lambda: succeeded("writer"), timeout=90)
        poll("the reader on node 2", lambda: succeeded("reader"), timeout=90)
        logs = real_cluster.kube.kubectl("logs", "-n", e2e_namespace, "reader").stdout
        assert logs == f"{token}\n"
        assert (Path(shared) / "token").read_text() == f"{token}\n"
