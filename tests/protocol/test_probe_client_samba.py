"""The CA client's reclaim path against Samba's smbd, the reference server.

Samba (without CTDB) grants durable, not persistent, handles; its durable
reconnect is the same DH2C exchange the probe uses against hasmb after a
takeover, so this proves the client side independently of our server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from smbprotocol.exceptions import SMBResponseException

from hasmb.probe.ca_client import CaFile, CaTarget
from tests.support.samba_server import SambaServer


@pytest.fixture(scope="module")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaServer]:
    root = tmp_path_factory.mktemp("samba")
    share = root / "share"
    share.mkdir()
    share.chmod(0o777)
    server = SambaServer(root / "srv", {"data": share})
    server.start()
    yield server
    server.stop()


def _target(samba: SambaServer) -> CaTarget:
    return CaTarget("127.0.0.1", samba.port, "data", samba.user, samba.password)


def test_durable_handle_survives_connection_drop(samba: SambaServer) -> None:
    f = CaFile(_target(samba), "probe.bin", batch_oplock=True, reclaim_deadline=20)
    info = f.open()
    assert info.timeout_ms > 0, "Samba should have granted a durable handle"
    assert not info.persistent, "Samba without CTDB grants durable, not persistent, handles"
    first = bytes(range(256)) * 16
    assert f.write(0, first) == len(first)
    original_file_id = info.file_id

    f.abandon()  # TCP connection gone, handle left open: a network blip
    second = b"\xa5" * 4096
    assert f.write(len(first), second) == len(second)

    assert len(f.stalls) == 1
    assert f.stalls[0].attempts >= 1
    assert f.read(0, len(first) + len(second)) == first + second
    # The reclaimed open keeps its persistent FileId; the volatile half is per connection.
    assert f.handle is not None and f.handle.file_id[:8] == original_file_id[:8]
    f.close()
    assert (Path(samba.shares["data"]) / "probe.bin").read_bytes() == first + second


def test_reconnect_of_a_closed_handle_is_refused(samba: SambaServer) -> None:
    f = CaFile(_target(samba), "closed.bin", batch_oplock=True, reclaim_deadline=1.0)
    f.open()
    handle = f.handle
    assert handle is not None
    f.close()
    f.handle = handle  # pretend we still hold it
    with pytest.raises(Exception, match="could not reclaim") as excinfo:
        f.reclaim("test")
    assert "could not reclaim" in str(excinfo.value)
    assert not isinstance(excinfo.value, SMBResponseException)
