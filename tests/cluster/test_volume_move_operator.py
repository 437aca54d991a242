"""Volume move end to end: hasmb-operator against the real apiserver drives hasmb-smbd.

kwok only pretends to run the SVM's pods, so the owner pod's hasmb-smbd runs
here as a local process, in its own mount namespace where two temp
directories are bind-mounted at the paths the pod would have (/export for the
root volume, /volumes/fast for spec.volumes[fast]); the test points the
operator at its admin endpoint with the pod annotation hasmb.io/admin-address
(a real pod is reached at status.podIP:9300). A CaFile writes while the Share's
spec.volume changes; the operator moves the data, records the pause and
re-renders the ConfigMap, and the client never notices.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hasmb.probe.ca_client import CaFile, CaTarget
from tests.cluster.operator_harness import OperatorEnv, condition, operator_env, ready
from tests.support.cluster import KubeCluster
from tests.support.net import free_port

USER, PASSWORD = "alice", "Secret-pw1"
BLOCK = 64 * 1024


@pytest.fixture(scope="module")
def env(
    kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorEnv]:
    yield from operator_env(kube_cluster, tmp_path_factory.mktemp("volmove"), "hasmb-vm")


def manifests(env: OperatorEnv) -> str:
    a, b = env.nodes
    return f"""
apiVersion: hasmb.io/v1alpha1
kind: HAPair
metadata: {{name: pair1}}
spec: {{nodes: [{a}, {b}]}}
---
apiVersion: hasmb.io/v1alpha1
kind: SVM
metadata: {{name: svm1}}
spec:
  haPair: pair1
  homeNode: {a}
  volume: {{hostPath: /var/lib/hasmb/{env.namespace}/root}}
  volumes:
    - {{name: fast, hostPath: /var/lib/hasmb/{env.namespace}/fast}}
---
apiVersion: hasmb.io/v1alpha1
kind: Share
metadata: {{name: data}}
spec: {{svm: svm1, path: /data, continuouslyAvailable: true}}
"""


@pytest.fixture
def pod_smbd(tmp_path: Path) -> Iterator[tuple[int, int, Path, Path]]:
    """hasmb-smbd with the pod's view of the volumes; yields (smb port, admin port, root, fast)."""
    root, fast = tmp_path / "vol-root", tmp_path / "vol-fast"
    (root / "data" / "sub").mkdir(parents=True)
    fast.mkdir()
    for i in range(8):
        (root / "data" / f"f{i}.bin").write_bytes(os.urandom(4 << 20))
    (root / "data" / "sub" / "big.bin").write_bytes(os.urandom(32 << 20))
    created = [
        p for p in (Path("/export"), Path("/volumes"), Path("/volumes/fast")) if not p.exists()
    ]
    for p in created:
        p.mkdir()  # empty mount points; the binds exist only in the process's namespace
    admin_port = free_port()
    log_path = tmp_path / "smbd.log"
    script = (
        'mount --bind "$ROOT" /export && mount --bind "$FAST" /volumes/fast && '
        'exec "$PY" -m hasmb.cli.smbd --listen 127.0.0.1:0 --netname SVM1 '
        '--share data=/export/data:ca --user "$CRED" --state "file:$STATE" '
        '--admin-listen "127.0.0.1:$ADMIN"'
    )
    environ = dict(
        os.environ,
        ROOT=str(root),
        FAST=str(fast),
        PY=sys.executable,
        CRED=f"{USER}:{PASSWORD}",
        STATE=str(tmp_path / "state"),
        ADMIN=str(admin_port),
        HASMB_VOLUMES="/export:/volumes/fast",
        PYTHONUNBUFFERED="1",
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        port = 0
        while time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"listening on [\d.]+:(\d+)", log_path.read_text(errors="replace"))
            if m:
                port = int(m.group(1))
                break
            time.sleep(0.05)
        assert port, log_path.read_text(errors="replace")
        yield port, admin_port, root, fast
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for p in reversed(created):
            with contextlib.suppress(OSError):
                p.rmdir()


def share_status(env: OperatorEnv) -> dict[str, Any]:
    return dict(env.get("share", "data").get("status") or {})


def config_paths(env: OperatorEnv) -> dict[str, str]:
    cm = env.get("configmap", "svm1-config")
    config = yaml.safe_load(cm["data"]["hasmb-smbd.yaml"])
    return {s["name"]: s["path"] for s in config["shares"]}


def test_operator_moves_share_while_client_writes(
    env: OperatorEnv, pod_smbd: tuple[int, int, Path, Path]
) -> None:
    smb_port, admin_port, _, fast = pod_smbd
    out = env.apply(manifests(env))
    assert out.returncode == 0, out.stderr
    env.wait(lambda: ready(env.get("share", "data")), 30, "Share data Ready")
    assert share_status(env)["volume"] == "root"
    assert config_paths(env)["data"] == "/export/data"
    owner = env.wait(lambda: env.lease("svm1")[0], 30, "owner")
    pod = env.svm_pods("svm1")[owner]
    mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert "/volumes/fast" in mounts
    envs = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert envs["HASMB_VOLUMES"] == "/export:/volumes/fast"
    env.kubectl(
        "annotate", "pod", pod["metadata"]["name"], f"hasmb.io/admin-address=127.0.0.1:{admin_port}"
    )

    ca = CaFile(CaTarget("127.0.0.1", smb_port, "data", USER, PASSWORD), "ca.bin")
    info = ca.open()
    acked: dict[int, bytes] = {}
    gaps: list[float] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        i, last = 0, time.monotonic()
        try:
            while not stop.is_set():
                block = os.urandom(BLOCK)
                ca.write((i % 128) * BLOCK, block)
                acked[(i % 128) * BLOCK] = block
                now = time.monotonic()
                gaps.append(now - last)
                last, i = now, i + 1
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    try:
        started = time.monotonic()
        env.kubectl("patch", "share", "data", "--type=merge", "-p", '{"spec":{"volume":"fast"}}')
        env.wait(
            lambda: (
                condition(env.get("share", "data"), "Progressing").get("reason") == "VolumeMove"
                or share_status(env).get("volume") == "fast"
            ),
            30,
            "the move to start",
        )
        st = env.wait(
            lambda: (s := share_status(env)).get("volume") == "fast" and s, 60, "status.volume fast"
        )
        took = time.monotonic() - started
        env.wait(lambda: config_paths(env)["data"] == "/volumes/fast/data", 10, "ConfigMap path")
        n = len(gaps)
        env.wait(lambda: len(gaps) > n + 20 or errors, 30, "writes after the move")
    finally:
        stop.set()
        t.join(30)
    assert not errors, errors
    move = st["volumeMove"]
    assert move["phase"] == "Completed", move
    assert move["from"] == "root" and move["to"] == "fast"
    assert 0 < move["pauseSeconds"] <= 1.0, move
    assert move["bytesCopied"] >= 64 << 20
    assert st["exportPath"] == "/volumes/fast/data"
    env.wait(
        lambda: condition(env.get("share", "data"), "Progressing").get("reason") == "Stable",
        10,
        "Progressing back to Stable",
    )
    reasons = env.events("data")
    assert "VolumeMoveStarted" in reasons and "VolumeMoveCompleted" in reasons, reasons
    print(
        f"\noperator volume move: {took:.2f} s from spec patch to status.volume, "
        f"{move['bytesCopied'] / 1e6:.0f} MB at {move.get('copyRateMBps')} MB/s, "
        f"pause {move['pauseSeconds']} s, longest client write gap {max(gaps):.3f} s"
    )
    assert max(gaps) <= 1.5
    assert ca.handle is not None and ca.handle.file_id == info.file_id and not ca.stalls
    on_disk = (fast / "data" / "ca.bin").read_bytes()
    for offset, block in acked.items():
        assert on_disk[offset : offset + BLOCK] == block, offset
    ca.close()

    # an unknown volume is reported, not attempted
    env.kubectl("patch", "share", "data", "--type=merge", "-p", '{"spec":{"volume":"slow"}}')
    failed = env.wait(
        lambda: (
            (share_status(env).get("volumeMove") or {}).get("phase") == "Failed"
            and share_status(env)["volumeMove"]
        ),
        30,
        "unknown volume reported",
    )
    assert "not a volume of SVM svm1" in failed["message"]
    assert share_status(env)["volume"] == "fast"
    assert "VolumeNotFound" in env.events("data")
    # the schema rejects what it can express
    bad = env.cluster.kubectl(
        "-n",
        env.namespace,
        "patch",
        "share",
        "data",
        "--type=merge",
        "-p",
        '{"spec":{"volume":"Bad_Name"}}',
        check=False,
    )
    assert bad.returncode != 0 and "spec.volume" in bad.stderr, bad.stderr
    res = env.cluster.kubectl(
        "-n",
        env.namespace,
        "patch",
        "svm",
        "svm1",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"volumes": [{"name": "root", "hostPath": "/x"}]}}),
        check=False,
    )
    assert res.returncode != 0 and "reserved" in res.stderr, res.stderr
