"""smbtorture's durable-handle tests against a CA share of hasmb-smbd (issue 4 acceptance)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.smbd import SmbdProcess, start_smbd

REQUIRED = [
    "create-blob",
    "open-oplock",
    "reopen1",
    "reopen1a",
    "reopen2",
    "reopen2b",
    "reopen2c",
    "persistent-open-oplock",
    "persistent-open-lease",
    "app-instance",
]


@pytest.fixture(scope="module")
def ca_smbd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmbdProcess]:
    work: Path = tmp_path_factory.mktemp("ca-smbd")
    server = start_smbd(work, {"ca": ":ca"})
    try:
        yield server
    finally:
        rc = server.stop()
        assert rc == 0, server.log()


def test_share_advertises_ca_and_server_persistent_handles(ca_smbd: SmbdProcess) -> None:
    r = subprocess.run(
        [
            "smbtorture",
            "//127.0.0.1/ca",
            "-p",
            str(ca_smbd.port),
            "-U",
            f"{ca_smbd.user}%{ca_smbd.password}",
            "smb2.replay.replay5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # replay5 skips unless the server has PERSISTENT_HANDLES and the share is CA
    assert "success: replay5" in r.stdout, r.stdout[-3000:]


@pytest.mark.parametrize("test", REQUIRED)
def test_durable_v2_open(ca_smbd: SmbdProcess, test: str) -> None:
    r = subprocess.run(
        [
            "smbtorture",
            "//127.0.0.1/ca",
            "-p",
            str(ca_smbd.port),
            "-U",
            f"{ca_smbd.user}%{ca_smbd.password}",
            f"smb2.durable-v2-open.{test}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert f"success: {test}" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    assert "failure:" not in r.stdout
    assert ca_smbd.alive()
