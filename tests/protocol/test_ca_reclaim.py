"""Persistent handles survive kill -9 of hasmb-smbd, with each handle-state backend.

A CaFile (smbprotocol, DH2Q with PERSISTENT on a CA share) writes, the server
is killed with SIGKILL and a new one is started with the same arguments on the
same store. Inside the reclaim window another client is refused
(STATUS_FILE_NOT_AVAILABLE); the original client reclaims with DH2C and reads
back every acknowledged write; once the window of an unreclaimed handle
expires, the other client's open succeeds.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import LockFlags, SMB2LockElement

from hasmb.probe.ca_client import CaFile, CaTarget
from tests.support.net import free_port
from tests.support.smbd import SmbdProcess, start_smbd
from tests.support.smbproto import connect

FILE_NOT_AVAILABLE = 0xC0000467
FILE_LOCK_CONFLICT = 0xC0000054
BACKENDS = ["file", "etcd", "configmap"]


@pytest.fixture(scope="module")
def etcd_url() -> Iterator[str]:
    from tests.protocol.test_handle_store_backends import run_etcd

    with run_etcd() as server:
        yield server.url


@pytest.fixture(params=BACKENDS)
def state_args(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[str]]:
    tag = uuid.uuid4().hex[:10]
    if request.param == "file":
        yield []  # the default: file:<first share>/.hasmb-state
    elif request.param == "etcd":
        url = request.getfixturevalue("etcd_url")
        yield ["--state", f"etcd:{url}/ca-{tag}"]
    else:
        cluster = request.getfixturevalue("kube_cluster")
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
        name = f"ca-{tag}"
        yield ["--state", f"configmap:default/{name}"]
        out = cluster.kubectl("get", "configmap", "-n", "default", "-o", "name")
        doomed = [n for n in out.stdout.split() if n.startswith(f"configmap/{name}")]
        if doomed:
            cluster.kubectl("delete", "-n", "default", *doomed)


@contextlib.contextmanager
def servers(work: Path, port: int, state: list[str]) -> Iterator[list[SmbdProcess]]:
    started: list[SmbdProcess] = []
    try:
        yield started
    finally:
        for s in started:
            if s.alive():
                s.proc.kill()
                s.proc.wait(10)


def start(work: Path, port: int, state: list[str]) -> SmbdProcess:
    return start_smbd(work, {"ca": ":ca"}, extra=["--listen", f"127.0.0.1:{port}", *state])


def refused_status(smbd: SmbdProcess, name: str) -> int:
    """Open `name` as another client; 0 if it worked, else the NT status."""
    try:
        with connect(smbd, "ca") as c:
            op = c.open(name)
            op.close()
            return 0
    except SMBResponseException as exc:
        return int(exc.status)


def wait_until(pred: object, what: str, limit: float) -> None:
    assert callable(pred)
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_persistent_handle_survives_kill_9(tmp_path: Path, state_args: list[str]) -> None:
    port = free_port()
    with servers(tmp_path, port, state_args) as running:
        first = start(tmp_path, port, state_args)
        running.append(first)
        target = CaTarget("127.0.0.1", port, "ca", first.user, first.password)
        keep = CaFile(target, "keep.bin", durable_timeout_ms=60_000, reclaim_deadline=30)
        lapse = CaFile(target, "lapse.bin", durable_timeout_ms=3_000, reclaim_deadline=30)
        info = keep.open()
        assert info.persistent and info.timeout_ms == 60_000
        assert lapse.open().persistent
        acked: dict[int, bytes] = {}
        for i in range(16):
            block = os.urandom(4096)
            assert keep.write(i * 4096, block) == 4096
            acked[i * 4096] = block
        lapse.write(0, b"x" * 100)
        # a byte-range lock of the persistent open must survive the server too
        lock = SMB2LockElement()
        lock["offset"] = 4096
        lock["length"] = 4096
        lock["flags"] = (
            LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
        )
        keep._open.lock([lock])
        # ... and one taken with a LockSequence (bucket 1, number 3: smbprotocol packs
        # its "lsi" into the low bits that servers read as number and index)
        seq_lock = SMB2LockElement()
        seq_lock["offset"] = 8 * 4096
        seq_lock["length"] = 4096
        seq_lock["flags"] = lock["flags"].get_value()
        keep._open.lock([seq_lock], lsi=0x13)

        first.proc.kill()  # kill -9: no drain, no goodbye
        first.proc.wait(10)
        keep.abandon()
        lapse.abandon()

        second = start(tmp_path, port, state_args)
        running.append(second)
        assert "loaded 2 persistent open" in second.log(), second.log()
        # inside the window every other opener is refused, whatever its share mode
        assert refused_status(second, "keep.bin") == FILE_NOT_AVAILABLE
        assert refused_status(second, "lapse.bin") == FILE_NOT_AVAILABLE

        keep.reclaim("server killed")
        for offset, block in acked.items():
            assert keep.read(offset, 4096) == block
        keep.write(16 * 4096, b"after")
        assert keep.read(16 * 4096, 5) == b"after"
        # the LOCK replayed after the failover is recognised as applied, not refused
        keep._open.lock([seq_lock], lsi=0x13)
        # the reclaimed open still holds its lock: another reader of that range conflicts
        with connect(second, "ca") as other:
            op = other.open("keep.bin", access=0x00120089)  # FILE_GENERIC_READ
            assert op.read(0, 4096) == acked[0]
            with pytest.raises(SMBResponseException) as conflict:
                op.read(4096, 4096)
            assert conflict.value.status == FILE_LOCK_CONFLICT
            op.close()

        # lapse.bin was never reclaimed: its window expires and the file is free again
        wait_until(lambda: refused_status(second, "lapse.bin") == 0, "window expiry", 20)
        assert "reclaim window of lapse.bin expired" in second.log()
        # the hidden store directory of the default file backend is not reachable
        if not state_args:
            assert (tmp_path / "ca" / ".hasmb-state").is_dir()
            assert refused_status(second, ".hasmb-state\\epoch") != 0
        keep.close()
        assert second.stop() == 0, second.log()


def test_clean_restart_keeps_disconnected_window(tmp_path: Path) -> None:
    """SIGTERM drains: the open is stored as disconnected and reclaimable after restart."""
    port = free_port()
    with servers(tmp_path, port, []) as running:
        first = start(tmp_path, port, [])
        running.append(first)
        target = CaTarget("127.0.0.1", port, "ca", first.user, first.password)
        f = CaFile(target, "clean.bin", durable_timeout_ms=30_000, reclaim_deadline=30)
        f.open()
        f.write(0, b"hello")
        assert first.stop() == 0, first.log()
        f.abandon()
        second = start(tmp_path, port, [])
        running.append(second)
        f.reclaim("restart")
        assert f.read(0, 5) == b"hello"
        f.close()
        assert second.stop() == 0, second.log()


def test_old_owner_is_fenced_when_another_takes_the_store(
    tmp_path: Path, state_args: list[str]
) -> None:
    """A second hasmb-smbd on the same store raises the epoch; the first one stops
    serving (exit 3): its store writes are refused, and it sees the newer epoch."""
    port_a, port_b = free_port(), free_port()
    with servers(tmp_path, port_a, state_args) as running:
        a = start(tmp_path / "a", port_a, state_args)
        running.append(a)
        share = a.shares["ca"]
        target = CaTarget("127.0.0.1", port_a, "ca", a.user, a.password)
        f = CaFile(target, "fenced.bin", durable_timeout_ms=10_000)
        f.open()
        f.write(0, b"before")
        b = start_smbd(
            tmp_path / "b",
            {"ca": ":ca"},
            extra=["--listen", f"127.0.0.1:{port_b}", "--share", f"ca={share}:ca", *state_args],
        )
        running.append(b)
        assert "loaded 1 persistent open" in b.log(), b.log()
        g = CaFile(target, "other.bin", durable_timeout_ms=10_000, request_timeout=3)
        # A cannot store a new persistent open any more (or has already stopped)
        with pytest.raises(Exception):  # noqa: B017 - a refusal or a closed connection
            g.open()
        wait_until(lambda: not a.alive(), "the fenced server to exit", 15)
        assert a.proc.returncode == 3, a.log()
        assert "stale epoch" in a.log()
        f.abandon()
        # the new owner honours the reclaim
        f.target = CaTarget("127.0.0.1", port_b, "ca", b.user, b.password)
        f.reclaim("takeover")
        assert f.read(0, 6) == b"before"
        f.close()
        assert b.stop() == 0, b.log()


def open_with_app_instance(port: int, name: str, app_id: bytes, user: str, pw: str) -> object:
    """A CA open as a Hyper-V host makes it: DH2Q persistent + AppInstanceId."""
    from smbprotocol.connection import Capabilities, Connection, Dialects
    from smbprotocol.create_contexts import (
        CreateContextName,
        DurableHandleFlags,
        SMB2CreateAppInstanceId,
        SMB2CreateContextRequest,
        SMB2CreateDurableHandleRequestV2,
    )
    from smbprotocol.open import (
        CreateDisposition,
        CreateOptions,
        FilePipePrinterAccessMask,
        ImpersonationLevel,
        Open,
    )
    from smbprotocol.session import Session
    from smbprotocol.tree import TreeConnect

    conn = Connection(uuid.uuid4(), "127.0.0.1", port)
    conn.client_capabilities |= Capabilities.SMB2_GLOBAL_CAP_PERSISTENT_HANDLES
    conn.connect(Dialects.SMB_3_1_1)
    session = Session(conn, user, pw, require_encryption=False)
    session.connect()
    tree = TreeConnect(session, r"\\127.0.0.1\ca")
    tree.connect()
    dh2q = SMB2CreateDurableHandleRequestV2()
    dh2q["timeout"] = 60_000
    dh2q["flags"] = DurableHandleFlags.SMB2_DHANDLE_FLAG_PERSISTENT
    dh2q["create_guid"] = uuid.uuid4()
    app = SMB2CreateAppInstanceId()
    app["app_instance_id"] = app_id
    contexts = []
    for name_, data in (
        (CreateContextName.SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2, dh2q),
        (CreateContextName.SMB2_CREATE_APP_INSTANCE_ID, app),
    ):
        ctx = SMB2CreateContextRequest()
        ctx["buffer_name"] = name_
        ctx["buffer_data"] = data
        contexts.append(ctx)
    op = Open(tree, name)
    op.create(
        ImpersonationLevel.Impersonation,
        FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE,
        0,
        0,  # no sharing: like a VM disk
        CreateDisposition.FILE_OPEN_IF,
        CreateOptions.FILE_NON_DIRECTORY_FILE,
        create_contexts=contexts,
    )
    return op


def test_app_instance_id_takes_over_a_handle_awaiting_reclaim(tmp_path: Path) -> None:
    """The Hyper-V cluster case: the VM restarts on another host (another client) while
    its old persistent handle is still in its reclaim window after a server crash."""
    port = free_port()
    app_id = uuid.uuid4().bytes
    with servers(tmp_path, port, []) as running:
        first = start(tmp_path, port, [])
        running.append(first)
        old = open_with_app_instance(port, "vm.vhdx", app_id, first.user, first.password)
        old.write(b"disk", 0)  # type: ignore[attr-defined]
        first.proc.kill()
        first.proc.wait(10)
        second = start(tmp_path, port, [])
        running.append(second)
        assert refused_status(second, "vm.vhdx") == FILE_NOT_AVAILABLE
        new = open_with_app_instance(port, "vm.vhdx", app_id, second.user, second.password)
        assert new.read(0, 4) == b"disk"  # type: ignore[attr-defined]
        assert "AppInstanceId reuse closes vm.vhdx" in second.log()
        new.close()  # type: ignore[attr-defined]
        assert second.stop() == 0, second.log()


def test_reclaim_from_a_new_connection_while_the_old_one_lingers(tmp_path: Path) -> None:
    """A network cut leaves the server with a half-open connection: the same client's
    DH2C on a new connection takes the persistent handle over at once."""
    port = free_port()
    with servers(tmp_path, port, []) as running:
        smbd = start(tmp_path, port, [])
        running.append(smbd)
        target = CaTarget("127.0.0.1", port, "ca", smbd.user, smbd.password)
        f = CaFile(target, "cut.bin", durable_timeout_ms=30_000, reclaim_deadline=10)
        f.open()
        f.write(0, b"before the cut")
        lingering = f._conn  # keep the old TCP connection open, as a cut network would
        f._conn = f._open = None
        assert f.reclaim("network cut") == 1
        assert f.read(0, 14) == b"before the cut"
        assert "moves it off a stale connection" in smbd.log()
        f.close()
        lingering.disconnect(close=False)
        assert smbd.stop() == 0, smbd.log()
