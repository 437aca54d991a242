"""The `kube_cluster` session fixture's machinery: hack/cluster's control plane.

A session reuses a cluster that is already up and leaves it up; a session that brought
the cluster up takes it down at the end unless another live session still uses it
(sessions register their pid under ~/.cache/hasmb/cluster-users/). hack/cluster's
HASMB_CLUSTER_DIR and HASMB_CLUSTER_PORT_OFFSET select a separate cluster.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HACK_CLUSTER = REPO / "hack" / "cluster"
CACHE = Path(os.environ.get("HASMB_CACHE", Path.home() / ".cache" / "hasmb"))
BIN = CACHE / "bin"
CLUSTER_DIR = Path(os.environ.get("HASMB_CLUSTER_DIR", CACHE / "cluster"))
USERS = CLUSTER_DIR.with_name(f"{CLUSTER_DIR.name}-users")


class KubectlError(AssertionError):
    """A kubectl call that had to succeed failed; carries its stderr."""


@dataclass(frozen=True)
class KubeCluster:
    kubeconfig: Path
    bin_dir: Path

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (operator, kubectl plugins) that talk to the cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the matching kubectl against the cluster; raises KubectlError when `check`."""
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise KubectlError(
                f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def kubectl_popen(self, *args: str) -> subprocess.Popen[str]:
        """A long-running kubectl (e.g. `get -w`); the caller must terminate it."""
        return subprocess.Popen(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def _hack_cluster(
    *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HACK_CLUSTER), *args], capture_output=True, text=True, env=env, timeout=900
    )


def _other_live_users() -> list[int]:
    pids = []
    for entry in USERS.glob("*") if USERS.exists() else []:
        pid = int(entry.name) if entry.name.isdigit() else -1
        if pid == os.getpid():
            continue
        if pid > 0 and Path(f"/proc/{pid}").exists():
            pids.append(pid)
        else:
            entry.unlink(missing_ok=True)
    return pids


def cluster_session() -> Iterator[KubeCluster]:
    was_up = _hack_cluster("status").returncode == 0
    USERS.mkdir(parents=True, exist_ok=True)
    me = USERS / str(os.getpid())
    me.touch()
    try:
        up = _hack_cluster("up")
        if up.returncode != 0:
            raise RuntimeError(f"hack/cluster up failed:\n{up.stdout}\n{up.stderr}")
        path = Path(_hack_cluster("kubeconfig").stdout.strip())
        yield KubeCluster(kubeconfig=path, bin_dir=BIN)
    finally:
        me.unlink(missing_ok=True)
        if not was_up and not _other_live_users():
            _hack_cluster("down")
