"""hasmb-smbd starts its witness (--witness-listen / config witness:): CA shares then
advertise SMB2_SHARE_CAP_CLUSTER, and Samba's rpcclient runs GetInterfaceList and
Register against the witness the server started (endpoint mapper on port 135 of
the server's own 127.x address, as rpcclient insists)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path

import yaml
from smbprotocol.connection import Connection, Dialects
from smbprotocol.session import Session
from smbprotocol.tree import SMB2TreeConnectRequest, SMB2TreeConnectResponse

from tests.support.net import free_port
from tests.support.smbd import PASSWORD, USER, SmbdProcess, start_smbd
from tests.support.witness_server import Rpcclient, free_loopback_address

CAP_CA = 0x10
CAP_CLUSTER = 0x40


def share_caps(host: str, port: int, share: str) -> int:
    """Capabilities of a TREE_CONNECT response (smbprotocol keeps only some flags)."""
    conn = Connection(uuid.uuid4(), host, port)
    conn.connect(Dialects.SMB_3_1_1)
    try:
        session = Session(conn, USER, PASSWORD)
        session.connect()
        req = SMB2TreeConnectRequest()
        req["buffer"] = rf"\\{host}\{share}".encode("utf-16-le")
        sent = conn.send(req, sid=session.session_id)
        resp = conn.receive(sent)
        tree = SMB2TreeConnectResponse()
        tree.unpack(resp["data"].get_value())
        return int(tree["capabilities"].get_value())
    finally:
        conn.disconnect()


def start_with_witness(tmp: Path) -> tuple[SmbdProcess, str, str]:
    for _ in range(5):
        ip = free_loopback_address()
        partner = ip.rsplit(".", 1)[0] + "." + str(int(ip.rsplit(".", 1)[1]) + 1)
        config = tmp / f"smbd-{ip}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "netname": "SVM1",
                    "witness": {
                        "endpointMapperPort": 135,
                        "interfaces": [
                            {"name": "SVM1", "ipv4": ip, "node": "node-a"},
                            {"name": "SVM1", "ipv4": partner, "node": "node-b"},
                            # a LIF the operator has no IP for yet is left out, not fatal
                            {"name": "SVM1", "ipv4": "", "node": "node-b"},
                        ],
                    },
                }
            )
        )
        smbd = start_smbd(
            tmp / ip,
            {"ca": ":ca", "plain": ""},
            extra=[
                "--config",
                str(config),
                "--netname",
                "SVM1",
                "--listen",
                f"{ip}:{free_port(ip)}",
                "--witness-listen",
                f"{ip}:0",
            ],
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and smbd.alive():
            if re.search(r"witness for SVM1 on [\d.]+:\d+ \(endpoint mapper 135\)", smbd.log()):
                return smbd, ip, partner
            time.sleep(0.05)
        smbd.stop()
    raise AssertionError("hasmb-smbd with a witness did not start")


async def test_smbd_witness_cluster_cap_and_rpcclient(tmp_path: Path) -> None:
    smbd, ip, partner = start_with_witness(tmp_path)
    try:
        caps = await asyncio.to_thread(share_caps, ip, smbd.port, "ca")
        assert caps & CAP_CA and caps & CAP_CLUSTER, hex(caps)
        plain = await asyncio.to_thread(share_caps, ip, smbd.port, "plain")
        assert not plain & (CAP_CA | CAP_CLUSTER), hex(plain)

        rc = await Rpcclient.start(ip, "sign")
        try:
            rc.send("GetInterfaceList")
            await rc.expect(f"SVM1 {ip}")
            await rc.expect(f"SVM1 {partner}")
            rc.send(f"Register --V1 --net=SVM1 --ip={partner} --client=HOSTX")
            line = await rc.expect(":")
            while not re.match(r"^\d+:[0-9a-f-]{36}$", line.strip()):
                line = await rc.expect(":")
            handle = line.strip()
            rc.send(f"UnRegister {handle}")
            await asyncio.sleep(0)
        finally:
            await rc.close()
        assert not any("WERR" in ln or "NT_STATUS" in ln for ln in rc.lines), rc.lines
    finally:
        assert smbd.stop() == 0, smbd.log()


async def test_no_cluster_cap_without_witness(tmp_path: Path) -> None:
    smbd = start_smbd(tmp_path / "nowitness", {"ca": ":ca"})
    try:
        caps = await asyncio.to_thread(share_caps, "127.0.0.1", smbd.port, "ca")
        assert caps & CAP_CA and not caps & CAP_CLUSTER, hex(caps)
        assert "witness for" not in smbd.log()
    finally:
        smbd.stop()
