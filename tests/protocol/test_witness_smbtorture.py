"""smbtorture rpc.witness against the witness, with hasmb-smbd serving the
srvsvc share enumeration (ncacn_np over IPC$) that Register/RegisterEx do first."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from hasmb.witness.config import WitnessConfig, WitnessInterfaceConfig
from hasmb.witness.service import WitnessService
from tests.support.smbd import PASSWORD, USER, start_smbd

TESTS = ["GetInterfaceList", "Register", "UnRegister", "RegisterEx"]


@pytest.mark.parametrize("level", ["sign", "seal"])
async def test_smbtorture_rpc_witness(
    tmp_path: Path, level: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hasmb.witness")
    smbd = await asyncio.to_thread(start_smbd, tmp_path, {"data": ":ca"})
    svc = WitnessService(
        WitnessConfig(
            listen="127.0.0.1:0",
            endpoint_mapper_port=0,
            interfaces=[
                # the local interface is not offered for registration; smbtorture
                # registers at the partner's (WITNESS_IF) address
                WitnessInterfaceConfig("HASMBTEST", ipv4="127.0.0.1", node="a"),
                WitnessInterfaceConfig("HASMBTEST", ipv4="127.0.0.2", node="b"),
            ],
        ),
        {USER: PASSWORD},
        "HASMBTEST",
        share_exists=lambda s: s.lower() == "data",
    )
    await svc.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            "smbtorture",
            f"ncacn_ip_tcp:127.0.0.1[{svc.port},{level}]",
            "-U",
            f"{USER}%{PASSWORD}",
            "--option=torture:net_name=HASMBTEST",
            f"--option=smb ports={smbd.port}",
            *[f"rpc.witness.witness.{t}" for t in TESTS],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out_b, _ = await asyncio.wait_for(proc.communicate(), 240)
        out = out_b.decode(errors="replace")
        passed = set(re.findall(r"^success: witness\.(\w+)", out, re.M))
        assert passed == set(TESTS), out
        assert len(svc.registry) == 0  # every registration was unregistered again
        # The second half of Register/RegisterEx registered at the partner address.
        registered = [r.getMessage() for r in caplog.records if "registered" in r.getMessage()]
        assert sum("at 127.0.0.2 (version 0x00010001" in m for m in registered) == 1, registered
        assert sum("at 127.0.0.2 (version 0x00020000" in m for m in registered) == 1, registered
    finally:
        await svc.stop()
        await asyncio.to_thread(smbd.stop)
