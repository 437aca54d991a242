"""smbtorture (Samba's test suite) against hasmb-smbd: the tests the issue requires."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.smbd import SmbdProcess

REQUIRED = [
    "smb2.connect",
    "smb2.rw.rw1",
    "smb2.rw.rw2",
    "smb2.read.eof",
    "smb2.read.position",
    "smb2.lock.valid-request",
    "smb2.session.reconnect1",
    "smb2.rename.simple",
    "smb2.ioctl.copy_chunk_simple",
    "smb2.ioctl.sparse_qar",
]


@pytest.mark.parametrize("test", REQUIRED)
def test_smbtorture(smbd: SmbdProcess, test: str) -> None:
    r = subprocess.run(
        [
            "smbtorture",
            "//127.0.0.1/data",
            "-p",
            str(smbd.port),
            "-U",
            f"{smbd.user}%{smbd.password}",
            test,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    name = test.rsplit(".", 1)[-1]
    assert f"success: {name}" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    assert "failure:" not in r.stdout
    assert smbd.alive()
