"""Endpoint mapper and srvsvc over ncacn_ip_tcp, with third-party clients:
impacket (NTLM at connect, integrity and privacy levels) and Samba's rpcclient."""

from __future__ import annotations

import asyncio

import pytest
from impacket.dcerpc.v5 import epm, srvs, transport
from impacket.dcerpc.v5.rpcrt import (
    RPC_C_AUTHN_LEVEL_PKT_INTEGRITY,
    RPC_C_AUTHN_LEVEL_PKT_PRIVACY,
)
from impacket.uuid import uuidtup_to_bin

from hasmb.rpc.client import epm_lookup
from hasmb.rpc.srvsvc import ShareInfo, SrvsvcInterface
from hasmb.witness.client import WitnessClient
from hasmb.witness.config import WitnessConfig, WitnessInterfaceConfig
from hasmb.witness.rpc import WITNESS_UUID
from hasmb.witness.service import WitnessService
from tests.support.witness_server import (
    NETNAME,
    PASSWORD,
    USER,
    free_loopback_address,
    witness_env,
)

SHARES = [ShareInfo("data", 0, "the data", "C:\\data")]


async def test_endpoint_mapper_resolves_the_witness() -> None:
    async with witness_env() as env:
        assert env.service.epm_port == 135
        port = await epm_lookup(env.ip, WITNESS_UUID, (1, 1))
        assert port == env.service.port
        # impacket's independent ept_map agrees.
        binding = await asyncio.to_thread(
            epm.hept_map,
            env.ip,
            uuidtup_to_bin((str(WITNESS_UUID), "1.1")),
            protocol="ncacn_ip_tcp",
        )
        assert binding.endswith(f"[{port}]"), binding
        # The witness client finds the port on its own.
        wc = await WitnessClient.connect(env.ip, user=USER, password=PASSWORD)
        try:
            h = await wc.register(NETNAME, env.ip, "C1")
            await wc.unregister(h)
        finally:
            wc.close()


def _impacket_share_names(ip: str, port: int, level: int | None) -> list[str]:
    t = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:{ip}[{port}]")
    if level is not None:
        t.set_credentials(USER, PASSWORD, "", "", "")
    dce = t.get_dce_rpc()
    if level is not None:
        dce.set_auth_level(level)
    dce.connect()
    try:
        dce.bind(srvs.MSRPC_UUID_SRVS)
        resp = srvs.hNetrShareEnum(dce, 2)
        names = [
            e["shi2_netname"][:-1] for e in resp["InfoStruct"]["ShareInfo"]["Level2"]["Buffer"]
        ]
        info = srvs.hNetrServerGetInfo(dce, 102)
        assert info["InfoStruct"]["ServerInfo102"]["sv102_name"][:-1] == NETNAME
        return names
    finally:
        dce.disconnect()


@pytest.mark.parametrize(
    "level", [None, RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, RPC_C_AUTHN_LEVEL_PKT_PRIVACY]
)
async def test_srvsvc_over_tcp_with_impacket(level: int | None) -> None:
    ip = free_loopback_address()
    svc = WitnessService(
        WitnessConfig(
            listen=f"{ip}:0",
            endpoint_mapper_port=0,
            interfaces=[WitnessInterfaceConfig(NETNAME, ipv4=ip)],
        ),
        {USER: PASSWORD},
        NETNAME,
        extra_interfaces=[SrvsvcInterface(NETNAME, lambda: SHARES)],
    )
    await svc.start()
    try:
        # Several sequential calls on one association; large enough (level 2 with
        # 40 shares) to need several response fragments.
        SHARES.extend(ShareInfo(f"share{i:02d}", 0, "x" * 60, f"C:\\s{i}") for i in range(40))
        names = await asyncio.to_thread(_impacket_share_names, ip, svc.port, level)
        assert names[0] == "data" and "IPC$" in names and len(names) == 42
    finally:
        del SHARES[1:]
        await svc.stop()


async def test_rpcclient_lists_shares_through_the_endpoint_mapper() -> None:
    ip = free_loopback_address()
    svc = WitnessService(
        WitnessConfig(
            listen=f"{ip}:0",
            endpoint_mapper_port=135,
            interfaces=[WitnessInterfaceConfig(NETNAME, ipv4=ip)],
        ),
        {USER: PASSWORD},
        NETNAME,
        extra_interfaces=[SrvsvcInterface(NETNAME, lambda: SHARES)],
    )
    await svc.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            "rpcclient",
            f"ncacn_ip_tcp:{ip}",
            "-U",
            f"{USER}%{PASSWORD}",
            "-c",
            "netshareenumall 2; srvinfo",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out = (await asyncio.wait_for(proc.communicate(), 60))[0].decode()
        assert proc.returncode == 0, out
        assert "netname: data" in out and "C:\\data" in out and "netname: IPC$" in out
        assert NETNAME in out and "platform_id     :\t500" in out
    finally:
        await svc.stop()
