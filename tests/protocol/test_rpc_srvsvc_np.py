"""srvsvc over SMB named pipes (ncacn_np on hasmb-smbd's IPC$) with Samba's
rpcclient and smbclient -L: DCE/RPC unauthenticated, signed and sealed on the pipe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.smbd import PASSWORD, USER, SmbdProcess, start_smbd


async def _run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture
async def smbd(tmp_path: Path) -> AsyncIterator[SmbdProcess]:
    s = await asyncio.to_thread(start_smbd, tmp_path, {"data": "", "ca": ":ca"})
    yield s
    await asyncio.to_thread(s.stop)


@pytest.mark.parametrize("level", ["", "sign", "seal"])
async def test_rpcclient_srvsvc_over_ipc(smbd: SmbdProcess, level: str) -> None:
    binding = f"ncacn_np:127.0.0.1[{level}]" if level else "127.0.0.1"
    rc, out = await _run(
        "rpcclient",
        "-p",
        str(smbd.port),
        binding,
        "-U",
        f"{USER}%{PASSWORD}",
        "-c",
        "netshareenumall 2; netsharegetinfo ca 1; srvinfo",
    )
    assert rc == 0, out
    for name in ("netname: data", "netname: ca", "netname: IPC$", "HASMBTEST"):
        assert name in out, out


async def test_smbclient_lists_shares(smbd: SmbdProcess) -> None:
    rc, out = await _run(
        "smbclient",
        "-L",
        "//127.0.0.1",
        "-p",
        str(smbd.port),
        "-U",
        f"{USER}%{PASSWORD}",
        "-m",
        "SMB3",
    )
    assert rc == 0, out
    lines = [line.split() for line in out.splitlines()]
    assert ["data", "Disk"] in [ln[:2] for ln in lines]
    assert ["IPC$", "IPC"] in [ln[:2] for ln in lines]
