"""Interface-list changes become the right witness notifications."""

from __future__ import annotations

import asyncio

from hasmb.witness.config import WitnessConfig, WitnessInterfaceConfig
from hasmb.witness.events import diff_interfaces
from hasmb.witness.messages import (
    CLIENT_MOVE_NOTIFICATION,
    IP_CHANGE_NOTIFICATION,
    REGISTER_IP_NOTIFICATION,
    RESOURCE_CHANGE_NOTIFICATION,
    WITNESS_V1,
    WITNESS_V2,
    parse_ip_lists,
    parse_resource_changes,
)
from hasmb.witness.service import WitnessService


def lif(ip: str, node: str, state: str = "available") -> WitnessInterfaceConfig:
    return WitnessInterfaceConfig("SVM1", ipv4=ip, node=node, state=state)


def test_diff() -> None:
    old = [lif("10.0.0.1", "a"), lif("10.0.0.2", "b"), lif("10.0.0.3", "a")]
    new = [lif("10.0.0.1", "a", "unavailable"), lif("10.0.0.2", "a"), lif("10.0.0.4", "b")]
    d = diff_interfaces(old, new)
    assert d.state_changes == [("10.0.0.1", False)]
    assert d.moved == ["10.0.0.2"]
    assert d.ip_changes == {"10.0.0.1": False, "10.0.0.4": True, "10.0.0.3": False}
    assert not diff_interfaces(old, list(old))


async def test_update_interfaces_notifies_registered_clients() -> None:
    old = [lif("10.0.0.1", "a"), lif("10.0.0.2", "b")]
    svc = WitnessService(WitnessConfig(listen="10.0.0.9:0", interfaces=old), {}, "SVM1")
    reg = svc.registry
    on1 = reg.register(WITNESS_V1, "SVM1", "10.0.0.1", "c1")
    on2 = reg.register(WITNESS_V1, "SVM1", "10.0.0.2", "c2")
    ipc = reg.register(
        WITNESS_V2, "SVM1", "10.0.0.2", "c3", ex=True, flags=REGISTER_IP_NOTIFICATION
    )
    # Takeover of node a: 10.0.0.1 fails over; planned migration of 10.0.0.2 to a.
    count = svc.update_interfaces([lif("10.0.0.1", "b", "unavailable"), lif("10.0.0.2", "a")])
    n1 = await asyncio.wait_for(reg.wait(on1.key), 1)
    assert n1.message_type == RESOURCE_CHANGE_NOTIFICATION
    assert parse_resource_changes(n1.buffer, 1)[0].name == "10.0.0.1"
    n2 = await asyncio.wait_for(reg.wait(on2.key), 1)
    assert n2.message_type == CLIENT_MOVE_NOTIFICATION
    assert parse_ip_lists(n2.buffer, 1)[0][0].address == "10.0.0.2"
    n3 = await asyncio.wait_for(reg.wait(ipc.key), 1)  # also registered on 10.0.0.2
    assert n3.message_type == CLIENT_MOVE_NOTIFICATION
    n3b = await asyncio.wait_for(reg.wait(ipc.key), 1)
    assert n3b.message_type == IP_CHANGE_NOTIFICATION
    assert [(a.address, a.online) for a in parse_ip_lists(n3b.buffer, 1)[0]] == [
        ("10.0.0.1", False)
    ]
    assert count == 4
    assert [i.state for i in svc.interfaces()] == ["unavailable", "available"]


def test_witness_for_smbd_from_the_smbd_config() -> None:
    from hasmb.smb.config import ShareConfig, SmbdConfig
    from hasmb.smb.config import WitnessConfig as SmbWitnessConfig
    from hasmb.witness.messages import IF_WITNESS  # noqa: F401 - documents the flag at stake
    from hasmb.witness.smbd import witness_for_smbd

    cfg = SmbdConfig(
        netname="SVM7",
        listen="127.0.0.5:4450",
        shares=[ShareConfig("Data", "/tmp/x", continuously_available=True)],
    )
    assert witness_for_smbd(cfg, {"u": "p"}) is None  # off unless asked for
    svc = witness_for_smbd(cfg, {"u": "p"}, witness_listen="127.0.0.5:0")
    assert svc is not None and svc.netname == "SVM7"
    (iface,) = svc.interfaces()
    assert iface.ipv4 == "127.0.0.5" and svc.is_local(iface)
    assert svc.registry.register(WITNESS_V2, "SVM7", "127.0.0.5", "c", ex=True, share_name="DATA")
    cfg.witness = SmbWitnessConfig(listen="0.0.0.0:5050", endpoint_mapper_port=0)
    svc = witness_for_smbd(cfg, {})
    assert svc is not None and svc.config.port == 5050 and svc.config.endpoint_mapper_port == 0
