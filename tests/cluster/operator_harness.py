"""Cluster-tier harness for hasmb-operator: a namespace, two kwok nodes, the operator process.

Each test module gets its own namespace and its own pair of kwok-managed nodes
(so it may fail them without disturbing anyone), installs crds/, and runs
`.venv/bin/hasmb-operator -n NAMESPACE` as a local process with the cluster's
kubeconfig (kwok only pretends to run pods, so the operator cannot run in-cluster).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.support.cluster import BIN, CACHE, HACK_CLUSTER, KubeCluster

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
T = TypeVar("T")


def wait_for(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `fn` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
        except AssertionError as exc:  # a failing kubectl inside fn: keep polling
            last = exc
        if last and not isinstance(last, AssertionError):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def ready(obj: dict[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True"


@dataclass
class OperatorEnv:
    cluster: KubeCluster
    namespace: str
    nodes: tuple[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    ips: list[str] = field(default_factory=list)
    # Nodes whose kubelet heartbeat (node Lease) we keep renewing; see _renew_node_leases.
    alive: set[str] = field(default_factory=set)
    stop_renewing: threading.Event = field(default_factory=threading.Event)
    # When set, the operator runs with these credentials (the manifests' ServiceAccount).
    operator_kubeconfig: Path | None = None
    operator_args: list[str] = field(default_factory=list)

    # --- kubectl --------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.cluster.kubectl("-n", self.namespace, *args, input=input, check=check).stdout

    def get(self, kind: str, name: str) -> dict[str, Any]:
        out = self.cluster.kubectl(
            "-n", self.namespace, "get", kind, name, "-o", "json", check=False
        )
        if out.returncode != 0:
            return {}
        data: dict[str, Any] = json.loads(out.stdout)
        return data

    def list(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"] + (["-l", selector] if selector else [])
        items: list[dict[str, Any]] = json.loads(self.kubectl(*args))["items"]
        return items

    def apply(self, text: str) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(
            "-n", self.namespace, "apply", "-f", "-", input=text, check=False
        )

    def plugin(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "kubectl-hasmb"), "-n", self.namespace, *args],
            capture_output=True,
            text=True,
            env=self.cluster.env(),
            timeout=120,
        )

    def events(self, name: str) -> builtins.list[str]:  # `list` here is the method above
        out = self.kubectl(
            "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
        )
        return [e.get("reason", "") for e in json.loads(out)["items"]]

    # --- samples --------------------------------------------------------------------
    def fresh_ip(self) -> str:
        """A free address for a LIF: in the low band of the service range (10.96.0.0/16),
        which the apiserver keeps for requested IPs (dynamic ones come from above it)."""
        out = self.cluster.kubectl("get", "services", "-A", "-o", "jsonpath={..clusterIP}")
        used = set(out.stdout.split()) | set(self.ips)
        free = [f"10.96.0.{i}" for i in range(20, 251) if f"10.96.0.{i}" not in used]
        ip = random.choice(free)
        self.ips.append(ip)
        return ip

    def sample(self, text: str) -> str:
        """A sample with this environment's node names and fresh LIF addresses."""
        text = text.replace("node-a", self.nodes[0]).replace("node-b", self.nodes[1])
        for ip in ("10.96.0.200", "10.96.0.201"):
            if ip in text:
                text = text.replace(ip, self.fresh_ip())
        return text

    def samples(self) -> str:
        parts = []
        for name in ("hapair", "users-secret", "svm", "shares", "lifs"):
            parts.append((REPO / "manifests" / "samples" / f"{name}.yaml").read_text())
        return self.sample("\n---\n".join(parts))

    # --- nodes ----------------------------------------------------------------------
    def set_node_ready(self, node: str, ready_: bool) -> None:
        """NotReady: kwok stops managing the node and its Ready condition turns False."""
        if ready_:
            self.renew_lease(node)
            self.alive.add(node)
            self.cluster.kubectl("annotate", "--overwrite", "node", node, f"{KWOK_ANNOTATION}=fake")
            return
        self.alive.discard(node)
        self.cluster.kubectl("annotate", "node", node, f"{KWOK_ANNOTATION}-")
        patch = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "KubeletNotReady",
                        "message": "test: node failed",
                        "lastHeartbeatTime": _now(),
                        "lastTransitionTime": _now(),
                    }
                ]
            }
        }
        self.cluster.kubectl(
            "patch", "node", node, "--subresource=status", "--type=merge", "-p", json.dumps(patch)
        )

    def renew_lease(self, node: str) -> None:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": node, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": node,
                "leaseDurationSeconds": 40,
                "renewTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
            },
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(lease), check=False)

    def _renew_node_leases(self) -> None:
        """Renew the test nodes' kubelet Leases, as a kubelet would.

        kwok started without --node-lease-duration-seconds keeps no node Leases and
        sends status heartbeats only every ~10 min, so kube-controller-manager marks
        the nodes Unknown after its grace period and flips every pod on them to
        NotReady for good (kwok readies only Pending pods).
        """
        while not self.stop_renewing.wait(5.0):
            for node in list(self.alive):
                self.renew_lease(node)

    def mark_node_unknown(self, node: str) -> None:
        """What kube-controller-manager's node lifecycle controller writes when it has not
        seen the node's heartbeat for its grace period: Ready=Unknown, with the kubelet's
        last heartbeat time kept (e.g. right after an API outage longer than the grace
        period, before the kubelet could report again). kwok stops managing the node
        (it would post Ready again); `set_node_ready(node, True)` hands it back."""
        self.cluster.kubectl("annotate", "node", node, f"{KWOK_ANNOTATION}-")
        cond = condition(self.cluster_get("node", node), "Ready")
        patch = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "Unknown",
                        "reason": "NodeStatusUnknown",
                        "message": "Kubelet stopped posting node status.",
                        "lastHeartbeatTime": cond.get("lastHeartbeatTime") or _now(),
                        "lastTransitionTime": _now(),
                    }
                ]
            }
        }
        self.cluster.kubectl(
            "patch", "node", node, "--subresource=status", "--type=merge", "-p", json.dumps(patch)
        )

    def post_node_ready(self, node: str) -> None:
        """The kubelet reporting again: Ready=True with a fresh heartbeat."""
        patch = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "test: kubelet is posting ready status",
                        "lastHeartbeatTime": _now(),
                        "lastTransitionTime": _now(),
                    }
                ]
            }
        }
        self.cluster.kubectl(
            "patch", "node", node, "--subresource=status", "--type=merge", "-p", json.dumps(patch)
        )

    def mark_pod_not_ready_by_node_controller(self, pod: str) -> None:
        """MarkPodsNotReady of the node lifecycle controller: only the Ready condition
        turns False; ContainersReady (the kubelet's probe verdict) stays True."""
        now = _now()
        patch = {
            "status": {
                "conditions": [
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "False", "lastTransitionTime": now},
                ]
            }
        }
        self.kubectl(
            "patch", "pod", pod, "--subresource=status", "--type=merge", "-p", json.dumps(patch)
        )

    def cluster_get(self, kind: str, name: str) -> dict[str, Any]:
        """A cluster-scoped object (Node), {} when it does not exist."""
        out = self.cluster.kubectl("get", kind, name, "-o", "json", check=False)
        if out.returncode != 0:
            return {}
        data: dict[str, Any] = json.loads(out.stdout)
        return data

    def set_pod_ready(self, pod: str, ready_: bool) -> None:
        """What a kubelet's readiness probe would report (kwok readies only new pods)."""
        now = _now()
        patch = {
            "status": {
                "conditions": [
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": str(ready_), "lastTransitionTime": now},
                    {"type": "Ready", "status": str(ready_), "lastTransitionTime": now},
                ]
            }
        }
        self.kubectl(
            "patch", "pod", pod, "--subresource=status", "--type=merge", "-p", json.dumps(patch)
        )

    def install_samples(self, timeout: float = 30.0) -> float:
        """Apply the samples; returns the seconds until every object is Ready."""
        start = time.monotonic()
        out = self.apply(self.samples())
        assert out.returncode == 0, out.stderr

        names = [
            ("hapair", "pair1"),
            ("svm", "svm1"),
            ("share", "vms"),
            ("share", "scratch"),
            ("lif", "svm1-lif-a"),
            ("lif", "svm1-lif-b"),
        ]

        def all_ready() -> bool:
            return all(ready(self.get(kind, name)) for kind, name in names)

        try:
            wait_for(all_ready, timeout, "every sample object Ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnose()}") from None
        return time.monotonic() - start

    def wait(self, fn: Callable[[], T | None], timeout: float, what: str) -> T:
        """wait_for, with this environment's state and operator log on failure."""
        try:
            return wait_for(fn, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnose()}") from None

    def diagnose(self) -> str:
        """Conditions of every hasmb object that is not Ready, and the operator's log."""
        lines = []
        for kind in ("hapairs", "svms", "shares", "lifs"):
            for obj in self.list(kind):
                if not ready(obj) or kind in ("svms", "hapairs"):
                    lines.append(f"{kind}/{obj['metadata']['name']}: {obj.get('status')}")
        lines.append(self.kubectl("get", "pods,svc,leases", "-o", "wide"))
        lines.append("operator log:\n" + self.log_tail())
        return "\n".join(lines)

    # --- operator -------------------------------------------------------------------
    def start_operator(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        log = self.log_path.open("ab")
        env = self.cluster.env()
        if self.operator_kubeconfig is not None:
            env["KUBECONFIG"] = str(self.operator_kubeconfig)
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "hasmb-operator"), "-n", self.namespace, *self.operator_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()

    def stop_operator(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # --- common checks --------------------------------------------------------------
    def svm_pods(self, svm: str) -> dict[str, dict[str, Any]]:
        """node -> pod (not terminating) of `svm`."""
        pods = {}
        for p in self.list("pods", f"hasmb.io/svm={svm}"):
            if not p["metadata"].get("deletionTimestamp"):
                pods[p["spec"]["nodeName"]] = p
        return pods

    def selector_node(self, lif: str) -> str | None:
        svc = self.get("service", f"lif-{lif}")
        node = ((svc.get("spec") or {}).get("selector") or {}).get("hasmb.io/node")
        return str(node) if node else None

    def lease(self, svm: str) -> tuple[str | None, int]:
        lease = self.get("lease", f"{svm}-owner")
        if not lease:
            return None, 0
        holder = (lease.get("spec") or {}).get("holderIdentity")
        return holder, int(lease["metadata"].get("annotations", {}).get("hasmb.io/epoch", 0))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _node_manifest(names: tuple[str, str]) -> str:
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    items = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": n,
                "annotations": {KWOK_ANNOTATION: "fake"},
                "labels": {
                    "kubernetes.io/hostname": n,
                    "type": "kwok",
                    "hasmb.io/test": "operator",
                },
            },
            "status": {"capacity": capacity, "allocatable": capacity},
        }
        for n in names
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def service_account_kubeconfig(cluster: KubeCluster, path: Path) -> Path:
    """Install manifests/ (scaled to 0: kwok cannot run it) and write a kubeconfig with
    the operator ServiceAccount's token, so tests prove the RBAC is enough."""
    cluster.kubectl("apply", "-k", str(REPO / "manifests"))
    cluster.kubectl("-n", "hasmb-system", "scale", "deployment/hasmb-operator", "--replicas=0")
    token = cluster.kubectl(
        "-n", "hasmb-system", "create", "token", "hasmb-operator", "--duration=2h"
    ).stdout.strip()
    admin = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "hasmb-operator", "user": {"token": token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": admin["clusters"][0]["name"], "user": "hasmb-operator"},
            }
        ],
        "current-context": "operator",
    }
    path.write_text(json.dumps(config))
    return path


def operator_env(
    cluster: KubeCluster, tmp_dir: Path, prefix: str, as_service_account: bool = False
) -> Iterator[OperatorEnv]:
    """Namespace + two ready kwok nodes + CRDs + a running operator; everything removed after."""
    suffix = uuid.uuid4().hex[:6]
    namespace = f"{prefix}-{suffix}"
    nodes = (f"{prefix}-{suffix}-a", f"{prefix}-{suffix}-b")
    cluster.kubectl("apply", "-k", str(REPO / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/hapairs.hasmb.io",
        "crd/svms.hasmb.io",
        "crd/shares.hasmb.io",
        "crd/lifs.hasmb.io",
    )
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("apply", "-f", "-", input=_node_manifest(nodes))
    env = OperatorEnv(cluster, namespace, nodes, tmp_dir / f"operator-{namespace}.log")
    if as_service_account:
        env.operator_kubeconfig = service_account_kubeconfig(
            cluster, tmp_dir / "operator.kubeconfig"
        )
    for n in nodes:
        env.renew_lease(n)
        env.alive.add(n)
    renewer = threading.Thread(target=env._renew_node_leases, daemon=True)
    renewer.start()
    try:
        cluster.kubectl(
            "wait", "--for=condition=Ready", "--timeout=60s", *(f"node/{n}" for n in nodes)
        )
        env.start_operator()
        yield env
    finally:
        try:
            if env.proc is None or env.proc.poll() is not None:
                env.proc = None
                env.start_operator()
            # Delete SVMs while the operator runs: it owns their finalizers.
            cluster.kubectl(
                "-n", namespace, "delete", "svms", "--all", "--timeout=60s", check=False
            )
        finally:
            env.stop_operator()
            env.stop_renewing.set()
            renewer.join(timeout=30)
            cluster.kubectl(
                "-n", "kube-node-lease", "delete", "lease", *nodes, "--wait=false", check=False
            )
            # Anything the operator could not finalise must not block the namespace.
            left = cluster.kubectl("-n", namespace, "get", "svms", "-o", "name", check=False)
            for ref in left.stdout.split():
                cluster.kubectl(
                    "-n",
                    namespace,
                    "patch",
                    ref,
                    "--type=merge",
                    "-p",
                    '{"metadata":{"finalizers":null}}',
                    check=False,
                )
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
            cluster.kubectl("delete", "node", *nodes, "--wait=false", check=False)


def micro_stamp(ts: float) -> str:
    """A Lease MicroTime, as hasmb-smbd writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


class OwnerRenewer:
    """What hasmb-smbd on the owner node does with its Lease (kwok runs no real pods):
    renew spec.renewTime every `interval` s while it holds the Lease, carrying its
    fencing mode in hasmb.io/fencing. A JSON patch whose `test` of holderIdentity makes
    the renewal a no-op once the Lease moved elsewhere."""

    def __init__(
        self,
        env: OperatorEnv,
        svm: str,
        node: str,
        fencing: str = "partner",
        interval: float = 1.5,
    ) -> None:
        self.env = env
        self.lease = f"{svm}-owner"
        self.node = node
        self.fencing = fencing
        self.interval = interval
        self.renewed: list[float] = []  # wall-clock times of successful renewals
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> OwnerRenewer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            patch = [
                {"op": "test", "path": "/spec/holderIdentity", "value": self.node},
                {"op": "replace", "path": "/spec/renewTime", "value": micro_stamp(now)},
                {
                    "op": "add",
                    "path": "/metadata/annotations/hasmb.io~1fencing",
                    "value": self.fencing,
                },
            ]
            out = self.env.cluster.kubectl(
                "-n",
                self.env.namespace,
                "--request-timeout=2s",
                "patch",
                "lease",
                self.lease,
                "--type=json",
                "-p",
                json.dumps(patch),
                check=False,
            )
            if out.returncode == 0 and not self._stop.is_set():
                self.renewed.append(now)
            self._stop.wait(self.interval)


@dataclass(frozen=True)
class PrivateCluster:
    """A control plane of its own (hack/cluster with its own directory and ports)."""

    cluster: KubeCluster
    root: Path

    def component_pid(self, name: str) -> int:
        pid = int((self.root / "pids" / f"{name}.pid").read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        assert comm == name[:15], f"pid {pid} is {comm!r}, not {name}"
        return pid

    @contextlib.contextmanager
    def apiserver_stopped(self) -> Iterator[None]:
        """SIGSTOP kube-apiserver (it hangs: connections stay open, nothing answers);
        SIGCONT on the way out, whatever happened."""
        pid = self.component_pid("kube-apiserver")
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def private_cluster(prefix: str) -> Iterator[PrivateCluster]:
    """hack/cluster up in a directory and on ports of its own, down afterwards.

    For tests that stop the apiserver: the shared cluster may serve other test
    sessions at the same time, which must not stall with it.
    """
    root = CACHE / f"cluster-{prefix}-{os.getpid()}"
    env: dict[str, str] = {}
    last = ""
    for k in range(1, 30):
        env = {
            **os.environ,
            "HASMB_CLUSTER_DIR": str(root),
            "HASMB_CLUSTER_PORT_OFFSET": str(1000 + 40 * k),
        }
        up = subprocess.run(
            [str(HACK_CLUSTER), "up", "--nodes", "1"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        if up.returncode == 0:
            break
        last = up.stdout + up.stderr
        subprocess.run([str(HACK_CLUSTER), "down"], capture_output=True, env=env, timeout=300)
        if "in use" not in last:
            raise RuntimeError(f"hack/cluster up (private) failed:\n{last}")
    else:
        raise RuntimeError(f"no free ports for a private cluster:\n{last}")
    try:
        yield PrivateCluster(KubeCluster(kubeconfig=root / "kubeconfig", bin_dir=BIN), root)
    finally:
        subprocess.run([str(HACK_CLUSTER), "down"], capture_output=True, env=env, timeout=300)


class ServingMonitor:
    """Records every change to an SVM's pods, Lease and Services through watches and
    replays them in etcd order (resourceVersion) to check the never-both-down rule
    exactly: at every instant the owner's pod is Ready and each LIF selects a Ready pod.
    """

    KINDS = ("pods", "leases", "services")

    def __init__(self, env: OperatorEnv, svm: str) -> None:
        self.env = env
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen[str]] = []
        self._threads: list[threading.Thread] = []
        for kind in self.KINDS:
            proc = env.cluster.kubectl_popen(
                "-n",
                env.namespace,
                "get",
                kind,
                "-l",
                f"hasmb.io/svm={svm}",
                "-w",
                "-o",
                "json",
                "--output-watch-events",
            )
            self._procs.append(proc)
            t = threading.Thread(target=self._read, args=(kind, proc), daemon=True)
            t.start()
            self._threads.append(t)

    def _read(self, kind: str, proc: subprocess.Popen[str]) -> None:
        decoder = json.JSONDecoder()
        buf = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            buf += line
            while buf.strip():
                try:
                    event, end = decoder.raw_decode(buf.lstrip())
                except json.JSONDecodeError:
                    break
                buf = buf.lstrip()[end:]
                obj = event.get("object") or {}
                rv = int(obj.get("metadata", {}).get("resourceVersion") or 0)
                with self._lock:
                    self.events.append((rv, kind, str(event.get("type")), obj))

    def stop(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for t in self._threads:
            t.join(timeout=10)

    def violations(self) -> list[str]:
        """Instants (in etcd order) at which the SVM or one of its LIFs had no Ready pod."""
        pods: dict[str, dict[str, Any]] = {}
        services: dict[str, dict[str, Any]] = {}
        holder: str | None = None
        bad: list[str] = []
        with self._lock:
            events = sorted(self.events, key=lambda e: e[0])
        for rv, kind, etype, obj in events:
            name = obj["metadata"]["name"]
            if kind == "pods":
                if etype == "DELETED":
                    pods.pop(name, None)
                else:
                    pods[name] = obj
            elif kind == "services":
                if etype == "DELETED":
                    services.pop(name, None)
                else:
                    services[name] = obj
            else:
                holder = None if etype == "DELETED" else obj["spec"].get("holderIdentity")

            def serving(node: str | None) -> bool:
                return any(
                    p["spec"].get("nodeName") == node
                    and not p["metadata"].get("deletionTimestamp")
                    and ready(p)
                    for p in pods.values()
                )

            if holder is not None and not serving(holder):
                bad.append(f"rv {rv}: owner {holder} has no Ready pod")
            for svc in services.values():
                node = svc["spec"]["selector"].get("hasmb.io/node")
                if not serving(node):
                    bad.append(
                        f"rv {rv}: Service {svc['metadata']['name']} selects {node}: no Ready pod"
                    )
        return bad
