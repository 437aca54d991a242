"""Indirect access and takeover between two hasmb-smbd processes on one shared directory.

The owner serves the share; the standby (`--forward-to` the owner) follows the
handle store and relays every client connection to the owner. A CaFile client
connected through the standby reads and writes; then the owner dies (kill -9)
or is replaced on request (POST /takeover): the standby raises the epoch, stops
forwarding, serves locally, and the client reclaims its persistent handle with
every acknowledged write intact.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hasmb.probe.ca_client import CaFile, CaTarget
from tests.support.net import free_port
from tests.support.smbd import SmbdProcess, start_smbd


def wait_until(pred: Callable[[], bool], what: str, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def admin(port: int, path: str, method: str = "GET") -> dict[str, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=5) as resp:
        body: dict[str, object] = json.loads(resp.read())
        return body


class Pair:
    def __init__(self, tmp: Path, state: str = "") -> None:
        self.shared = tmp / "shared"
        self.shared.mkdir()
        self.tmp = tmp
        self.state = state or f"file:{self.shared}/.hasmb-state"
        self.owner_port, self.standby_port, self.admin_port = free_port(), free_port(), free_port()
        self.procs: list[SmbdProcess] = []

    def start_owner(self) -> SmbdProcess:
        p = start_smbd(
            self.tmp / "owner",
            {"ca": ":ca"},
            extra=[
                "--share",
                f"ca={self.shared}:ca",
                "--state",
                self.state,
                "--listen",
                f"127.0.0.1:{self.owner_port}",
            ],
        )
        self.procs.append(p)
        return p

    def start_standby(self) -> SmbdProcess:
        p = start_smbd(
            self.tmp / "standby",
            {"ca": ":ca"},
            extra=[
                "--share",
                f"ca={self.shared}:ca",
                "--state",
                self.state,
                "--listen",
                f"127.0.0.1:{self.standby_port}",
                "--forward-to",
                f"127.0.0.1:{self.owner_port}",
                "--admin-listen",
                f"127.0.0.1:{self.admin_port}",
                "--heartbeat-interval",
                "0.2",
            ],
        )
        self.procs.append(p)
        return p

    def kill_all(self) -> None:
        for p in self.procs:
            if p.alive():
                p.proc.kill()
                p.proc.wait(10)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    try:
        yield p
    finally:
        p.kill_all()


@pytest.fixture(scope="module")
def etcd_url() -> Iterator[str]:
    from tests.protocol.test_handle_store_backends import run_etcd

    with run_etcd() as server:
        yield server.url


@pytest.fixture(params=["file", "etcd", "configmap"])
def any_pair(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pair]:
    tag = uuid.uuid4().hex[:10]
    cleanup = None
    if request.param == "file":
        state = ""
    elif request.param == "etcd":
        state = f"etcd:{request.getfixturevalue('etcd_url')}/fwd-{tag}"
    else:
        cluster = request.getfixturevalue("kube_cluster")
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
        state = f"configmap:default/fwd-{tag}"

        def cleanup() -> None:
            out = cluster.kubectl("get", "configmap", "-n", "default", "-o", "name")
            doomed = [n for n in out.stdout.split() if n.startswith(f"configmap/fwd-{tag}")]
            if doomed:
                cluster.kubectl("delete", "-n", "default", *doomed)

    p = Pair(tmp_path, state)
    try:
        yield p
    finally:
        p.kill_all()
        if cleanup is not None:
            cleanup()


def client_through_standby(pair: Pair, owner: SmbdProcess, name: str) -> CaFile:
    target = CaTarget("127.0.0.1", pair.standby_port, "ca", owner.user, owner.password)
    return CaFile(target, name, durable_timeout_ms=30_000, reclaim_deadline=30)


def write_blocks(f: CaFile, count: int, start: int = 0) -> dict[int, bytes]:
    acked = {}
    for i in range(start, start + count):
        block = os.urandom(8192)
        assert f.write(i * 8192, block) == 8192
        acked[i * 8192] = block
    return acked


def test_forwarded_client_reclaims_after_owner_kill_9(any_pair: Pair) -> None:
    pair = any_pair
    owner = pair.start_owner()
    standby = pair.start_standby()
    f = client_through_standby(pair, owner, "vm.vhdx")
    assert f.open().persistent
    acked = write_blocks(f, 32)
    assert f.read(0, 8192) == acked[0]
    st = admin(pair.admin_port, "/status")
    assert st["role"] == "standby" and st["forwarded"] == 1, st
    wait_until(lambda: admin(pair.admin_port, "/status")["mirroredOpens"] == 1, "mirror", 10)

    owner.proc.kill()
    owner.proc.wait(10)
    # the next writes stall while the standby notices, takes over and the client reclaims
    acked.update(write_blocks(f, 8, start=32))
    st = admin(pair.admin_port, "/status")
    assert st["role"] == "owner" and st["epoch"] == 2, st
    assert f.stalls, "the client never noticed the owner's death"
    for offset, block in acked.items():
        assert f.read(offset, 8192) == block
    assert "took over at epoch 2" in standby.log()
    with urllib.request.urlopen(f"http://127.0.0.1:{pair.admin_port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'hasmb_smbd_role{role="owner"} 1' in metrics
    assert "hasmb_smbd_reclaims_total 1" in metrics
    assert "hasmb_smbd_persistent_opens 1" in metrics
    f.close()
    assert standby.stop() == 0, standby.log()


def test_takeover_on_request_fences_the_old_owner(pair: Pair) -> None:
    owner = pair.start_owner()
    standby = pair.start_standby()
    f = client_through_standby(pair, owner, "db.mdf")
    f.open()
    acked = write_blocks(f, 8)
    wait_until(lambda: admin(pair.admin_port, "/status")["mirroredOpens"] == 1, "mirror", 10)
    # an epoch the store has already reached is refused: the standby stays a standby
    admin(pair.admin_port, "/takeover?epoch=1", "POST")
    wait_until(lambda: "takeover failed, staying standby" in standby.log(), "refusal", 10)
    assert admin(pair.admin_port, "/status")["role"] == "standby"
    # the kubelet's readiness probe: answered by the process itself, listener up
    assert admin(pair.admin_port, "/healthz") == {"role": "standby", "listening": True}
    assert owner.alive()
    # the epoch the cluster's ownership record decided; 202: the takeover runs in the background
    admin(pair.admin_port, "/takeover?epoch=7", "POST")
    wait_until(lambda: admin(pair.admin_port, "/status")["role"] == "owner", "takeover", 10)
    assert admin(pair.admin_port, "/status")["epoch"] == 7
    # the old owner sees the newer epoch and stops serving by itself
    wait_until(lambda: not owner.alive(), "the old owner to fence itself", 10)
    assert owner.proc.returncode == 3, owner.log()
    acked.update(write_blocks(f, 4, start=8))
    for offset, block in acked.items():
        assert f.read(offset, 8192) == block
    f.close()
    assert standby.stop() == 0, standby.log()


def test_plain_standby_takes_over_on_sigusr1(pair: Pair) -> None:
    """A standby without forwarding refuses clients until SIGUSR1, then serves the
    owner's persistent handles from its warm mirror."""
    import signal

    owner = pair.start_owner()
    standby = start_smbd(
        pair.tmp / "plain-standby",
        {"ca": ":ca"},
        extra=[
            "--share",
            f"ca={pair.shared}:ca",
            "--state",
            f"file:{pair.shared}/.hasmb-state",
            "--listen",
            f"127.0.0.1:{pair.standby_port}",
            "--standby",
        ],
    )
    pair.procs.append(standby)
    target = CaTarget("127.0.0.1", pair.owner_port, "ca", owner.user, owner.password)
    f = CaFile(target, "app.db", durable_timeout_ms=30_000, reclaim_deadline=30)
    f.open()
    acked = write_blocks(f, 4)
    with pytest.raises(OSError):  # nothing is served before the takeover
        with socket.create_connection(("127.0.0.1", pair.standby_port), timeout=2) as s:
            s.sendall(b"\x00\x00\x00\x04\xfeSMB")
            if not s.recv(1):
                raise ConnectionResetError("closed by the standby")
    owner.proc.kill()
    owner.proc.wait(10)
    f.abandon()
    standby.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: "took over at epoch 2" in standby.log(), "takeover", 10)
    f.target = CaTarget("127.0.0.1", pair.standby_port, "ca", owner.user, owner.password)
    f.reclaim("owner died")
    for offset, block in acked.items():
        assert f.read(offset, 8192) == block
    f.close()
    assert standby.stop() == 0, standby.log()
